"""ESP SAs: round trips, drops and their order, padding, sequence numbers, counters."""

from __future__ import annotations

import struct

import pytest

from esp.sa import (
    MAX_SEQ_32,
    DropReason,
    EspDrop,
    EspParams,
    InboundSa,
    OutboundSa,
    SequenceExhausted,
)
from esp.selectors import Selector, SelectorSet
from ike.constants import EncrId, IntegId
from tests.esp.forge import esp_for, esp_packet, trailer
from tests.esp.packets import (
    AEAD_SUITES,
    CBC_SUITES,
    SUITES,
    ipv4,
    ipv6,
    make_params,
    udp,
    v4_udp,
    v6_udp,
)

ALL = list(SUITES)
LOW = 0xFFFFFFFF


def pair(suite: str, esn: bool = False) -> tuple[OutboundSa, InboundSa, EspParams]:
    params = make_params(suite, esn=esn)
    return OutboundSa(params), InboundSa(params), params


def drop_reason(sa: InboundSa, packet: bytes) -> DropReason:
    with pytest.raises(EspDrop) as info:
        sa.open(packet)
    return info.value.reason


# Parameters


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="reserved"):
        EspParams(255, EncrId.AES_GCM_16, bytes(20))
    with pytest.raises(ValueError, match="reserved"):
        EspParams(1 << 32, EncrId.AES_GCM_16, bytes(20))
    with pytest.raises(ValueError, match="key"):
        EspParams(0x1000, EncrId.AES_GCM_16, bytes(16))  # salt missing
    with pytest.raises(ValueError, match="key"):
        EspParams(0x1000, EncrId.CHACHA20_POLY1305, bytes(32))
    with pytest.raises(ValueError, match="AEAD"):
        EspParams(0x1000, EncrId.AES_GCM_16, bytes(20), IntegId.HMAC_SHA2_256_128, bytes(32))
    with pytest.raises(ValueError, match="integrity"):
        EspParams(0x1000, EncrId.AES_CBC, bytes(16))
    with pytest.raises(ValueError, match="bytes"):
        EspParams(0x1000, EncrId.AES_CBC, bytes(16), IntegId.HMAC_SHA2_256_128, bytes(20))
    with pytest.raises(ValueError, match="not supported"):
        EspParams(0x1000, EncrId.AES_CTR, bytes(20))
    with pytest.raises(ValueError, match="unknown"):
        EspParams(0x1000, 99, bytes(20))  # type: ignore[arg-type]
    plain_int = EspParams(0x1000, 20, bytes(20))  # type: ignore[arg-type]
    assert plain_int.encr_id is EncrId.AES_GCM_16


def test_repr_hides_keys() -> None:
    key, integ_key = bytes(range(100, 132)), bytes(range(1, 33))
    params = EspParams(0xC0FFEE, EncrId.AES_CBC, key, IntegId.HMAC_SHA2_256_128, integ_key)
    text = repr(params)
    assert "AES_CBC/256" in text and "HMAC_SHA2_256_128" in text and "0x00c0ffee" in text
    for secret in (key, integ_key):
        assert secret.hex() not in text and repr(secret) not in text
        assert secret[:4].hex() not in text
    gcm = EspParams(0x1000, EncrId.AES_GCM_16, bytes(range(200, 220)))
    assert "AES_GCM_16/128" in repr(gcm) and "c8c9ca" not in repr(gcm)


# Round trips


@pytest.mark.parametrize("esn", [False, True])
@pytest.mark.parametrize("suite", ALL)
def test_round_trip_ipv4_and_ipv6(suite: str, esn: bool) -> None:
    out, inb, params = pair(suite, esn=esn)
    for inner, nh in [(v4_udp(size=28), 4), (v4_udp(size=1400), 4), (v6_udp(size=77), 41)]:
        for _ in range(3):
            packet = out.seal(inner, nh)
            assert len(packet) == params.sealed_len(len(inner))
            body = len(packet) - 8 - params.iv_len - params.icv_len
            assert body % params.align == 0
            assert inb.open(packet) == (nh, inner)


