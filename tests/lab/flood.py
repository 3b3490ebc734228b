"""Hostile traffic for robustness tests: captured IPsec packets, their mutations, a sender.

The plan (which datagrams, from which source, to which port) is built in the test process
with a seeded ``random.Random``; ``send_plan`` (or ``python -m tests.lab.flood PLAN``
inside a namespace) only sends it. Sources may be spoofed (raw IPv4 with our own
header), e.g. as the live peer, so the gateway sees packets that look like its peer's.

Kinds of shots: ``udp`` (to an IKE or NAT-T port; ``spoof`` = (src, sport) or None for
an ordinary socket) and ``esp`` (IP protocol 50).
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IPPROTO_ESP = 50
NON_ESP_MARKER = b"\0\0\0\0"
IKE_HEADER_LEN = 28
MAX_UDP_PAYLOAD = 65507  # 65535 - IPv4 header - UDP header


# -- captured packets -----------------------------------------------------------------


@dataclass(frozen=True)
class WirePacket:
    """One IPv4 packet of a capture: UDP payload, or the ESP packet from its SPI on."""

    src: str
    dst: str
    proto: int  # 17 (UDP) or 50 (ESP)
    sport: int
    dport: int
    payload: bytes

    @property
    def kind(self) -> str:
        """One of: ike, esp (protocol 50), esp-udp, keepalive, other."""
        if self.proto == IPPROTO_ESP:
            return "esp"
        if self.proto != 17:
            return "other"
        if 500 in (self.sport, self.dport):
            return "ike"
        if 4500 in (self.sport, self.dport):
            if self.payload[:4] == NON_ESP_MARKER:
                return "ike"
            return "keepalive" if self.payload == b"\xff" else "esp-udp"
        return "other"

    @property
    def ike(self) -> bytes:
        """The IKE message (without the non-ESP marker)."""
        return self.payload[4:] if self.dport == 4500 or self.sport == 4500 else self.payload


def read_ipsec(path: str | Path) -> list[WirePacket]:
    """IPv4 UDP and ESP packets of a pcap (first fragments only), in capture order."""
    from scapy.layers.inet import IP, UDP
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(path)):
        ip = pkt.getlayer(IP)
        if ip is None or ip.frag != 0:
            continue
        if ip.proto == IPPROTO_ESP:
            out.append(WirePacket(ip.src, ip.dst, IPPROTO_ESP, 0, 0, bytes(ip.payload)))
        elif ip.proto == 17 and (udp := ip.getlayer(UDP)) is not None:
            out.append(WirePacket(ip.src, ip.dst, 17, udp.sport, udp.dport, bytes(udp.payload)))
    return out


# -- mutations ------------------------------------------------------------------------


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random damage: bit flips, overwritten bytes, truncation, growth, splices."""
    b = bytearray(data)
    how = rng.randrange(7)
    if how == 0 and b:  # a few flipped bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif how == 1 and b:  # overwritten bytes, often with boundary values
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    elif how == 2:  # truncated
        del b[rng.randrange(len(b) + 1) :]
    elif how == 3:  # random tail
        b += rng.randbytes(rng.randint(1, 256))
    elif how == 4 and b:  # a chunk duplicated in place
        i = rng.randrange(len(b))
        b[i:i] = b[i : i + rng.randint(1, 64)]
    elif how == 5 and b:  # a chunk zeroed
        i = rng.randrange(len(b))
        n = rng.randint(1, 32)
        b[i : i + n] = bytes(len(b[i : i + n]))
    else:  # last bytes (the ICV / integrity checksum) replaced
        n = min(len(b), 16)
        b[len(b) - n :] = rng.randbytes(n)
    return bytes(b)


