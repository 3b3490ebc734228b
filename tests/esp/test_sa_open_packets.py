"""InboundSa.open_packets: the packet loop's batch opener, against open() packet by packet."""

from __future__ import annotations

import pytest

from esp.sa import DropReason, InboundSa, OutboundSa
from tests.esp.packets import SUITES, make_params, v4_udp, v6_udp


def sealed(out: OutboundSa, count: int) -> tuple[list[bytes], list[bytes]]:
    inners = [v4_udp(size=60 + i) if i % 2 else v6_udp(size=80 + i) for i in range(count)]
    return inners, [out.seal(p, 4 if p[0] >> 4 == 4 else 41) for p in inners]


@pytest.mark.parametrize("suite", list(SUITES))
def test_a_batch_opens_like_packets_one_by_one_and_drops_cost_one(suite: str) -> None:
    params = make_params(suite)
    out, inbound = OutboundSa(params), InboundSa(params)
    inners, packets = sealed(out, 6)
    bad = bytearray(packets[2])
    bad[-1] ^= 1  # a bad ICV in the middle
    replayed = packets[0]
    batch: list[bytes | memoryview | None] = [
        packets[0], packets[1], bytes(bad), memoryview(packets[3]), replayed, packets[4]
    ]  # fmt: skip
    got: list[bytes] = []
    assert inbound.open_packets(batch, 0, got.append) == len(batch)
    assert got == [inners[0], inners[1], inners[3], inners[4]]
    assert inbound.drops[DropReason.BAD_ICV] == 1 and inbound.drops[DropReason.REPLAY] == 1
    assert inbound.packets == 4


def test_it_stops_at_what_is_not_its_own() -> None:
    params, other = make_params("aes256gcm16", spi=0x1000), make_params("aes256gcm16", spi=0x2000)
    mine, theirs = OutboundSa(params), OutboundSa(other)
    inbound = InboundSa(params)
    _, packets = sealed(mine, 3)
    _, foreign = sealed(theirs, 1)
    got: list[bytes] = []
    batch: list[bytes | None] = [packets[0], foreign[0], packets[1], b"\xff", None, packets[2]]
    assert inbound.open_packets(batch, 0, got.append) == 1  # another SPI: its SA's turn
    assert inbound.open_packets(batch, 2, got.append) == 3  # a runt: not ESP at all
    assert inbound.open_packets(batch, 4, got.append) == 4  # None: a cut receive slot
    assert inbound.open_packets(batch, 5, got.append) == 6
    assert len(got) == 3 and inbound.drops[DropReason.UNKNOWN_SPI] == 0


def test_an_unexpected_error_costs_one_packet() -> None:
    params = make_params("aes256gcm16")
    out, inbound = OutboundSa(params), InboundSa(params)
    inners, packets = sealed(out, 3)
    got: list[bytes] = []
    errors: list[Exception] = []

    def deliver(inner: bytes) -> None:
        if inner == inners[1]:
            raise RuntimeError("a bug downstream")
        got.append(inner)

    assert inbound.open_packets(packets, 0, deliver, errors.append) == 3
    assert got == [inners[0], inners[2]] and [str(e) for e in errors] == ["a bug downstream"]

    def broken(inner: bytes) -> None:
        raise RuntimeError("always")

    with pytest.raises(RuntimeError):  # without on_error it is not swallowed
        inbound.open_packets(sealed(out, 1)[1], 0, broken)