@pytest.mark.parametrize("suite", ALL)
def test_memoryview_and_bytearray_input(suite: str) -> None:
    out, inb, _ = pair(suite)
    inner = v4_udp()
    assert inb.open(memoryview(out.seal(inner, 4))) == (4, inner)
    assert inb.open(bytearray(out.seal(inner, 4))) == (4, inner)


@pytest.mark.parametrize("suite", ALL)
def test_padding_is_minimal_and_monotonic(suite: str) -> None:
    out, inb, params = pair(suite)
    for size in range(20, 20 + 2 * params.align):
        inner = ipv4("10.0.0.1", "10.0.0.2", 17, bytes(size - 20))
        packet = out.seal(inner, 4)
        seq = struct.unpack_from("!I", packet, 4)[0]
        plain = inb.decrypt(packet, seq)
        assert plain == inner + trailer(size, 4, params.align)


@pytest.mark.parametrize("suite", ALL)
def test_independent_encoder_is_accepted(suite: str) -> None:
    # forge.py builds packets with cryptography directly, not with esp.sa.
    _, inb, params = pair(suite)
    inner = v6_udp()
    assert inb.open(esp_for(params, 1, inner, 41)) == (41, inner)


@pytest.mark.parametrize("suite", AEAD_SUITES)
def test_aead_iv_is_the_sequence_number(suite: str) -> None:
    out, _, _ = pair(suite, esn=True)
    for expected in (1, 2, 3):
        packet = out.seal(v4_udp(), 4)
        assert struct.unpack_from("!IIQ", packet) == (0x1000, expected, expected)


@pytest.mark.parametrize("suite", CBC_SUITES)
def test_cbc_ivs_differ_per_packet(suite: str) -> None:
    out, _, _ = pair(suite)
    inner = v4_udp()
    ivs = {out.seal(inner, 4)[8:24] for _ in range(50)}
    assert len(ivs) == 50


def test_iv_source_must_fit() -> None:
    params = make_params("aes128gcm16")
    out = OutboundSa(params, iv_source=lambda seq: bytes(7))
    with pytest.raises(ValueError, match="iv_source"):
        out.seal(v4_udp(), 4)


def test_next_header_range_checked() -> None:
    out, _, _ = pair("aes128gcm16")
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            out.seal(v4_udp(), bad)
    assert out.seq == 0 and out.packets == 0


# Sequence numbers


def test_sequence_starts_at_one_and_increments() -> None:
    out, _, _ = pair("aes128-sha256")
    seqs = [struct.unpack_from("!I", out.seal(v4_udp(), 4), 4)[0] for _ in range(4)]
    assert seqs == [1, 2, 3, 4]
    assert out.seq == 4


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha1"])
def test_32bit_sequence_exhaustion_raises_instead_of_wrapping(suite: str) -> None:
    params = make_params(suite)
    out, inb = OutboundSa(params, last_seq=MAX_SEQ_32 - 1), InboundSa(params)
    last = out.seal(v4_udp(), 4)
    assert struct.unpack_from("!I", last, 4)[0] == MAX_SEQ_32
    assert inb.open(last)[0] == 4
    for _ in range(2):
        with pytest.raises(SequenceExhausted):
            out.seal(v4_udp(), 4)
    assert out.seq == MAX_SEQ_32 and out.packets == 1


def test_esn_sequence_exhaustion_at_2_64() -> None:
    out = OutboundSa(make_params("aes256gcm16", esn=True), last_seq=2**64 - 2)
    packet = out.seal(v4_udp(), 4)
    assert struct.unpack_from("!IIQ", packet)[1:] == (LOW, 2**64 - 1)
    with pytest.raises(SequenceExhausted):
        out.seal(v4_udp(), 4)


def test_last_seq_bounds() -> None:
    params = make_params("aes128gcm16")
    with pytest.raises(ValueError):
        OutboundSa(params, last_seq=MAX_SEQ_32 + 1)
    with pytest.raises(ValueError):
        OutboundSa(params, last_seq=-1)