def mutate_ike(rng: random.Random, msg: bytes) -> bytes:
    """A damaged IKE message: header fields (lengths, versions, exchange, flags, message
    ID, next payload), the first payload's length, or a generic ``mutate``."""
    if len(msg) < IKE_HEADER_LEN or rng.random() < 0.3:
        return mutate(rng, msg)
    b = bytearray(msg)
    field = rng.randrange(7)
    if field == 0:  # total length: 0, short, long, huge
        length = rng.choice((0, 1, IKE_HEADER_LEN - 1, len(b) - 1, len(b) + 1, 0xFFFFFFFF))
        b[24:28] = struct.pack("!I", length)
    elif field == 1:  # version
        b[17] = rng.choice((0x00, 0x10, 0x21, 0x30, 0xFF))
    elif field == 2:  # exchange type
        b[18] = rng.choice((0, 33, 38, 40, 43, 255, rng.randrange(256)))
    elif field == 3:  # flags (initiator / response / reserved bits)
        b[19] ^= rng.choice((0x08, 0x20, 0x10, 0xFF))
    elif field == 4:  # message ID
        b[20:24] = struct.pack("!I", rng.choice((0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF)))
    elif field == 5:  # next payload
        b[16] = rng.choice((0, 1, 33, 46, 53, 255, rng.randrange(256)))
    elif len(b) >= IKE_HEADER_LEN + 4:  # first payload's length
        b[IKE_HEADER_LEN + 2 : IKE_HEADER_LEN + 4] = struct.pack(
            "!H", rng.choice((0, 1, 3, 4, 0xFFFF, rng.randrange(0x10000)))
        )
    return bytes(b)


def forged_esp(rng: random.Random, spi: int, *, seq: int | None = None) -> bytes:
    """A well-formed ESP packet for ``spi`` that cannot authenticate: SPI, sequence
    number, an 8-byte IV, ciphertext of 4..1400 bytes (a multiple of 4), a random ICV."""
    seq = rng.randint(1 << 20, (1 << 32) - 1) if seq is None else seq
    body = rng.randbytes(8 + 4 * rng.randint(1, 350) + 16)
    return struct.pack("!II", spi, seq) + body


def forged_ike(rng: random.Random, spi_i: bytes, spi_r: bytes) -> bytes:
    """An INFORMATIONAL / CREATE_CHILD_SA message with the live IKE SPIs and an SK
    payload of random bytes: well-formed, but its integrity check must fail."""
    sk_body = rng.randbytes(rng.randint(32, 512))
    exchange = rng.choice((36, 37))
    flags = rng.choice((0x00, 0x08, 0x20, 0x28))
    msg_id = rng.randint(2, 1 << 31)
    length = IKE_HEADER_LEN + 4 + len(sk_body)
    header = spi_i + spi_r + struct.pack("!BBBBII", 46, 0x20, exchange, flags, msg_id, length)
    return header + struct.pack("!BBH", 0, 0, 4 + len(sk_body)) + sk_body


# -- the plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One datagram: ``proto`` "udp" or "esp"; ``spoof`` (src address, src port) or None."""

    tag: str  # what it is, for counting: "ike-random", "esp-forged", ...
    proto: str
    dst: str
    payload: bytes
    dport: int = 0
    spoof: tuple[str, int] | None = None


@dataclass(frozen=True)
class Target:
    """The gateway under attack and the live state an attacker would imitate."""

    address: str  # the gateway's public address
    peer: str  # its peer's address, used as a spoofed source
    esp_spi: int  # a live inbound ESP SPI of the gateway
    ike_spis: tuple[bytes, bytes]  # the live IKE SA (spi_i, spi_r)
    ike_port: int = 500
    nat_t_port: int = 4500


