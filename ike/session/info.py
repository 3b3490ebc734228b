"""INFORMATIONAL exchanges in both roles: DELETE (Child and IKE) and liveness checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ike.constants import ExchangeType, ProtocolId
from ike.payloads import DeletePayload, Message, Payload
from ike.session import events as ev
from ike.session.session import State, Task
from ike.session.state import ChildSa, ChildState, IkeSa

if TYPE_CHECKING:
    from ike.session.session import IkeSession

MAX_DELETE_SPIS = 64  # a peer's DELETE is bounded like every other list it can send


def remove_child(s: IkeSession, child: ChildSa, reason: str) -> None:
    if s.children.pop(child.child_id, None) is not None:
        s.emit(ev.ChildSaDown(child.child_id, child.spi_in, child.spi_out, reason, child.successor))


class DeleteChildTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (delete Child SA)"

    def __init__(self, child: ChildSa, successor: int | None = None) -> None:
        self.child = child
        self.successor = successor

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload] | None:
        child = self.child
        if s.children.get(child.child_id) is not child:
            return None  # the peer deleted it meanwhile
        child.state = ChildState.DELETING
        if self.successor is not None:
            child.successor = self.successor
        return [DeletePayload(ProtocolId.ESP, [child.spi_in.to_bytes(4, "big")])]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        remove_child(s, self.child, "deleted" if self.child.successor is None else "rekeyed")


class DeleteIkeTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (delete IKE SA)"

    def __init__(self, reason: str = "deleted", quiet: bool = False) -> None:
        self.reason = reason
        self.quiet = quiet  # the failure was already reported (e.g. authentication)

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        return [DeletePayload(ProtocolId.IKE)]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        self._done(s, sa, now)

    def on_give_up(self, s: IkeSession, sa: IkeSa, now: float) -> None:
        self._done(s, sa, now)

    def _done(self, s: IkeSession, sa: IkeSa, now: float) -> None:
        if sa in s.retiring:
            s.retiring.remove(sa)
        else:
            s.close(s.close_reason or self.reason, now)


class DpdTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (liveness)"

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        return []

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        """An answer is all a liveness check needs (the session noted the peer alive)."""


def respond(s: IkeSession, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
    deletes = msg.all(DeletePayload)
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        if sa is not s.sa:
            s.post_response.append(lambda _now: s.retiring.remove(sa) if sa in s.retiring else None)
        else:
            s.post_response.append(lambda at: s.close("deleted by peer", at))
        return []
    ours: list[bytes] = []
    for d in deletes:
        if d.protocol != ProtocolId.ESP:
            continue
        for spi in d.spis[:MAX_DELETE_SPIS]:
            child = s.child_by_spi_out(int.from_bytes(spi, "big"))
            if child is None:
                continue
            if child.state is not ChildState.DELETING:
                # Both sides deleting at once: answer without it (RFC 7296 §1.4.1).
                ours.append(child.spi_in.to_bytes(4, "big"))
            remove_child(
                s, child, "deleted by peer" if child.successor is None else "rekeyed by peer"
            )
    return [DeletePayload(ProtocolId.ESP, ours)] if ours else []


def after_response(s: IkeSession, sa: IkeSa, now: float) -> None:
    """Actions that must wait until the response is on its way (close, SA switch)."""
    actions, s.post_response = s.post_response, []
    for action in actions:
        action(now)
    if s.state is State.CLOSED:
        return
