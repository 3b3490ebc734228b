"""Dispatcher: stateless INVALID_MAJOR_VERSION answers (RFC 7296 §2.5) and their bounds."""

from __future__ import annotations

import pytest

from ike.codec import decode, decode_header
from ike.constants import ExchangeType, HeaderFlag, NotifyType
from ike.payloads import NotifyPayload
from ike.session import events as ev
from ike.session.session import State
from tests.ike.harness import ADDR_I, Pair
from tests.ike.test_session import established


def sa_init_request(p: Pair) -> bytes:
    """The initiator's real IKE_SA_INIT request, taken off its wire."""
    p.i.initiate(p.now)
    (g,) = p.i.datagrams_to_send()
    return g.data


def with_version(data: bytes, version: int, **fields: int) -> bytes:
    raw = bytearray(data)
    raw[17] = version
    if "exchange" in fields:
        raw[18] = fields["exchange"]
    if "flags" in fields:
        raw[19] = fields["flags"]
    if "message_id" in fields:
        raw[20:24] = fields["message_id"].to_bytes(4, "big")
    return bytes(raw)


@pytest.mark.parametrize("version", [0x30, 0x31, 0xF0])
def test_higher_major_version_is_answered_statelessly(version: int) -> None:
    p = Pair()
    request = with_version(sa_init_request(p), version, message_id=7)
    assert p.dispatcher.receive(request, ADDR_I, p.now) is None
    (reply,) = p.dispatcher.replies
    assert reply.remote == ADDR_I
    assert reply.data[17] == 0x20  # our version, 2.0
    msg = decode(reply.data)
    assert (msg.spi_i, msg.spi_r) == (request[:8], request[8:16])
    assert msg.exchange == ExchangeType.IKE_SA_INIT
    assert msg.flags == HeaderFlag.RESPONSE  # a response, and not from the initiator
    assert msg.message_id == 7
    assert msg.payloads == [NotifyPayload(NotifyType.INVALID_MAJOR_VERSION)]
    # Stateless: no session was admitted, the responder never saw it.
    assert p.dispatcher.half_open_count == 0 and not p.dispatcher.by_spi
    assert p.r.state is State.IDLE
    assert p.dispatcher.drops["unsupported_version"] == 1
    assert p.dispatcher.drops["invalid_major_version_sent"] == 1


@pytest.mark.parametrize(
    ("version", "fields"),
    [
        (0x10, {}),  # IKEv1: a lower version is never answered
        (0x00, {}),
        (0x30, {"flags": HeaderFlag.RESPONSE}),  # never answer a response
        (0x30, {"flags": HeaderFlag.RESPONSE | HeaderFlag.INITIATOR}),
        (0x30, {"exchange": ExchangeType.IKE_AUTH}),  # only IKE_SA_INIT requests
        (0x30, {"exchange": ExchangeType.INFORMATIONAL}),
    ],
)
def test_other_wrong_versions_are_dropped_silently(version: int, fields: dict[str, int]) -> None:
    p = Pair()
    request = with_version(sa_init_request(p), version, **fields)
    p.dispatcher.receive(request, ADDR_I, p.now)
    assert p.dispatcher.replies == []
    assert p.dispatcher.drops["unsupported_version"] == 1
    assert p.dispatcher.half_open_count == 0


def test_answer_is_never_larger_than_the_request() -> None:
    p = Pair()
    bare_header = with_version(sa_init_request(p), 0x30)[:28]  # 28 octets; the answer is 36
    p.dispatcher.receive(bare_header, ADDR_I, p.now)
    assert p.dispatcher.replies == []
    assert p.dispatcher.drops["stateless_limit"] == 1


def test_stateless_answers_are_rate_limited_per_second() -> None:
    p = Pair(dispatcher_opts={"stateless_rate": 3})
    request = with_version(sa_init_request(p), 0x30)
    for _ in range(5):
        p.dispatcher.receive(request, ADDR_I, p.now)
    assert len(p.dispatcher.replies) == 3
    assert p.dispatcher.drops["stateless_limit"] == 2
    p.dispatcher.receive(request, ADDR_I, p.now + 1.0)  # a new second, a new allowance
    assert len(p.dispatcher.replies) == 4


def test_undrained_replies_are_bounded() -> None:
    p = Pair(dispatcher_opts={"max_replies": 2})
    request = with_version(sa_init_request(p), 0x30)
    for n in range(4):
        p.dispatcher.receive(request, ADDR_I, p.now + n)  # each in its own second
    assert len(p.dispatcher.replies) == 2
    assert p.dispatcher.drops["stateless_limit"] == 2


def test_cookies_share_the_rate_limit() -> None:
    p = Pair(dispatcher_opts={"cookie_threshold": 0, "stateless_rate": 1})
    request = sa_init_request(p)
    p.dispatcher.receive(request, ADDR_I, p.now)
    p.dispatcher.receive(request, ADDR_I, p.now)
    assert p.dispatcher.drops["cookie_sent"] == 1
    assert p.dispatcher.drops["stateless_limit"] == 1
    assert len(p.dispatcher.replies) == 1


def test_our_initiator_fails_cleanly_on_invalid_major_version() -> None:
    p = Pair()
    request = with_version(sa_init_request(p), 0x30)
    p.dispatcher.receive(request, ADDR_I, p.now)
    (reply,) = p.dispatcher.replies
    p.i.receive_datagram(reply.data, p.addr_r, p.now)
    assert p.i.state is State.CLOSED
    failed = [e for e in iter(p.i.next_event, None) if isinstance(e, ev.NegotiationFailed)]
    assert failed and "INVALID_MAJOR_VERSION" in failed[0].reason


def test_version_2_exchange_unaffected() -> None:
    p = Pair()
    p.connect()
    established(p)
    assert decode_header(p.wire.log[0][1]).version == 0x20
    assert p.dispatcher.drops["unsupported_version"] == 0


def test_ike_rekeys_do_not_grow_the_spi_table() -> None:
    """Each IKE rekey adds our new SPI; the old one must go once its SA is deleted."""
    pair = Pair()
    pair.connect()
    for _ in range(3):
        pair.i.rekey_ike(pair.now)
        pair.run()
        pair.advance(1)
    assert pair.r.retiring == []
    assert pair.r.sa is not None
    mine = sorted(spi for spi, s in pair.dispatcher.by_spi.items() if s is pair.r)
    assert mine == [pair.r.sa.spi_r]
    pair.dispatcher.forget(pair.r)
    assert pair.r not in pair.dispatcher.by_spi.values()