@pytest.mark.parametrize("suite", ["aes128gcm16", "chacha20poly1305", "aes256-sha512"])
def test_esn_crosses_the_32bit_boundary(suite: str) -> None:
    params = make_params(suite, esn=True)
    out, inb = OutboundSa(params, last_seq=2**32 - 3), InboundSa(params)
    inb.replay.update(2**32 - 3)  # the receiver saw the traffic so far
    inner = v4_udp()
    lows = []
    for _ in range(5):
        packet = out.seal(inner, 4)
        lows.append(struct.unpack_from("!I", packet, 4)[0])
        assert inb.open(packet) == (4, inner)
    assert lows == [LOW - 1, LOW, 0, 1, 2]
    assert inb.replay.top == (1 << 32) | 2


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256"])
def test_esn_high_bits_are_authenticated(suite: str) -> None:
    # Same low 32 bits, other high half: the ICV must fail, not decrypt to garbage.
    params = make_params(suite, esn=True)
    packet = esp_for(params, (5 << 32) | 9, v4_udp(), 4)
    inb = InboundSa(params)
    inb.replay.update((4 << 32) | 5)  # receiver infers high = 4
    assert drop_reason(inb, packet) is DropReason.BAD_ICV


# needs_rekey and counters


def test_needs_rekey_at_90_percent_of_sequence_space() -> None:
    params = make_params("aes128gcm16")
    assert not OutboundSa(params).needs_rekey
    assert not OutboundSa(params, last_seq=int(MAX_SEQ_32 * 0.9) - 2).needs_rekey
    near = OutboundSa(params, last_seq=int(MAX_SEQ_32 * 0.9) - 1)
    assert not near.needs_rekey
    near.seal(v4_udp(), 4)
    assert near.needs_rekey
    esn = make_params("aes128gcm16", esn=True)
    assert not OutboundSa(esn, last_seq=MAX_SEQ_32).needs_rekey  # ESN: far from the end
    assert OutboundSa(esn, last_seq=2**64 - 2**60).needs_rekey


def test_needs_rekey_on_soft_packets_and_bytes() -> None:
    by_packets = make_params("aes128gcm16", soft_packets=3)
    out, inb = OutboundSa(by_packets), InboundSa(by_packets)
    for _ in range(3):
        assert not out.needs_rekey and not inb.needs_rekey
        inb.open(out.seal(v4_udp(size=100), 4))
    assert out.needs_rekey and inb.needs_rekey
    by_bytes = make_params("aes128gcm16", soft_bytes=250)
    out = OutboundSa(by_bytes)
    out.seal(v4_udp(size=200), 4)
    assert not out.needs_rekey
    out.seal(v4_udp(size=50), 4)
    assert out.needs_rekey


def test_inbound_needs_rekey_when_peer_nears_the_end() -> None:
    params = make_params("aes128gcm16")
    inb = InboundSa(params)
    inb.open(esp_for(params, int(MAX_SEQ_32 * 0.95), v4_udp(), 4))
    assert inb.needs_rekey


def test_counters() -> None:
    out, inb, _ = pair("aes128gcm16")
    inners = [v4_udp(size=100), v6_udp(size=300), v4_udp(size=60)]
    packets = [out.seal(p, 4 if p[0] >> 4 == 4 else 41) for p in inners]
    assert (out.packets, out.bytes) == (3, 460)
    for p in packets:
        inb.open(p)
    assert (inb.packets, inb.bytes) == (3, 460)
    with pytest.raises(EspDrop):
        inb.open(packets[0])
    with pytest.raises(EspDrop):
        inb.open(packets[1][:20])
    assert inb.drops[DropReason.REPLAY] == 1
    assert inb.drops[DropReason.MALFORMED] == 1
    assert sum(inb.drops.values()) == 2
    assert (inb.packets, inb.bytes) == (3, 460)


# Drops and their order


