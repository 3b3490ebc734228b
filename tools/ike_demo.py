"""Negotiate an IKE SA and a Child SA between two gatewayd IKE engines over real UDP sockets.

A step on the way to `make demo`'s full tunnel: it shows the IKE engine speaking IKEv2 on
the wire (loopback), with the algorithms and SPIs each side agreed on.
"""

from __future__ import annotations

import socket
import time

from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposal
from ike.session import ChildConfig, IkeSession, SessionConfig
from ike.session import events as ev
from ike.session.ts import any_selectors


def config(local: str, remote: str) -> SessionConfig:
    return SessionConfig(
        name="demo",
        local_id=Identity.parse(local),
        remote_id=Identity.parse(remote),
        ike_proposals=[parse_proposal("aes256gcm16-prfsha256-x25519", ProtocolId.IKE)],
        children=[
            ChildConfig(
                "net",
                any_selectors(),
                any_selectors(),
                (parse_proposal("aes256gcm16", ProtocolId.ESP),),
            )
        ],
        psk=b"demo-pre-shared-key-not-for-production",
    )


def main() -> int:
    socks = {}
    for name in ("a", "b"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        socks[name] = s
    addr = {n: s.getsockname() for n, s in socks.items()}
    now = time.time()
    a = IkeSession(
        config("127.0.0.1", "127.0.0.1"),
        initiator=True,
        local_addr=addr["a"],
        remote_addr=addr["b"],
        now=now,
    )
    b = IkeSession(
        config("127.0.0.1", "127.0.0.1"),
        initiator=False,
        local_addr=addr["b"],
        remote_addr=addr["a"],
        now=now,
    )
    a.initiate(now)
    sessions = {"a": a, "b": b}
    deadline = time.time() + 5
    while time.time() < deadline and not (a.state.value == b.state.value == "established"):
        for name, sess in sessions.items():
            for d in sess.datagrams_to_send():
                socks[name].sendto(d.data, d.remote)
                print(f"{name} -> {d.remote[1]}: {len(d.data)} bytes")
        for name, sock in socks.items():
            try:
                data, src = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sessions[name].receive_datagram(data, src, time.time())
    for name, sess in sessions.items():
        while (e := sess.next_event()) is not None:
            if isinstance(e, ev.IkeSaUp):
                print(f"{name}: IKE SA up {e.spi_i.hex()}_i {e.spi_r.hex()}_r {e.proposal}")
            elif isinstance(e, ev.ChildSaUp):
                c = e.child
                spis = f"spi_in={c.spi_in:08x} spi_out={c.spi_out:08x}"
                print(f"{name}: Child SA up {spis} {c.proposal}")
    return 0 if a.state.value == b.state.value == "established" else 1


if __name__ == "__main__":
    raise SystemExit(main())