def hostile_plan(
    rng: random.Random, t: Target, captured: Sequence[WirePacket], scale: int = 1
) -> list[Shot]:
    """A shuffled mix of about ``scale`` x 5600 datagrams. Tags (what the gateway must do):

    * ``ike-random`` / ``nat-t-ike-random``: random bytes to the IKE port / to the NAT-T
      port after the non-ESP marker; ``ike-forged``: the live IKE SPIs and an SK payload
      of random bytes. IKE must drop them all (``ike_drops``).
    * ``esp-random`` / ``nat-t-esp-random``: random bytes as ESP (protocol 50 / NAT-T port
      without marker); ``esp-forged`` / ``nat-t-esp-forged``: the live SPI, a fresh
      sequence number and a wrong ICV. The data path must drop them all.
    * ``ike-mutated`` / ``esp-mutated``: damaged copies of captured packets, spoofed as
      from the peer; ``esp-replayed``: exact copies of captured ESP.
    * ``truncated``, ``oversized``: from 0 bytes up to the largest UDP/IP datagram.
    """
    a, peer, ike_port, nat_t = t.address, t.peer, t.ike_port, t.nat_t_port
    spi = struct.pack("!I", t.esp_spi)
    ike = [p for p in captured if p.kind == "ike"]
    esp = [p for p in captured if p.kind in ("esp", "esp-udp")]

    def rnd(lo: int, hi: int) -> bytes:
        return rng.randbytes(rng.randint(lo, hi))

    def esp_body() -> bytes:  # 8+ bytes whose first four (the SPI) are not zero
        return b"\x01" + rnd(7, 1500)

    def ike_source() -> tuple[str, int] | None:
        return rng.choice(((peer, ike_port), (peer, nat_t), None))

    def source(p: WirePacket) -> str:
        # The gateway's own packets come back "from the peer": the kernel would drop a
        # packet from outside that carries one of its own addresses as the source.
        return peer if p.src == a else p.src

    def mutated_ike() -> Shot:
        p = rng.choice(ike)
        port = nat_t if 4500 in (p.sport, p.dport) else ike_port
        data = mutate_ike(rng, p.ike)
        data = NON_ESP_MARKER + data if port == nat_t else data
        return Shot("ike-mutated", "udp", a, data, port, (source(p), p.sport))

    def captured_esp(tag: str, damage: bool) -> Shot:
        p = rng.choice(esp)
        data = mutate(rng, p.payload) if damage else p.payload
        if p.kind == "esp":
            return Shot(tag, "esp", a, data, 0, (source(p), 0))
        return Shot(tag, "udp", a, data, nat_t, (source(p), p.sport))

    def truncated() -> Shot:
        kind = rng.randrange(3)
        if kind == 0:
            return Shot("truncated", "udp", a, rnd(0, IKE_HEADER_LEN - 1), ike_port)
        if kind == 1:
            data = spi[: rng.randint(0, 4)] + rnd(0, 3)
            return Shot("truncated", "esp", a, data, 0, (peer, 0))
        data = rng.choice((b"", NON_ESP_MARKER, spi)) + rnd(0, 3)
        return Shot("truncated", "udp", a, data, nat_t, (peer, nat_t))

    def oversized() -> Shot:
        n = rng.choice((1500, 4096, 9000, 30000, MAX_UDP_PAYLOAD - 4))
        kind = rng.randrange(3)
        if kind == 0:
            return Shot("oversized", "udp", a, rnd(n, n), ike_port)
        if kind == 1:
            return Shot("oversized", "udp", a, NON_ESP_MARKER + rnd(n, n), nat_t)
        return Shot("oversized", "esp", a, spi + rnd(n, n))

    makers: list[tuple[int, Callable[[], Shot]]] = [
        (800, lambda: Shot("ike-random", "udp", a, rnd(0, 2000), ike_port, ike_source())),
        (600, lambda: Shot("nat-t-ike-random", "udp", a, NON_ESP_MARKER + rnd(0, 2000), nat_t,
                           ike_source())),
        (400, lambda: Shot("ike-forged", "udp", a, forged_ike(rng, *t.ike_spis), ike_port,
                           (peer, ike_port))),
        (600, lambda: Shot("esp-random", "esp", a, esp_body(), 0, rng.choice((None, (peer, 0))))),
        (600, lambda: Shot("nat-t-esp-random", "udp", a, esp_body(), nat_t,
                           rng.choice(((peer, nat_t), None)))),
        (800, lambda: Shot("esp-forged", "esp", a, forged_esp(rng, t.esp_spi), 0,
                           rng.choice((None, (peer, 0))))),
        (300, lambda: Shot("nat-t-esp-forged", "udp", a, forged_esp(rng, t.esp_spi), nat_t,
                           (peer, nat_t))),
        (800 if ike else 0, mutated_ike),
        (400 if esp else 0, lambda: captured_esp("esp-mutated", True)),
        (200 if esp else 0, lambda: captured_esp("esp-replayed", False)),
        (100, truncated),
        (20, oversized),
    ]  # fmt: skip
    shots = [make() for n, make in makers for _ in range(n * scale)]
    rng.shuffle(shots)
    return shots


