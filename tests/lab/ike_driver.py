"""A small UDP driver for our sans-I/O IKE engine, for interop tests against strongSwan.

    ip netns exec NS python -m tests.lab.ike_driver --spec FILE.json

Binds UDP 500 and 4500 on the spec's local address (4500 carries the non-ESP marker;
keepalives and ESP are ignored), runs one IkeSession as initiator or answers through a
Dispatcher as responder, and prints every event as one JSON line on stdout. Commands on
stdin, one per line: ``rekey_child``, ``rekey_ike``, ``delete``, ``delete_child``.
SIGTERM deletes established IKE SAs (DELETE to the peer), then exits. Datagram traces go
to stderr. See tests/lab/ike_spec.py for the spec.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import Counter, deque
from typing import Any

from ike.codec import decode_header
from ike.constants import ExchangeType
from ike.dispatcher import Dispatcher
from ike.errors import DecodeError
from ike.session import IkeSession, SessionConfig
from ike.session.session import Datagram, State

from .ike_spec import event_json, load_spec, session_config

IKE_PORT, NAT_T_PORT = 500, 4500
NON_ESP_MARKER = bytes(4)
STOP_GRACE = 3.0  # seconds to wait for DELETE answers after SIGTERM


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def trace(direction: str, port: int, addr: tuple[str, int], data: bytes) -> None:
    try:
        h = decode_header(data)
        known = {e.value: e.name for e in ExchangeType}
        name = known.get(h.exchange, str(h.exchange))
        what = f"{name} mid={h.message_id} flags={h.flags:#x} {h.spi_i.hex()}_i {h.spi_r.hex()}_r"
    except DecodeError:
        what = "undecodable"
    peer = f"{addr[0]}:{addr[1]}"
    print(f"{time.time():.3f} {direction} :{port} {peer} {len(data)}B {what}", file=sys.stderr)


class Driver:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.config: SessionConfig = session_config(spec)
        self.local_ip: str = spec["local_addr"]
        self.socks: dict[int, socket.socket] = {}
        family = socket.AF_INET6 if ":" in self.local_ip else socket.AF_INET
        for port in (IKE_PORT, NAT_T_PORT):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((self.local_ip, port))
            s.setblocking(False)
            self.socks[port] = s
        opts = {"cookie_threshold": spec["cookie_threshold"]} if "cookie_threshold" in spec else {}
        self.dispatcher = Dispatcher(self._new_responder, **opts)
        # Test knob: hold every received IKE message this long (forces crossed exchanges).
        self.inbound_delay = float(spec.get("inbound_delay", 0))
        # Test knob: lose the n-th IKE message received / sent (1-based), to force retransmits.
        self.drop = {"<-": set(spec.get("drop_in", [])), "->": set(spec.get("drop_out", []))}
        self.counts = {"<-": 0, "->": 0}
        self.held: deque[tuple[float, int, bytes, tuple[str, int]]] = deque()
        self.rx_port = IKE_PORT  # the port of the datagram being dispatched
        self.sessions: dict[IkeSession, int] = {}  # live sessions -> their number
        self.numbered = 0
        self.drops: Counter[str] = Counter()  # what closed sessions dropped, for the report
        self.stopping: float | None = None

    # -------------------------------------------------------------- sessions

    def _track(self, s: IkeSession) -> None:
        if s not in self.sessions:
            self.numbered += 1
            self.sessions[s] = self.numbered

    def _new_responder(
        self, remote: tuple[str, int], _local: tuple[str, int], now: float
    ) -> IkeSession | None:
        if self.stopping is not None:
            return None
        s = IkeSession(
            self.config,
            initiator=False,
            # The Dispatcher does not know our port: answer from the one the request came to.
            local_addr=(self.local_ip, self.rx_port),
            remote_addr=remote,
            now=now,
        )
        self._track(s)
        return s

    def initiate(self, now: float) -> None:
        s = IkeSession(
            self.config,
            initiator=True,
            local_addr=(self.local_ip, IKE_PORT),
            remote_addr=(self.spec["remote_addr"], IKE_PORT),
            now=now,
        )
        self._track(s)
        s.initiate(now)
        self.dispatcher.after(s)

    def current(self) -> IkeSession | None:
        """The newest established session: the one commands act on."""
        up = [s for s in self.sessions if s.state is State.ESTABLISHED]
        return max(up, key=lambda s: self.sessions[s]) if up else None

    # -------------------------------------------------------------- I/O

    def receive(self, port: int, now: float) -> None:
        sock = self.socks[port]
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            addr = (addr[0], addr[1])
            if port == NAT_T_PORT:
                if data == b"\xff" or not data.startswith(NON_ESP_MARKER):
                    continue  # NAT-T keepalive or ESP: not ours to handle here
                data = data[len(NON_ESP_MARKER) :]
            if self.lost("<-", port, addr, data):
                continue
            self.held.append((now + self.inbound_delay, port, data, addr))
        self.release(now)

    def release(self, now: float) -> None:
        """Hand held messages whose time has come to the dispatcher, in arrival order."""
        while self.held and self.held[0][0] <= now:
            _, self.rx_port, data, addr = self.held.popleft()
            s = self.dispatcher.receive(data, addr, now)
            if s is not None:
                self._track(s)

    def lost(self, direction: str, port: int, addr: tuple[str, int], data: bytes) -> bool:
        """Trace a message; True if the drop knob loses it."""
        self.counts[direction] += 1
        lost = self.counts[direction] in self.drop[direction]
        trace(direction + (" LOST" if lost else ""), port, addr, data)
        return lost

    def send(self, d: Datagram) -> None:
        # local_port 0 (stateless answers): the port the request came to.
        port = d.local_port if d.local_port in self.socks else self.rx_port
        if self.lost("->", port, d.remote, d.data):
            return
        data = NON_ESP_MARKER + d.data if port == NAT_T_PORT else d.data
        try:
            self.socks[port].sendto(data, d.remote)
        except OSError as e:
            print(f"send to {d.remote} failed: {e}", file=sys.stderr)

    def flush(self) -> None:
        for d in self.dispatcher.replies:
            self.send(d)
        self.dispatcher.replies = []
        for s, n in list(self.sessions.items()):
            for d in s.datagrams_to_send():
                self.send(d)
            while (e := s.next_event()) is not None:
                emit(event_json(e, n))
            if s.state is State.CLOSED:
                self.dispatcher.forget(s)
                self.drops.update(s.drops)
                del self.sessions[s]

    def timers(self, now: float) -> float:
        """Fire due timers; return the next deadline."""
        self.release(now)
        nxt = min(now + 1.0, self.held[0][0]) if self.held else now + 1.0
        for s in list(self.sessions):
            t = s.get_timer()
            if t is not None and t <= now:
                s.handle_timer(now)
                self.dispatcher.after(s)
                t = s.get_timer()
            if t is not None:
                nxt = min(nxt, t)
        return nxt

    # -------------------------------------------------------------- commands

    def command(self, line: str, now: float) -> None:
        cmd = line.strip()
        if not cmd:
            return
        s = self.current()
        ok = s is not None
        if s is not None:
            installed = [c for c in s.children.values() if c.state.value == "installed"]
            if cmd == "rekey_child" and installed:
                s.rekey_child(installed[0].child_id, now)
            elif cmd == "delete_child" and installed:
                s.delete_child(installed[0].child_id, now)
            elif cmd == "rekey_ike":
                s.rekey_ike(now)
            elif cmd == "delete":
                s.delete(now)
            else:
                ok = False
            self.dispatcher.after(s)
        emit({"type": "Command", "command": cmd, "ok": ok})

    def stop(self, now: float) -> None:
        self.stopping = now
        for s in list(self.sessions):
            s.delete(now, reason="driver stopped")
            self.dispatcher.after(s)

    # -------------------------------------------------------------- loop

    def run(self) -> int:
        sel = selectors.DefaultSelector()
        for port, sock in self.socks.items():
            sel.register(sock, selectors.EVENT_READ, port)
        os.set_blocking(sys.stdin.fileno(), False)
        sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        pending_line = ""
        terminated = False

        def on_term(_sig: int, _frame: Any) -> None:
            nonlocal terminated
            terminated = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        emit({"type": "Ready", "local_addr": self.local_ip, "role": self.spec["role"]})
        if self.spec["role"] == "initiator":
            self.initiate(time.time())
            self.flush()
        nxt = time.time() + 1.0
        while True:
            now = time.time()
            if terminated and self.stopping is None:
                self.stop(now)
                self.flush()
            if self.stopping is not None and (
                not self.sessions or now > self.stopping + STOP_GRACE
            ):
                for s in self.sessions:
                    self.drops.update(s.drops)
                drops = {
                    **self.drops,
                    **{f"dispatcher_{k}": v for k, v in self.dispatcher.drops.items()},
                }
                emit({"type": "Stopped", "drops": drops})
                return 0
            for key, _ in sel.select(min(max(nxt - now, 0.0), 0.2)):
                now = time.time()
                if key.data == "stdin":
                    chunk = os.read(sys.stdin.fileno(), 4096).decode(errors="replace")
                    if not chunk:
                        sel.unregister(sys.stdin)
                        continue
                    pending_line += chunk
                    while "\n" in pending_line:
                        line, pending_line = pending_line.split("\n", 1)
                        self.command(line, now)
                else:
                    self.receive(key.data, now)
                self.flush()
            nxt = self.timers(time.time())
            self.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", required=True, help="JSON spec (see tests/lab/ike_spec.py)")
    args = parser.parse_args(argv)
    return Driver(load_spec(args.spec)).run()


if __name__ == "__main__":
    raise SystemExit(main())