@pytest.mark.parametrize("suite", ALL)
def test_truncated_packets_never_crash(suite: str) -> None:
    out, inb, params = pair(suite)
    packet = out.seal(v4_udp(size=60), 4)
    for cut in range(len(packet)):
        reason = drop_reason(inb, packet[:cut])
        assert reason in (DropReason.MALFORMED, DropReason.BAD_ICV)
        if cut < 8 + params.iv_len + params.icv_len + 2:
            assert reason is DropReason.MALFORMED
    assert inb.replay.top == 0
    assert inb.open(packet)[0] == 4


@pytest.mark.parametrize("suite", CBC_SUITES)
def test_cbc_partial_block_is_malformed_and_does_not_desync(suite: str) -> None:
    out, inb, params = pair(suite)
    good = out.seal(v4_udp(), 4)
    icv = params.icv_len
    bad = good[: -icv - 3] + good[-icv:]  # ciphertext no longer whole blocks
    assert drop_reason(inb, bad) is DropReason.MALFORMED
    assert inb.open(good)[0] == 4
    assert inb.open(out.seal(v4_udp(), 4))[0] == 4


@pytest.mark.parametrize("suite", ALL)
def test_any_flipped_bit_is_bad_icv_and_does_not_move_the_window(suite: str) -> None:
    out, inb, _ = pair(suite)
    packet = out.seal(v4_udp(size=64), 4)
    for pos in range(8, len(packet), 5):  # IV, ciphertext and ICV (the SPI is the SA key)
        forged = bytearray(packet)
        forged[pos] ^= 0x01
        assert drop_reason(inb, bytes(forged)) is DropReason.BAD_ICV
    assert inb.replay.top == 0
    assert inb.open(packet)[0] == 4


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256"])
def test_forged_high_sequence_number_does_not_advance_window(suite: str) -> None:
    out, inb, _ = pair(suite)
    first = out.seal(v4_udp(), 4)
    second = out.seal(v4_udp(), 4)
    assert inb.open(first)[0] == 4
    forged = bytearray(second)
    struct.pack_into("!I", forged, 4, 0x7FFFFFFF)  # jump far ahead, without the key
    assert drop_reason(inb, bytes(forged)) is DropReason.BAD_ICV
    assert inb.replay.top == 1
    assert inb.open(second)[0] == 4  # seq 2 still fits: the window did not move
    assert inb.drops[DropReason.BAD_ICV] == 1


def test_replay_is_checked_before_the_icv() -> None:
    out, inb, _ = pair("aes128gcm16")
    packet = out.seal(v4_udp(), 4)
    inb.open(packet)
    forged = bytearray(packet)
    forged[-1] ^= 1
    assert drop_reason(inb, bytes(forged)) is DropReason.REPLAY
    assert drop_reason(inb, packet) is DropReason.REPLAY
    assert inb.drops[DropReason.BAD_ICV] == 0


def test_old_packet_below_window_is_replay() -> None:
    params = make_params("aes128gcm16")
    inb = InboundSa(params, replay_window=32)
    old = esp_for(params, 1, v4_udp(), 4)
    inb.open(esp_for(params, 100, v4_udp(), 4))
    assert drop_reason(inb, old) is DropReason.REPLAY
    assert inb.open(esp_for(params, 69, v4_udp(), 4))[0] == 4  # bottom edge


def test_sequence_number_zero_rejected() -> None:
    params = make_params("aes128gcm16")
    inb = InboundSa(params)
    assert drop_reason(inb, esp_for(params, 0, v4_udp(), 4)) is DropReason.REPLAY


def test_wrong_spi() -> None:
    params = make_params("aes128gcm16", spi=0x2000)
    other = make_params("aes128gcm16", spi=0x2001)
    inb = InboundSa(params)
    assert drop_reason(inb, esp_for(other, 1, v4_udp(), 4)) is DropReason.UNKNOWN_SPI


def test_replay_window_size_is_validated() -> None:
    with pytest.raises(ValueError):
        InboundSa(make_params("aes128gcm16"), replay_window=16)


