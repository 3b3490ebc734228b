"""ike.fragments: RFC 7383 fragmentation and bounded, verify-first reassembly."""

from __future__ import annotations

import random
import struct

import pytest

from ike.codec import decode, encode_payloads, open_protected
from ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType
from ike.errors import CryptoError, DecodeError
from ike.fragments import MAX_FRAGMENTS, Reassembler, fragment
from ike.payloads import CertPayload, IdPayload, Message, NotifyPayload, SkfPayload
from tests.ike.sk_fake import FakeGcmSk

SPI_I, SPI_R = b"I" * 8, b"R" * 8


def big_message(mid: int = 1, cert_len: int = 3000, exchange=ExchangeType.IKE_AUTH) -> Message:
    return Message(
        SPI_I,
        SPI_R,
        exchange,
        HeaderFlag.INITIATOR,
        mid,
        [
            IdPayload(PayloadType.IDi, 2, b"client.example"),
            CertPayload(4, bytes(i % 251 for i in range(cert_len))),
            NotifyPayload(NotifyType.INITIAL_CONTACT),
        ],
    )


@pytest.fixture
def keys() -> tuple[FakeGcmSk, FakeGcmSk]:
    return FakeGcmSk.pair()


def feed(reassembler: Reassembler, datagrams, rx) -> list[Message]:
    done = []
    for d in datagrams:
        m = reassembler.add(d, rx)
        if m is not None:
            done.append(m)
    return done


def test_small_message_is_one_sk_datagram(keys):
    tx, rx = keys
    m = big_message(cert_len=100)
    out = fragment(m, tx, 1280)
    assert len(out) == 1
    assert decode(out[0]).payloads[0].ptype == PayloadType.SK
    assert open_protected(out[0], rx) == m


