"""RFC 3948 demultiplexing of UDP/4500 payloads."""

from __future__ import annotations

import struct

import pytest

from esp import encap
from ike import constants


def test_marker_matches_the_ike_constant() -> None:
    assert encap.NON_ESP_MARKER == constants.NON_ESP_MARKER == bytes(4)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff", True),
        (b"\xff\xff", False),
        (b"\x00", False),
        (b"", False),
    ],
)
def test_is_nat_keepalive(data: bytes, expected: bool) -> None:
    assert encap.is_nat_keepalive(data) is expected
    assert encap.is_nat_keepalive(memoryview(data)) is expected


IKE_HEADER = bytes(8) + bytes(8) + bytes((46, 0x20, 35, 0x08)) + struct.pack("!II", 1, 28)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff", "keepalive"),
        (b"", "invalid"),
        (b"\x00", "invalid"),  # a lone zero byte is not a keepalive
        (b"\xff\xff", "invalid"),
        (bytes(7), "invalid"),  # too short for the marker and anything useful
        (b"\x12\x34\x56\x78\x00\x00\x00", "invalid"),  # 7 bytes: short ESP header
        (encap.NON_ESP_MARKER + IKE_HEADER, "ike"),
        (bytes(8), "ike"),
        (struct.pack("!II", 0x12345678, 1) + bytes(40), "esp"),
        (struct.pack("!II", 256, 1), "esp"),  # smallest assignable SPI
        (struct.pack("!II", 255, 1) + bytes(40), "invalid"),  # reserved SPI range
        (struct.pack("!II", 1, 1) + bytes(40), "invalid"),
    ],
)
def test_classify_udp4500(data: bytes, kind: str) -> None:
    assert encap.classify_udp4500(data) == kind
    assert encap.classify_udp4500(memoryview(data)) == kind


def test_spi_of() -> None:
    esp = struct.pack("!II", 0xC0FFEE01, 7) + bytes(32)
    assert encap.spi_of(esp) == 0xC0FFEE01
    raw_ipv4 = bytes(20) + esp  # a raw IPPROTO_ESP socket hands over the IP header too
    assert encap.spi_of(memoryview(raw_ipv4), 20) == 0xC0FFEE01
    with pytest.raises(struct.error):
        encap.spi_of(b"\x01\x02")
