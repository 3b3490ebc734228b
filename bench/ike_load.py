"""IKE load generator: many simulated peers, our own engine as initiators, real sockets.

    python -m bench.ike_load SPEC.json        (inside the load namespace; see ike_scale)

SPEC: {"gateway": "172.31.0.1", "peers": [{"addr", "id", "psk"}...], "window": 64,
"ike_proposal", "esp_proposal", "gateway_id"}. A peer with "eap_password" instead of
"psk" is a remote-access client: EAP-MSCHAPv2 as its "id", a virtual IPv4 address asked
for, the gateway's certificate checked against SPEC "gateway_ca" (a PEM file). Each peer
has its own address and a socket on its port 500. Commands on stdin, one JSON line each
on stdout:
  up N      bring the next N peers up, at most ``window`` negotiating at once; answers
            {"up": N, "established": total, "failed": k, "seconds": wall time}
  status    {"established": n, "negotiating": n, "closed": n}
  quit      delete nothing, just exit (the gateway's DPD cleans up)
While idle the peers keep answering the gateway (DPD, rekeys), so they hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any

from cryptography import x509

from ike.auth.certs import TrustStore
from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposal
from ike.session import ChildConfig, IkeSession, SessionConfig
from ike.session.session import State
from ike.session.ts import any_selectors

IKE_PORT = 500
TIMER_SCAN = 0.2  # seconds between scans of every session's timer
UP_DEADLINE = 120.0  # seconds an "up" command may take; peers still negotiating then fail


class Peer:
    __slots__ = ("addr", "config", "session", "sock")

    def __init__(self, addr: str, config: SessionConfig) -> None:
        self.addr = addr
        self.config = config
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, IKE_PORT))
        self.sock.setblocking(False)
        self.session: IkeSession | None = None


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = len(spec["peers"]) + 64
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
        self.gateway = (spec["gateway"], IKE_PORT)
        self.window = int(spec.get("window", 64))
        ike = [parse_proposal(spec["ike_proposal"], ProtocolId.IKE)]
        esp = (parse_proposal(spec["esp_proposal"], ProtocolId.ESP),)
        remote_id = Identity.parse(spec["gateway_id"])
        trust = None
        if spec.get("gateway_ca"):
            with open(spec["gateway_ca"], "rb") as f:
                trust = TrustStore(x509.load_pem_x509_certificates(f.read()))
        self.peers: list[Peer] = []
        for p in spec["peers"]:
            child = ChildConfig("net", any_selectors(), any_selectors(), esp)
            creds: dict[str, Any]
            if "eap_password" in p:  # remote access: EAP, a virtual IP, a gateway certificate
                creds = {
                    "eap_identity": p["id"],
                    "eap_password": p["eap_password"],
                    "request_virtual_ip": (4,),
                    "trust": trust,
                    "remote_auth": "pubkey",
                }
            else:
                creds = {"psk": p["psk"].encode()}
            config = SessionConfig(
                name=p["id"],
                local_id=Identity.parse(p["id"]),
                remote_id=remote_id,
                ike_proposals=ike,
                children=[child],
                dpd_interval=3600.0,  # the gateway checks us; we need not check it
                **creds,
            )
            self.peers.append(Peer(p["addr"], config))
        self.selector = selectors.DefaultSelector()
        for peer in self.peers:
            self.selector.register(peer.sock, selectors.EVENT_READ, peer)
        self.next_peer = 0
        self.failed = 0

    # -- engine glue -----------------------------------------------------------------

    def _drain(self, peer: Peer) -> None:
        s = peer.session
        if s is None:
            return
        for d in s.datagrams_to_send():
            with contextlib.suppress(OSError):  # a lost send: retransmission covers it
                peer.sock.sendto(d.data, d.remote)
        while s.next_event() is not None:
            pass

    def _receive(self, peer: Peer, now: float) -> None:
        while True:
            try:
                data, addr = peer.sock.recvfrom(65535)
            except BlockingIOError:
                return
            if peer.session is not None:
                peer.session.receive_datagram(data, (addr[0], addr[1]), now)
                self._drain(peer)

    def _start(self, peer: Peer, now: float) -> None:
        s = IkeSession(
            peer.config,
            initiator=True,
            local_addr=(peer.addr, IKE_PORT),
            remote_addr=self.gateway,
            now=now,
        )
        peer.session = s
        s.initiate(now)
        self._drain(peer)

    def _timers(self, peers: list[Peer], now: float) -> None:
        for peer in peers:
            s = peer.session
            if s is not None and s.state is not State.CLOSED:
                t = s.get_timer()
                if t is not None and t <= now:
                    s.handle_timer(now)
                    self._drain(peer)

    def poll(self, timeout: float) -> None:
        now = time.time()
        for key, _ in self.selector.select(timeout):
            self._receive(key.data, now)

    # -- commands --------------------------------------------------------------------

    def up(self, count: int) -> dict[str, Any]:
        start = time.monotonic()
        todo = self.peers[self.next_peer : self.next_peer + count]
        self.next_peer += len(todo)
        pending: list[Peer] = []
        queue = list(reversed(todo))
        last_scan = 0.0
        failed = 0
        while queue or pending:
            now = time.time()
            while queue and len(pending) < self.window:
                peer = queue.pop()
                self._start(peer, now)
                pending.append(peer)
            self.poll(0.01)
            if time.monotonic() - last_scan >= TIMER_SCAN:
                last_scan = time.monotonic()
                self._timers(pending, time.time())
            still = []
            late = time.monotonic() - start > UP_DEADLINE
            for peer in pending:
                s = peer.session
                assert s is not None
                if s.state is State.ESTABLISHED and s.children:
                    continue
                # Closed, up without its Child SA (refused: no address, selectors), or
                # still negotiating after the deadline: a failure, never a hang.
                if s.state in (State.CLOSED, State.ESTABLISHED) or late:
                    failed += 1
                else:
                    still.append(peer)
            pending = still
        self.failed += failed
        return {
            "up": len(todo),
            "failed": failed,
            "established": self.established(),
            "seconds": round(time.monotonic() - start, 3),
        }

    def established(self) -> int:
        return sum(
            1 for p in self.peers if p.session is not None and p.session.state is State.ESTABLISHED
        )

    def hold(self, seconds: float) -> None:
        """Answer the gateway (DPD, rekeys) for a while."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(min(TIMER_SCAN, max(0.0, deadline - time.monotonic())))
            self._timers(self.peers[: self.next_peer], time.time())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0]) as f:
        load = Load(json.load(f))
    print(json.dumps({"ready": len(load.peers)}), flush=True)
    os.set_blocking(sys.stdin.fileno(), False)
    buffered = ""
    while True:
        load.hold(0.2)
        try:
            chunk = os.read(sys.stdin.fileno(), 4096).decode()
        except BlockingIOError:
            continue
        if not chunk:
            return 0
        buffered += chunk
        while "\n" in buffered:
            line, buffered = buffered.split("\n", 1)
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "up":
                print(json.dumps(load.up(int(arg))), flush=True)
            elif cmd == "status":
                print(json.dumps({"established": load.established()}), flush=True)
            elif cmd == "quit":
                return 0


if __name__ == "__main__":
    raise SystemExit(main())