def summary(shots: Iterable[Shot]) -> Counter[str]:
    return Counter(s.tag for s in shots)


def dump_plan(shots: Sequence[Shot], path: Path) -> None:
    rows = [
        {
            "tag": s.tag,
            "proto": s.proto,
            "dst": s.dst,
            "dport": s.dport,
            "spoof": list(s.spoof) if s.spoof else None,
            "payload": base64.b64encode(s.payload).decode(),
        }
        for s in shots
    ]
    path.write_text(json.dumps(rows))


def load_plan(path: Path) -> list[Shot]:
    return [
        Shot(
            r["tag"],
            r["proto"],
            r["dst"],
            base64.b64decode(r["payload"]),
            r["dport"],
            (str(r["spoof"][0]), int(r["spoof"][1])) if r["spoof"] else None,
        )
        for r in json.loads(path.read_text())
    ]


# -- sending --------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packets(src: str, dst: str, proto: int, payload: bytes, mtu: int = 1500) -> list[bytes]:
    """``payload`` behind IPv4 headers of our own (so the source can be anything), in
    fragments of at most ``mtu`` bytes: a raw socket with our header never fragments."""
    ident = random.getrandbits(16)  # an IP ID, not a secret
    step = (mtu - 20) // 8 * 8
    out = []
    for off in range(0, max(len(payload), 1), step):
        chunk = payload[off : off + step]
        more = 0x2000 if off + step < len(payload) else 0
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(chunk),
            ident,
            more | off // 8,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        out.append(header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + chunk)
    return out


def udp_datagram(sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header with checksum 0 ("none", allowed over IPv4) and ``payload``."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


class Sender:
    """Sockets for every kind of shot; ``send`` never raises on a refused datagram."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.esp = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for s in (self.udp, self.esp, self.raw):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.errors: Counter[str] = Counter()

    def send(self, shot: Shot) -> bool:
        try:
            if shot.spoof is not None:
                src, sport = shot.spoof
                if shot.proto == "udp":
                    inner, proto = udp_datagram(sport, shot.dport, shot.payload), 17
                else:
                    inner, proto = shot.payload, IPPROTO_ESP
                for packet in ipv4_packets(src, shot.dst, proto, inner):
                    self.raw.sendto(packet, (shot.dst, 0))
            elif shot.proto == "udp":
                self.udp.sendto(shot.payload, (shot.dst, shot.dport))
            else:
                self.esp.sendto(shot.payload, (shot.dst, 0))
        except OSError as exc:
            self.errors[f"{shot.tag}: {exc.strerror}"] += 1
            return False
        return True

    def close(self) -> None:
        for s in (self.udp, self.esp, self.raw):
            s.close()


def send_plan(shots: Sequence[Shot], *, rate: float = 2000.0) -> dict[str, Any]:
    """Send every shot at about ``rate`` datagrams per second; a count of what went out."""
    sender = Sender()
    sent: Counter[str] = Counter()
    start = time.monotonic()
    try:
        for i, shot in enumerate(shots):
            if sender.send(shot):
                sent[shot.tag] += 1
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0.002:
                time.sleep(ahead)
    finally:
        sender.close()
    return {"sent": dict(sent), "errors": dict(sender.errors), "seconds": time.monotonic() - start}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m tests.lab.flood PLAN.json [RATE]", file=sys.stderr)
        return 2
    rate = float(args[1]) if len(args) > 1 else 2000.0
    print(json.dumps(send_plan(load_plan(Path(args[0])), rate=rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