# Padding and payload checks (all on authentic packets: the window still advances)


@pytest.mark.parametrize("suite", ALL)
@pytest.mark.parametrize(
    "tail",
    [
        b"\x01\x03\x02\x04",  # pad bytes not 1, 2
        b"\x00\x00\x02\x04",  # zero padding
        b"\x02\x01\x02\x04",  # reversed
        b"\x01\x02\x03\x04\x01\x04",  # pad length 1 but the byte is 4
    ],
)
def test_bad_padding_dropped_after_window_update(suite: str, tail: bytes) -> None:
    params = make_params(suite)
    inb = InboundSa(params)
    inner = v4_udp(size=40)
    filler = bytes(-(len(inner) + len(tail)) % params.align)  # CBC needs whole blocks
    packet = esp_packet(params, 7, inner + filler + tail)
    assert drop_reason(inb, packet) is DropReason.PADDING
    assert inb.replay.top == 7
    assert drop_reason(inb, packet) is DropReason.REPLAY


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha1"])
def test_pad_length_beyond_plaintext(suite: str) -> None:
    params = make_params(suite)
    inb = InboundSa(params)
    plain = bytes(14) + b"\xff\x04" if not params.is_aead else b"\x01\x02\xff\x04"
    assert drop_reason(inb, esp_packet(params, 1, plain)) is DropReason.PADDING


def test_long_padding_is_accepted() -> None:
    # Senders may pad beyond the minimum (up to 255 bytes) to hide lengths.
    params = make_params("aes128gcm16")
    inner = v4_udp(size=40)
    pad = bytes(range(1, 255))
    packet = esp_packet(params, 1, inner + pad + bytes((254, 4)))
    assert InboundSa(params).open(packet) == (4, inner)


@pytest.mark.parametrize("suite", ["aes256gcm16", "aes256-sha384"])
def test_dummy_packet_dropped_and_counted(suite: str) -> None:
    params = make_params(suite)
    inb = InboundSa(params)
    assert drop_reason(inb, esp_for(params, 3, bytes(30), 59)) is DropReason.DUMMY
    assert drop_reason(inb, esp_for(params, 4, b"", 59)) is DropReason.DUMMY
    assert inb.drops[DropReason.DUMMY] == 2
    assert inb.replay.top == 4
    assert inb.packets == 0


@pytest.mark.parametrize("next_header", [0, 1, 6, 17, 50, 255])
def test_unknown_next_header_is_malformed(next_header: int) -> None:
    params = make_params("aes128gcm16")
    inb = InboundSa(params)
    assert drop_reason(inb, esp_for(params, 1, v4_udp(), next_header)) is DropReason.MALFORMED
    assert inb.replay.top == 1


@pytest.mark.parametrize(
    ("inner", "next_header"),
    [
        (v6_udp(), 4),  # next header says IPv4, packet is IPv6
        (v4_udp(), 41),
        (v4_udp()[:19], 4),  # shorter than an IPv4 header
        (v6_udp()[:39], 41),
        (ipv4("10.0.0.1", "10.0.0.2", 17, bytes(20), total_len=60), 4),  # claims more
        (ipv4("10.0.0.1", "10.0.0.2", 17, bytes(20), total_len=12), 4),  # below a header
        (ipv6("::1", "::2", 17, bytes(8))[:44], 41),  # payload length claims 8, has 4
    ],
    ids=lambda v: f"nh{v}" if isinstance(v, int) else f"len{len(v)}",  # stable under xdist
)
def test_bad_inner_packet_is_malformed(inner: bytes, next_header: int) -> None:
    params = make_params("chacha20poly1305")
    packet = esp_for(params, 1, inner, next_header)
    assert drop_reason(InboundSa(params), packet) is DropReason.MALFORMED


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256"])
def test_tfc_padding_after_inner_packet_is_removed(suite: str) -> None:
    params = make_params(suite)
    inb = InboundSa(params)
    v4, v6 = v4_udp(size=100), v6_udp(size=100)
    assert inb.open(esp_for(params, 1, v4 + bytes(300), 4)) == (4, v4)
    assert inb.open(esp_for(params, 2, v6 + bytes(77), 41)) == (41, v6)
    assert inb.bytes == 200


