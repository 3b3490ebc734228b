"""The daemon's RADIUS client socket: EAP of remote-access clients relayed to a RADIUS
server (RFC 3579) with the sans-I/O ike.radius.relay doing all protocol work.

Wiring (P2sRunner, for ``auth`` with "eap-radius"):

    radius = RadiusTransport.from_config(p2s.radius, gw.service)   # reads the secret file
    radius.open()                                                  # in the running loop
    session_config.eap_backend = relay_backend                     # ike.eap.method
    # on each session event:   if isinstance(e, EapPending): radius.submit(s, e)
    # when a session closes:   radius.forget(s)
    # on shutdown:             radius.close()

An answer goes to its session with ``session.eap_answer(answer, now)``, then
``service(session)`` sends the IKE response and hands over its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatewayd.logging import get_logger
from ike.radius.client import RadiusClient
from ike.radius.relay import Outcome, RadiusEapRelay
from ike.session.events import EapPending
from ike.session.session import IkeSession, State

log = get_logger(component="radius")

RECV_BATCH = 64  # datagrams read per wake-up, so one busy server cannot starve the loop


class RadiusSetupError(Exception):
    """The RADIUS settings cannot be used (secret file, server address)."""


def read_secret(path: str | Path) -> bytes:
    """The shared secret: the file's first line, without surrounding white space."""
    try:
        lines = Path(path).read_bytes().strip().splitlines()
        secret = lines[0].strip() if lines else b""
    except OSError as e:
        raise RadiusSetupError(f"cannot read RADIUS secret file {path}: {e.strerror}") from e
    if not secret:
        raise RadiusSetupError(f"RADIUS secret file {path} is empty")
    return secret


def resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """(address family, (ip, port)) of the server; a name is resolved once, at start."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise RadiusSetupError(f"RADIUS server {host}:{port}: {e}") from e
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class RadiusTransport:
    def __init__(
        self,
        relay: RadiusEapRelay,
        service: Callable[[IkeSession], None],
        *,
        family: int = socket.AF_INET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.relay = relay
        self.service = service
        self.family = family
        self.clock = clock
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.send_errors = 0

    @classmethod
    def from_config(
        cls,
        radius: Any,  # gatewayd.config.RadiusServer
        service: Callable[[IkeSession], None],
        **kw: Any,
    ) -> RadiusTransport:
        family, server = resolve(radius.host, radius.port)
        client = RadiusClient(
            server,
            read_secret(radius.secret_file),
            timeout=radius.timeout,
            tries=radius.retries + 1,  # retries are the sends after the first
        )
        relay = RadiusEapRelay(client, radius.nas_identifier or "gatewayd")
        return cls(relay, service, family=family, **kw)

    # ------------------------------------------------------------------ lifecycle

    def open(self, sock: socket.socket | None = None) -> None:
        """Start reading (call inside the running loop). ``sock``: an unconnected UDP
        socket to use instead of a new one on an ephemeral port (tests, namespaces)."""
        if sock is None:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            # Any local address, ephemeral port: answers are matched by server address,
            # identifier and authenticators, never by where they arrive.
            sock.bind(("::" if self.family == socket.AF_INET6 else "0.0.0.0", 0))  # noqa: S104
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)
        log.info("radius_client_started", server=self.relay.server_name)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.sock is not None and self.loop is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self.sock = None

    # ------------------------------------------------------------------ sessions

    def submit(self, session: IkeSession, e: EapPending) -> None:
        """Relay a session's EAP response (its EapPending event) to the server."""
        outcome = self.relay.submit(session, e, self.clock())
        self._flush()
        if outcome is not None:
            self._deliver(outcome)
        self._arm()

    def forget(self, session: IkeSession) -> None:
        """The session closed: its request (if any) is no longer wanted."""
        self.relay.forget(session)
        self._flush()  # a queued request may have taken the freed identifier
        self._arm()

    def status(self) -> dict[str, Any]:
        c = self.relay.client
        return {
            "server": self.relay.server_name,
            "outstanding": len(c.outstanding),
            "queued": len(c.queue),
            "sent": c.sent,
            "retransmitted": c.retransmitted,
            "send_errors": self.send_errors,
            "results": dict(self.relay.results),
            "drops": dict(c.drops),
        }

    # ------------------------------------------------------------------ I/O

    def _flush(self) -> None:
        if self.sock is None:
            self.relay.datagrams_to_send()  # closed: nothing goes out, requests time out
            return
        for data in self.relay.datagrams_to_send():
            try:
                self.sock.sendto(data, self.relay.client.server)
            except OSError as exc:
                self.send_errors += 1
                log.debug("radius send failed", server=self.relay.server_name, error=str(exc))

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. an ICMP error reported on the socket
                continue
            before = sum(self.relay.drops.values())
            outcome = self.relay.receive(data, addr, self.clock())
            if outcome is not None:
                self._deliver(outcome)
            elif sum(self.relay.drops.values()) > before:
                log.debug("radius response dropped", remote=addr[0], drops=dict(self.relay.drops))
        self._flush()
        self._arm()

    def _deliver(self, outcome: Outcome) -> None:
        session = outcome.key
        if not isinstance(session, IkeSession) or session.state is State.CLOSED:
            return
        if outcome.answer.error is not None:
            remote = session.remote_addr[0]
            log.info("radius_eap_refused", remote=remote, reason=outcome.answer.error)
        try:
            session.eap_answer(outcome.answer, self.clock())
        except Exception:  # one broken session must not stop the others' answers
            log.exception("eap answer failed", remote=session.remote_addr[0])
            session.close("internal error", self.clock())
        self.service(session)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.relay.get_timer()
        if at is None or self.loop is None:
            return
        self._timer = self.loop.call_later(max(0.0, at - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for outcome in self.relay.handle_timer(self.clock()):
            self._deliver(outcome)
        self._flush()
        self._arm()
