"""Interoperability with scapy's independent ESP (scapy.layers.ipsec), tunnel mode.

Both directions for every cipher suite, ESN on and off, IPv4 and IPv6 inside and outside;
plus byte-exact equality of whole packets when both sides use the same IV.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

scapy_ipsec = pytest.importorskip("scapy.layers.ipsec")

from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

from esp.sa import DropReason, EspDrop, EspParams, InboundSa, OutboundSa  # noqa: E402
from tests.esp.packets import SUITES, make_params  # noqa: E402

ESP = scapy_ipsec.ESP
SecurityAssociation = scapy_ipsec.SecurityAssociation

# our suite -> scapy's (crypt_algo, auth_algo)
SCAPY_ALGOS = {
    "aes128gcm16": ("AES-GCM", "NULL"),
    "aes256gcm16": ("AES-GCM", "NULL"),
    "chacha20poly1305": ("CHACHA20-POLY1305", "NULL"),
    "aes128-sha1": ("AES-CBC", "HMAC-SHA1-96"),
    "aes128-sha256": ("AES-CBC", "SHA2-256-128"),
    "aes256-sha384": ("AES-CBC", "SHA2-384-192"),
    "aes256-sha512": ("AES-CBC", "SHA2-512-256"),
}
assert set(SCAPY_ALGOS) == set(SUITES)

OUTER = {
    4: lambda: IP(src="192.0.2.1", dst="198.51.100.1"),
    6: lambda: IPv6(src="2001:db8:ffff::1", dst="2001:db8:ffff::2"),
}


def inner_packets(family: int) -> list[tuple[Packet, int]]:
    base: Packet
    echo: Packet
    if family == 4:
        base, nh, echo = IP(src="10.1.0.5", dst="10.2.0.7"), 4, ICMP()
    else:
        base, nh, echo = IPv6(src="2001:db8:1::5", dst="2001:db8:2::7"), 41, ICMPv6EchoRequest()
    return [
        (base / UDP(sport=1111, dport=2222) / Raw(b"x" * 1), nh),
        (base / TCP(sport=40000, dport=443) / Raw(bytes(range(256)) * 5), nh),
        (base / echo / Raw(b"ping"), nh),
    ]


def seq_for(esn: bool) -> int:
    return (1 << 32) | 5 if esn else 7  # ESN: high half in use


def scapy_sa(suite: str, params: EspParams, outer: int, seq: int) -> Any:
    crypt, auth = SCAPY_ALGOS[suite]
    return SecurityAssociation(
        ESP,
        spi=params.spi,
        seq_num=seq & 0xFFFFFFFF,
        crypt_algo=crypt,
        crypt_key=params.encr_key,  # for AEAD: key | salt, as scapy splits it
        auth_algo=auth,
        auth_key=params.integ_key or None,
        tunnel_header=OUTER[outer](),
        esn_en=params.esn,
        esn=seq >> 32,
    )


def on_the_wire(esp_bytes: bytes, outer: int) -> Packet:
    """Outer header | ESP, re-dissected so that scapy sees an ESP layer."""
    header = OUTER[outer]()
    if outer == 4:
        header.proto = 50
    else:
        header.nh = 50
    return header.__class__(raw(header / Raw(esp_bytes)))


MATRIX = pytest.mark.parametrize(
    ("suite", "esn", "inner", "outer"),
    [
        (suite, esn, inner, outer)
        for suite in SUITES
        for esn in (False, True)
        for inner, outer in ((4, 4), (6, 6), (4, 6), (6, 4))
    ],
)


@MATRIX
def test_scapy_encrypts_we_decrypt(suite: str, esn: bool, inner: int, outer: int) -> None:
    params = make_params(suite, esn=esn)
    seq = seq_for(esn)
    theirs = scapy_sa(suite, params, outer, seq)
    ours = InboundSa(params)
    ours.replay.update(seq - 1)
    for i, (packet, nh) in enumerate(inner_packets(inner)):
        wire = theirs.encrypt(packet)
        assert wire[ESP].spi == params.spi
        assert ours.open(raw(wire[ESP])) == (nh, raw(packet))
        assert ours.replay.top == seq + i
    assert ours.packets == 3


@MATRIX
def test_we_encrypt_scapy_decrypts(suite: str, esn: bool, inner: int, outer: int) -> None:
    params = make_params(suite, esn=esn)
    seq = seq_for(esn)
    theirs = scapy_sa(suite, params, outer, seq)
    ours = OutboundSa(params, last_seq=seq - 1)
    for packet, nh in inner_packets(inner):
        esp_bytes = ours.seal(raw(packet), nh)
        decrypted = theirs.decrypt(on_the_wire(esp_bytes, outer))
        assert raw(decrypted) == raw(packet)


def cbc_iv(seq: int) -> bytes:
    return struct.pack("!QQ", 0xA5A5A5A5, seq)


@pytest.mark.parametrize("esn", [False, True])
@pytest.mark.parametrize("suite", list(SUITES))
def test_same_iv_gives_the_same_packet(suite: str, esn: bool) -> None:
    params = make_params(suite, esn=esn)
    seq = seq_for(esn)
    # For AEAD our default IV is the sequence number; CBC needs iv_source to pin it.
    ours = OutboundSa(params, last_seq=seq - 1, iv_source=None if params.is_aead else cbc_iv)
    theirs = scapy_sa(suite, params, 4, seq)
    for i, (packet, nh) in enumerate(inner_packets(4)):
        iv = struct.pack("!Q", seq + i) if params.is_aead else cbc_iv(seq + i)
        wire = theirs.encrypt(packet, iv=iv)
        assert ours.seal(raw(packet), nh) == raw(wire[ESP])
    assert ours.seq == seq + 2


def test_scapy_bad_icv_is_dropped() -> None:
    params = make_params("aes128-sha256")
    theirs = scapy_sa("aes128-sha256", params, 4, 1)
    wire = bytearray(raw(theirs.encrypt(IP(src="10.1.0.5", dst="10.2.0.7") / UDP())[ESP]))
    wire[-1] ^= 1
    ours = InboundSa(params)
    with pytest.raises(EspDrop) as info:
        ours.open(bytes(wire))
    assert info.value.reason is DropReason.BAD_ICV


@pytest.mark.parametrize("suite", ["aes256gcm16", "chacha20poly1305", "aes256-sha512"])
def test_esn_rollover_both_ways(suite: str) -> None:
    # Sequence numbers 2^32 - 2 .. 2^32 + 1: the low half wraps while the high half grows.
    params = make_params(suite, esn=True)
    start = 2**32 - 2
    packet = IP(src="10.1.0.5", dst="10.2.0.7") / UDP(sport=1, dport=2) / Raw(b"esn")
    ours_out = OutboundSa(params, last_seq=start - 1)
    ours_in = InboundSa(params)
    ours_in.replay.update(start - 1)
    for seq in range(start, start + 4):
        theirs = scapy_sa(suite, params, 4, seq)  # scapy takes the high half per SA
        wire = theirs.encrypt(packet, seq_num=seq & 0xFFFFFFFF, esn_en=True, esn=seq >> 32)
        assert ours_in.open(raw(wire[ESP])) == (4, raw(packet))
        esp_bytes = ours_out.seal(raw(packet), 4)
        assert struct.unpack_from("!I", esp_bytes, 4)[0] == seq & 0xFFFFFFFF
        assert raw(theirs.decrypt(on_the_wire(esp_bytes, 4))) == raw(packet)
    assert ours_in.replay.top == start + 3