# Selectors

LOCAL = [Selector.from_network("10.2.0.0/16")]
REMOTE = [Selector.from_network("10.1.0.0/16")]


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes256-sha512"])
def test_inbound_selectors(suite: str) -> None:
    params = make_params(suite)
    inb = InboundSa(params, selectors=SelectorSet.inbound(LOCAL, REMOTE))
    good = v4_udp("10.1.0.5", "10.2.0.7")
    assert inb.open(esp_for(params, 1, good, 4)) == (4, good)
    for seq, inner, nh in [
        (2, v4_udp("10.2.0.7", "10.1.0.5"), 4),  # reversed direction
        (3, v4_udp("10.1.0.5", "10.3.0.7"), 4),  # destination not ours
        (4, v4_udp("172.16.0.1", "10.2.0.7"), 4),  # source not theirs
        (5, v6_udp(), 41),  # no IPv6 selectors at all
    ]:
        assert drop_reason(inb, esp_for(params, seq, inner, nh)) is DropReason.SELECTOR
    assert inb.drops[DropReason.SELECTOR] == 4
    assert inb.replay.top == 5  # authentic packets: the window moved
    assert inb.packets == 1


def test_inbound_ipv6_selectors_with_ports() -> None:
    params = make_params("aes128gcm16")
    sel = SelectorSet.inbound(
        [Selector.from_network("2001:db8:2::/48")],
        [Selector.from_network("2001:db8:1::/48", 17, (1111, 1111))],
    )
    inb = InboundSa(params, selectors=sel)
    good = v6_udp()  # UDP 1111 -> 2222
    assert inb.open(esp_for(params, 1, good, 41)) == (41, good)
    bad = ipv6("2001:db8:1::5", "2001:db8:2::7", 17, udp(1112, 2222))
    assert drop_reason(inb, esp_for(params, 2, bad, 41)) is DropReason.SELECTOR


def test_outbound_selectors() -> None:
    params = make_params("aes128gcm16")
    out = OutboundSa(params, SelectorSet.outbound(LOCAL, REMOTE))
    assert out.seal(v4_udp("10.2.0.1", "10.1.0.1"), 4)
    with pytest.raises(EspDrop) as info:
        out.seal(v4_udp("10.1.0.1", "10.2.0.1"), 4)
    assert info.value.reason is DropReason.SELECTOR
    assert (out.seq, out.packets, out.selector_drops) == (1, 1, 1)


def test_route_based_selectors_accept_everything_of_the_family() -> None:
    params = make_params("aes128gcm16")
    every = [Selector.from_network("0.0.0.0/0"), Selector.from_network("::/0")]
    inb = InboundSa(params, selectors=SelectorSet.inbound(every, every))
    assert inb.open(esp_for(params, 1, v4_udp("8.8.8.8", "1.1.1.1"), 4))[0] == 4
    assert inb.open(esp_for(params, 2, v6_udp("::1", "::2"), 41))[0] == 41


def test_soft_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="soft"):
        make_params("aes128gcm16", soft_packets=0)
    with pytest.raises(ValueError, match="soft"):
        make_params("aes128gcm16", soft_bytes=-5)


@pytest.mark.parametrize("suite", CBC_SUITES)
def test_cbc_decrypt_refuses_partial_blocks_even_when_called_directly(suite: str) -> None:
    out, inb, params = pair(suite)
    inner = v4_udp()
    good = out.seal(inner, 4)
    icv = params.icv_len
    assert inb.decrypt(good[: -icv - 5] + good[-icv:], 1) is None
    assert inb.decrypt(good[:40], 1) is None
    assert inb.open(good) == (4, inner)  # the kept CBC context is still in step
