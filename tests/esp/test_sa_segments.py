"""OutboundSa.seal_segments: a TSO super-packet sealed in one call, as seal() would."""

from __future__ import annotations

import os
import struct

import pytest

from esp.sa import NH_IPV4, DropReason, EspDrop, InboundSa, OutboundSa, SequenceExhausted
from esp.selectors import Selector, SelectorSet
from esp.tso import GSO_TCPV4, Segments, segment_headers
from tests.esp.packets import SUITES, make_params

MSS = 1000


def super_packet(payload_len: int, dst: str = "10.2.0.7") -> bytes:
    """An IPv4 TCP super-packet as a vnet_hdr TUN hands it over (checksum field unset)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 7, 1, 5 << 4, 0x18, 512, 0, 0)
    total = 40 + payload_len
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total & 0xFFFF, 1, 0x4000, 64, 6, 0,
        bytes([10, 1, 0, 5]), bytes(int(x) for x in dst.split(".")),
    )  # fmt: skip
    return ip + tcp + os.urandom(payload_len)


def cut(payload_len: int, dst: str = "10.2.0.7") -> Segments:
    return segment_headers(super_packet(payload_len, dst), GSO_TCPV4, MSS)


def opened(inbound: InboundSa, pieces: list[bytes]) -> list[bytes]:
    assert len(pieces) % 2 == 0
    return [inbound.open(pieces[i] + pieces[i + 1])[1] for i in range(0, len(pieces), 2)]


@pytest.mark.parametrize("suite", list(SUITES))
@pytest.mark.parametrize("payload_len", [1, MSS, 3 * MSS, 20 * MSS + 7])
def test_segments_open_to_what_segment_makes(suite: str, payload_len: int) -> None:
    params = make_params(suite)
    out, inbound = OutboundSa(params), InboundSa(params)
    segments = cut(payload_len)
    pieces: list[bytes] = []
    count = out.seal_segments(segments, NH_IPV4, pieces)
    assert count == len(segments.headers) == -(-payload_len // MSS)
    assert opened(inbound, pieces) == segments.packets()
    # Sequence numbers and counters as if seal() had been called per segment.
    assert out.seq == count and out.packets == count
    assert out.bytes == sum(len(p) for p in segments.packets())
    assert inbound.replay.top == count
    # Lengths as seal() makes them (same padding).
    for i, packet in enumerate(segments.packets()):
        assert len(pieces[2 * i]) + len(pieces[2 * i + 1]) == params.sealed_len(len(packet))


def test_selectors_are_checked_once_and_drop_all_segments() -> None:
    params = make_params("aes256gcm16")
    local, remote = [Selector.from_network("10.1.0.0/24")], [Selector.from_network("10.2.0.0/24")]
    out = OutboundSa(params, SelectorSet.outbound(local, remote))
    pieces: list[bytes] = []
    assert out.seal_segments(cut(5 * MSS), NH_IPV4, pieces) == 5
    with pytest.raises(EspDrop) as info:
        out.seal_segments(cut(5 * MSS, dst="10.9.0.7"), NH_IPV4, pieces)
    assert info.value.reason is DropReason.SELECTOR
    assert out.selector_drops == 5 and out.packets == 5 and len(pieces) == 10


def test_sequence_space_ending_inside_a_super_packet() -> None:
    """What fits is sealed (and must be sent), then SequenceExhausted; never a wrap."""
    params = make_params("aes128gcm16")
    out = OutboundSa(params, last_seq=0xFFFFFFFF - 3)
    inbound = InboundSa(params)
    segments = cut(10 * MSS)
    pieces: list[bytes] = []
    with pytest.raises(SequenceExhausted):
        out.seal_segments(segments, NH_IPV4, pieces)
    assert len(pieces) == 6 and out.seq == 0xFFFFFFFF and out.packets == 3
    got = [struct.unpack_from("!I", pieces[i], 4)[0] for i in range(0, 6, 2)]
    assert got == [0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF]
    assert opened(inbound, pieces) == segments.packets()[:3]
    with pytest.raises(SequenceExhausted):
        out.seal_segments(segments, NH_IPV4, pieces)
    assert len(pieces) == 6


def test_a_seal_that_fails_half_way_never_reuses_sequence_numbers() -> None:
    """The numbers are taken before sealing: after a failure (a bug, MemoryError) the next
    super-packet starts after them, so no AEAD nonce can repeat."""
    params = make_params("aes256gcm16")
    out, inbound = OutboundSa(params), InboundSa(params)

    def failing(seq: int, segments: Segments, next_header: int, into: list[bytes]) -> None:
        into.append(struct.pack("!IIQ", params.spi, seq, seq))  # half a packet, then:
        raise MemoryError

    out._seal_run = failing
    pieces: list[bytes] = []
    with pytest.raises(MemoryError):
        out.seal_segments(cut(4 * MSS), NH_IPV4, pieces)
    assert out.seq == 4 and out.packets == 0
    out._seal_run = None  # built again at the next call
    fresh: list[bytes] = []
    segments = cut(3 * MSS)
    assert out.seal_segments(segments, NH_IPV4, fresh) == 3
    got = [struct.unpack_from("!I", fresh[i], 4)[0] for i in range(0, 6, 2)]
    assert got == [5, 6, 7]
    assert opened(inbound, fresh) == segments.packets()