@pytest.mark.parametrize("max_datagram", [200, 576, 1280])
def test_fragments_fit_and_carry_rfc7383_fields(keys, max_datagram):
    tx, _ = keys
    m = big_message()
    out = fragment(m, tx, max_datagram)
    assert len(out) > 1
    first_inner, inner = encode_payloads(m.payloads)
    for n, d in enumerate(out, start=1):
        assert len(d) <= max_datagram
        outer = decode(d)
        assert (outer.spi_i, outer.spi_r, outer.message_id) == (SPI_I, SPI_R, m.message_id)
        assert outer.exchange == m.exchange and outer.flags == m.flags
        (skf,) = outer.payloads
        assert isinstance(skf, SkfPayload)
        assert (skf.fragment_number, skf.total_fragments) == (n, len(out))
        assert skf.first_inner == (first_inner if n == 1 else 0)
    # Each fragment but the last carries as much as fits: no more fragments than needed.
    best = max(n for n in range(max_datagram) if 36 + tx.sealed_len(n) <= max_datagram)
    assert len(out) == -(-len(inner) // best)
    assert all(len(d) == 36 + tx.sealed_len(best) for d in out[:-1])


def test_fragments_are_as_large_as_allowed(keys):
    tx, rx = keys
    m = big_message(cert_len=1500)
    for max_datagram in range(100, 900, 7):
        best = max(n for n in range(max_datagram) if 36 + tx.sealed_len(n) <= max_datagram)
        out = fragment(m, tx, max_datagram)
        sizes = [len(rx.open(d[:36], d[36:])) for d in out]
        assert all(n == best for n in sizes[:-1]) and 0 < sizes[-1] <= best, max_datagram


def test_single_datagram_threshold_is_exact(keys):
    tx, _ = keys
    m = big_message(cert_len=700)
    size = len(fragment(m, tx, 2000)[0])
    assert len(fragment(m, tx, size)) == 1
    assert len(fragment(m, tx, size - 1)) == 2


def test_fragment_rejects_impossible_size(keys):
    tx, _ = keys
    with pytest.raises(ValueError):
        fragment(big_message(), tx, 36 + tx.sealed_len(0) - 1)


@pytest.mark.parametrize("seed", range(8))
def test_reassembly_in_any_order_with_duplicates(keys, seed):
    tx, rx = keys
    m = big_message()
    out = fragment(m, tx, 400)
    shuffled = out + random.Random(seed).choices(out, k=4)
    random.Random(seed).shuffle(shuffled)
    r = Reassembler()
    done = feed(r, shuffled, rx)
    assert done == [m]  # exactly once, at the last missing fragment
    assert r.in_progress is None or r.in_progress[2] < len(out)


class CountingSk(FakeGcmSk):
    def __init__(self, other: FakeGcmSk) -> None:
        self.__dict__.update(other.__dict__)
        self.opened = 0

    def open(self, aad, body):
        self.opened += 1
        return super().open(aad, body)


def test_duplicates_cost_no_decryption_or_budget(keys):
    tx, rx = keys
    m = big_message()
    out = fragment(m, tx, 500)
    _, inner = encode_payloads(m.payloads)
    counting = CountingSk(rx)
    r = Reassembler(max_bytes=len(inner))  # no room for any octet counted twice
    assert feed(r, [out[0], out[0], out[1], out[0], out[1]], counting) == []
    assert counting.opened == 2
    assert feed(r, out[2:], counting) == [m]


def test_returns_only_when_complete(keys):
    tx, rx = keys
    m = big_message()
    out = fragment(m, tx, 500)
    r = Reassembler()
    for i, d in enumerate(out[:-1]):
        assert r.add(d, rx) is None
        assert r.in_progress == (m.message_id, len(out), i + 1)
    assert r.add(out[-1], rx) == m
    assert r.in_progress is None


def test_forged_fragment_does_not_disturb_collection(keys):
    tx, rx = keys
    m = big_message()
    out = fragment(m, tx, 500)
    r = Reassembler()
    r.add(out[0], rx)
    before = r.in_progress
    forged = bytearray(out[1])
    forged[-20] ^= 0x40
    with pytest.raises(CryptoError):
        r.add(bytes(forged), rx)
    assert r.in_progress == before
    # A forgery claiming a newer message or more fragments must not reset anything either.
    _, attacker = FakeGcmSk.pair()
    newer = fragment(big_message(mid=9), FakeGcmSk.pair()[0], 500)[0]
    with pytest.raises(CryptoError):
        r.add(newer, rx)
    more = fragment(big_message(cert_len=9000), attacker, 500)
    with pytest.raises(CryptoError):
        r.add(more[-1], rx)
    assert r.in_progress == before
    assert feed(r, out[1:], rx) == [m]


def test_wrong_key_rejected(keys):
    tx, _ = keys
    _, other = FakeGcmSk.pair()
    out = fragment(big_message(), tx, 500)
    r = Reassembler()
    for d in out:
        with pytest.raises(CryptoError):
            r.add(d, other)
    assert r.in_progress is None


def test_newer_message_id_replaces_older_is_dropped(keys):
    tx, rx = keys
    old, new = big_message(mid=3), big_message(mid=4, cert_len=2500)
    old_frags, new_frags = fragment(old, tx, 500), fragment(new, tx, 500)
    r = Reassembler()
    r.add(old_frags[0], rx)
    r.add(new_frags[0], rx)
    assert r.in_progress == (4, len(new_frags), 1)
    assert r.add(old_frags[1], rx) is None  # stale: ignored
    assert r.in_progress == (4, len(new_frags), 1)
    assert feed(r, new_frags[1:], rx) == [new]


def test_refragmented_retransmission(keys):
    """RFC 7383 §2.6.1: more fragments restarts the collection; fewer are dropped."""
    tx, rx = keys
    m = big_message()
    coarse, fine = fragment(m, tx, 1200), fragment(m, tx, 500)
    assert len(fine) > len(coarse)
    r = Reassembler()
    r.add(coarse[0], rx)
    r.add(fine[1], rx)
    assert r.in_progress == (m.message_id, len(fine), 1)
    assert r.add(coarse[1], rx) is None
    assert r.in_progress == (m.message_id, len(fine), 1)
    assert feed(r, [fine[0], *fine[2:]], rx) == [m]


def test_fragment_from_other_exchange_rejected(keys):
    tx, rx = keys
    a = fragment(big_message(mid=5), tx, 500)
    b = fragment(big_message(mid=5, exchange=ExchangeType.INFORMATIONAL), tx, 500)
    assert len(a) == len(b)
    r = Reassembler()
    r.add(a[0], rx)
    with pytest.raises(DecodeError):
        r.add(b[1], rx)
    assert r.in_progress == (5, len(a), 1)


def test_too_many_fragments_refused_before_decryption(keys):
    tx, rx = keys
    out = fragment(big_message(cert_len=20000), tx, 300)
    assert len(out) > MAX_FRAGMENTS

    class MustNotOpen(FakeGcmSk):
        def open(self, aad, body):
            raise AssertionError("decrypted a fragment that exceeds the limit")

    with pytest.raises(DecodeError):
        Reassembler().add(out[0], MustNotOpen(b"k" * 16, b"salt"))
    small = Reassembler(max_fragments=len(out) - 1)
    with pytest.raises(DecodeError):
        small.add(out[0], rx)
    assert small.in_progress is None
    assert feed(Reassembler(max_fragments=len(out)), out, rx) == [big_message(cert_len=20000)]


def test_byte_budget_enforced(keys):
    tx, rx = keys
    m = big_message(cert_len=5000)
    out = fragment(m, tx, 1000)
    _, inner = encode_payloads(m.payloads)
    tight = Reassembler(max_bytes=len(inner) - 1)
    with pytest.raises(DecodeError):
        feed(tight, out, rx)
    assert tight.in_progress is None  # the hopeless collection was dropped
    assert feed(Reassembler(max_bytes=len(inner)), out, rx) == [m]


def test_reset_discards_collection(keys):
    tx, rx = keys
    m = big_message()
    out = fragment(m, tx, 500)
    r = Reassembler()
    r.add(out[0], rx)
    r.reset()
    assert r.in_progress is None
    assert feed(r, out[1:], rx) == []
    assert r.add(out[0], rx) == m


def test_non_fragment_messages_rejected(keys):
    tx, rx = keys
    r = Reassembler()
    with pytest.raises(DecodeError):
        r.add(fragment(big_message(cert_len=10), tx, 1280)[0], rx)  # an SK message
    bad_total = bytearray(fragment(big_message(), tx, 500)[0])
    bad_total[34:36] = struct.pack("!H", 0)  # total fragments 0
    with pytest.raises(DecodeError):
        r.add(bytes(bad_total), rx)
    with pytest.raises(DecodeError):
        r.add(b"\x00" * 20, rx)
    assert r.in_progress is None


def test_single_fragment_message(keys):
    """A message sent as 1/1 fragment (allowed by RFC 7383) is reassembled at once."""
    tx, rx = keys
    m = big_message(cert_len=50)
    first, plain = encode_payloads(m.payloads)
    sealed_len = tx.sealed_len(len(plain))
    hdr = struct.pack(
        "!8s8sBBBBII", SPI_I, SPI_R, PayloadType.SKF, 0x20, m.exchange, m.flags, 1, 36 + sealed_len
    )
    aad = hdr + struct.pack("!BBHHH", first, 0, 8 + sealed_len, 1, 1)
    assert Reassembler().add(aad + tx.seal(aad, plain), rx) == m
