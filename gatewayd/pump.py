"""Draining an IKE session after anything touched it: one place, used by the daemon and
by the in-memory gateways of the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ike.session import IkeSession
from ike.session.session import Datagram

MAX_ROUNDS = 64  # event handlers may act on the session again; bounded all the same


def pump(
    s: IkeSession,
    send: Callable[[Datagram], None],
    on_event: Callable[[IkeSession, Any], None],
) -> None:
    """Send what the session has to send and hand over its events, until it is quiet."""
    for _ in range(MAX_ROUNDS):
        datagrams = s.datagrams_to_send()
        events = []
        while (e := s.next_event()) is not None:
            events.append(e)
        if not datagrams and not events:
            return
        for d in datagrams:
            send(d)
        for e in events:
            on_event(s, e)
