"""Hostile datagrams to live sessions in every state of their life (hypothesis).

Each example builds a real pair (tests.ike.harness: seeded randomness, fixed clock), stops
it in one state with the real messages of the exchange under way held back, and feeds the
session under test random bytes, mutations of those real messages, or validly framed
protected messages with a bad ICV. Nothing may escape receive_datagram() or
Dispatcher.receive(); whatever the session cannot use must leave its state exactly as it
was (and emit no event); afterwards the held messages are delivered and the pair must
still finish its exchange, rekey a Child SA and answer a liveness check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ike.codec import decode, encode_protected
from ike.constants import ExchangeType, HeaderFlag, NotifyType, ProtocolId
from ike.crypto.proposals import parse_proposal
from ike.crypto.suite import IkeSuite
from ike.errors import DecodeError
from ike.fragments import fragment
from ike.payloads import DeletePayload, Message, NoncePayload, NotifyPayload, VendorPayload
from ike.session import events as ev
from ike.session.auth import AuthTask
from ike.session.init import InitTask
from ike.session.session import Datagram, IkeSession, State
from ike.session.state import ChildState, IkeSa
from tests.ike.harness import Pair, seeded
from tests.ike.test_session import keys_agree

# 9 scenes x 3 input kinds; each example builds a pair (~2 ms) and feeds up to 6 inputs.
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Held = list[tuple[str, Datagram]]


@dataclass
class Scene:
    pair: Pair
    target: IkeSession
    held: Held  # the real messages in flight, delivered once the fuzzing is over
    captured: list[bytes]  # real messages of this pair: the material mutations start from
    done: Callable[[Pair], None] = lambda p: None  # checks once the held messages arrived
    fresh: list[bytes] = field(default_factory=list)  # real messages the session may act on
    emitted: list[ev.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The held messages may be acted on; every other captured one is an old message
        # (or one of the session's own), whose replay must change nothing.
        self.fresh += _data(self.held)
        self.captured += [d for d in self.fresh if d not in self.captured]

    @property
    def side(self) -> str:
        return "i" if self.target is self.pair.i else "r"

    def feed(self, data: bytes) -> None:
        p = self.pair
        if self.side == "i":
            p.i.receive_datagram(data, p.addr_r, p.now)
        elif p.dispatcher.receive(data, p.addr_i, p.now) is not self.target:
            # The dispatcher kept it from the session: the session must cope on its own too.
            self.target.receive_datagram(data, p.addr_i, p.now)

    def may_use(self, data: bytes) -> bool:
        """Could the session legitimately act on this? The real messages it has yet to see,
        and (being unauthenticated) anything passing for the IKE_SA_INIT response it awaits."""
        if data in self.fresh:
            return True
        sa = self.target.sa
        if sa is None or sa.pending is None or not isinstance(sa.pending.task, InitTask):
            return False
        try:
            m = decode(data)
        except DecodeError:
            return False
        return (
            m.exchange == ExchangeType.IKE_SA_INIT
            and m.is_response
            and m.message_id == 0
            and m.spi_i == sa.spi_i
        )


# ---------------------------------------------------------------- observable state


def _sa_state(sa: IkeSa) -> tuple[Any, ...]:
    k = sa.keys
    keys = None if k is None else (k, k.suite, k.sk_d, k.sk_p_ours, k.sk_p_peer, k.crypto_in)
    pending = sa.pending
    return (
        sa.spi_i,
        sa.spi_r,
        sa.initiator,
        sa.ni,
        sa.nr,
        keys,
        sa.proposal,
        sa.next_request_id,
        sa.expected_request_id,
        None if pending is None else (pending.task, pending.message_id, pending.datagrams),
        None if sa.last_response is None else sa.last_response.message_id,
        sa.request_fragments.in_progress,
        sa.response_fragments.in_progress,
        (sa.established_at, sa.rekey_at, sa.expire_at),
    )


def snapshot(s: IkeSession) -> tuple[Any, ...]:
    init = s.init
    return (
        s.state,
        s.config,
        s.initiator,
        s.remote_addr,
        (s.nat_local, s.nat_remote, s.peer_fragmentation, s.peer_hash_algorithms),
        s.last_peer_activity,
        s.half_open_deadline,
        None if s.sa is None else _sa_state(s.sa),
        [_sa_state(r) for r in s.retiring],
        {
            cid: (c.spi_in, c.spi_out, c.state, c.successor, c.suite, c.rekey_at, c.collision)
            for cid, c in s.children.items()
        },
        list(s.queue),
        len(s.delayed),
        s.ike_collision,
        None if init is None else (init.cookie, init.group, init.rounds, init.request),
    )


# ---------------------------------------------------------------- scenes


def _pass(p: Pair, batch: Held) -> Held:
    """Deliver a batch; return what the peers sent in answer (not delivered)."""
    for direction, g in batch:
        p.deliver(direction, g)
    return p.pending()


def _data(*batches: Held) -> list[bytes]:
    return [g.data for batch in batches for _, g in batch]


def _set_up(seed: int, steps: int) -> tuple[Pair, list[Held]]:
    """Start a set-up and pass its messages on ``steps`` times; the last batch is held."""
    p = Pair(seed=seed)
    p.i.initiate(p.now)
    batches = [p.pending()]
    for _ in range(steps):
        batches.append(_pass(p, batches[-1]))
    return p, batches


def init_wait(seed: int) -> Scene:
    """The initiator waits for the IKE_SA_INIT response."""
    p, batches = _set_up(seed, 1)
    return Scene(p, p.i, batches[-1], _data(*batches))


def half_open(seed: int) -> Scene:
    """The responder answered IKE_SA_INIT; IKE_AUTH is on its way."""
    p, batches = _set_up(seed, 2)
    return Scene(p, p.r, batches[-1], _data(*batches))


def auth_wait(seed: int) -> Scene:
    """The initiator waits for the IKE_AUTH response (the responder is established)."""
    p, batches = _set_up(seed, 3)
    return Scene(p, p.i, batches[-1], _data(*batches))


def _connected(seed: int) -> Pair:
    p = Pair(seed=seed)
    p.connect()
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    return p


def established(side: str) -> Callable[[int], Scene]:
    def build(seed: int) -> Scene:
        p = _connected(seed)
        # A twin replays the pair byte for byte: its peer's next requests are exactly what
        # the live peer would send (so mutations of them carry the right SPIs and IDs).
        twin = _connected(seed)
        peer = twin.r if side == "i" else twin.i
        peer.liveness_check(twin.now)
        dpd = twin.pending()
        dpd_answer = _pass(twin, dpd)
        twin.run()
        (child,) = peer.children.values()
        peer.rekey_child(child.child_id, twin.now)
        rekey = twin.pending()
        rekey_answer = _pass(twin, rekey)
        future = _data(dpd, dpd_answer, rekey, rekey_answer)
        old = [d for _, d in p.wire.log]
        return Scene(p, p.i if side == "i" else p.r, [], old, fresh=future)

    return build


def _rekeyed_child(p: Pair) -> None:
    assert len(p.i.children) == 1 and len(p.r.children) == 1
    rekeyed = p.of("i", ev.ChildSaRekeyed)
    assert rekeyed and rekeyed[-1].outbound_now


def child_rekey(side: str) -> Callable[[int], Scene]:
    """The initiator's CREATE_CHILD_SA (rekey) was answered; the answer is in flight."""

    def build(seed: int) -> Scene:
        p = _connected(seed)
        (child,) = p.i.children.values()
        p.i.rekey_child(child.child_id, p.now)
        request = p.pending()
        response = _pass(p, request)
        captured = [d for _, d in p.wire.log]
        return Scene(p, p.i if side == "i" else p.r, response, captured, _rekeyed_child)

    return build


def ike_rekey(side: str) -> Callable[[int], Scene]:
    """The initiator's IKE SA rekey was answered (the responder switched); in flight."""

    def build(seed: int) -> Scene:
        p = _connected(seed)
        old = p.i.spis
        p.i.rekey_ike(p.now)
        request = p.pending()
        response = _pass(p, request)

        def done(p: Pair) -> None:
            assert p.i.spis == p.r.spis and p.i.spis != old
            assert not p.i.retiring and not p.r.retiring

        captured = [d for _, d in p.wire.log]
        return Scene(p, p.i if side == "i" else p.r, response, captured, done)

    return build


SCENES: dict[str, Callable[[int], Scene]] = {
    "init_wait": init_wait,
    "half_open": half_open,
    "auth_wait": auth_wait,
    "established_i": established("i"),
    "established_r": established("r"),
    "child_rekey_i": child_rekey("i"),
    "child_rekey_r": child_rekey("r"),
    "ike_rekey_i": ike_rekey("i"),
    "ike_rekey_r": ike_rekey("r"),
}


# ---------------------------------------------------------------- inputs

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
HEADER_FIELDS: dict[str, tuple[int, int, st.SearchStrategy[int]]] = {
    # name: (offset, size, values worth trying besides the random ones)
    "spi_i": (0, 8, st.just(0)),
    "spi_r": (8, 8, st.just(0)),
    "next_payload": (16, 1, st.sampled_from([0, 33, 41, 46, 53])),
    "version": (17, 1, st.sampled_from([0x10, 0x21, 0x2F, 0x30])),
    "exchange": (18, 1, st.sampled_from([34, 35, 36, 37, 43])),
    "flags": (19, 1, st.sampled_from([0x00, 0x08, 0x20, 0x28])),
    "message_id": (20, 4, st.sampled_from([0, 1, 2, 3, 4, 0xFFFFFFFF])),
    "length": (24, 4, st.sampled_from([0, 28, 0xFFFFFFFF])),
}


@st.composite
def _mutate_once(draw: st.DrawFn, data: bytearray, others: list[bytes]) -> bytearray:
    op = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "field", "plen"]))
    if op == "flip" and data:
        bit = draw(st.integers(0, 8 * len(data) - 1))
        data[bit // 8] ^= 1 << (bit % 8)
    elif op == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif op == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif op == "splice" and data:
        at = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))[: len(data) - at]
        data[at : at + len(chunk)] = chunk
    elif op == "field" and len(data) >= 28:
        name = draw(st.sampled_from(sorted(HEADER_FIELDS)))
        offset, size, special = HEADER_FIELDS[name]
        old = int.from_bytes(data[offset : offset + size], "big")
        if name.startswith("spi") and others:  # an SPI of another real message
            donor = draw(st.sampled_from(others))
            value = int.from_bytes(donor[offset : offset + size], "big")
        else:
            near = st.integers(-2, 2).map(lambda d: (old + d) % (1 << 8 * size))
            value = draw(special | near | st.integers(0, (1 << 8 * size) - 1))
        data[offset : offset + size] = value.to_bytes(size, "big")
    elif op == "plen" and len(data) >= 32:  # the first payload's length
        data[30:32] = draw(u16).to_bytes(2, "big")
    return data


@st.composite
def mutants(draw: st.DrawFn, scene: Scene) -> bytes:
    data = bytearray(draw(st.sampled_from(scene.captured)))
    for _ in range(draw(st.integers(0, 3))):  # none: a replay, which must not count twice
        data = draw(_mutate_once(data, scene.captured))
    if len(data) >= 28 and draw(st.booleans()):
        # Make the length field right again, so that the damage reaches the payloads.
        data[24:28] = len(data).to_bytes(4, "big")
    return bytes(data)


@st.composite
def random_input(draw: st.DrawFn, scene: Scene) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    # A real header (SPIs, exchange, flags, ID) in front of random payload bytes.
    header = bytearray(draw(st.sampled_from(scene.captured))[:28])
    body = draw(st.binary(max_size=400))
    header[24:28] = (28 + len(body)).to_bytes(4, "big")
    return bytes(header) + body


_DEFAULT_SUITE = IkeSuite.from_proposal(
    parse_proposal("aes256gcm16-prfsha256-x25519", ProtocolId.IKE)
)


@st.composite
def bad_icv(draw: st.DrawFn, scene: Scene) -> list[bytes]:
    """Validly framed protected messages (SK, or SKF fragments) the peer never sealed."""
    s = scene.target
    keyed = [sa for sa in (s.sa, *s.retiring) if sa is not None and sa.keys is not None]
    protected = [d for d in scene.captured if len(d) > 28 and d[16] in (46, 53)]
    if protected and draw(st.integers(0, 3)) == 0:
        # A real protected message with one bit of its ICV (or ciphertext) flipped.
        data = bytearray(draw(st.sampled_from(protected)))
        bit = draw(
            st.integers(8 * (len(data) - 16), 8 * len(data) - 1)
            | st.integers(8 * 32, 8 * len(data) - 1)
        )
        data[bit // 8] ^= 1 << (bit % 8)
        return [bytes(data)]
    sa = draw(st.sampled_from(keyed)) if keyed else None
    suite = sa.keys.suite if sa is not None and sa.keys is not None else _DEFAULT_SUITE
    if sa is not None and sa.keys is not None and draw(st.booleans()):
        crypto = sa.keys.crypto_out  # our own message reflected back at us
    else:
        e_len, a_len = suite.key_lengths
        key_e = draw(st.binary(min_size=e_len, max_size=e_len))
        key_a = draw(st.binary(min_size=a_len, max_size=a_len))
        crypto = suite.sk_crypto(key_e, key_a, seeded(draw(u16)))
    if sa is not None:
        spi_i, spi_r = sa.spi_i, sa.spi_r
        peer = 0 if sa.initiator else HeaderFlag.INITIATOR
        # Mostly the very header the session waits for, so that only the ICV can refuse it.
        waiting = [(peer, sa.expected_request_id)]
        if sa.pending is not None:
            waiting.append((peer | HeaderFlag.RESPONSE, sa.pending.message_id))
        header = st.sampled_from(waiting)
    else:
        assert s.sa is not None
        spi_i, spi_r = s.sa.spi_i, draw(st.binary(min_size=8, max_size=8))
        header = st.sampled_from([(HeaderFlag.RESPONSE, 0), (HeaderFlag.RESPONSE, 1)])
    flags, message_id = draw(header | st.tuples(u8, u32))
    spis_out = [c.spi_out.to_bytes(4, "big") for c in s.children.values()]
    payloads = draw(
        st.sampled_from(
            [
                [],
                [DeletePayload(ProtocolId.IKE)],
                [DeletePayload(ProtocolId.ESP, spis_out)],
                [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)],
                [NotifyPayload(NotifyType.TEMPORARY_FAILURE)],
                [NoncePayload(bytes(32)), VendorPayload(bytes(600))],
            ]
        )
    )
    msg = Message(
        spi_i,
        spi_r,
        draw(
            st.sampled_from(
                [ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL]
            )
        ),
        flags,
        message_id,
        payloads,
    )
    if draw(st.booleans()):
        return fragment(msg, crypto, draw(st.integers(120, 400)))
    return [encode_protected(msg, crypto)]


# ---------------------------------------------------------------- the checks


def prove_intact(p: Pair, s: IkeSession) -> None:
    """The session rekeys a Child SA with its peer, and answers the peer's liveness check."""
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    side, peer_side, peer = ("i", "r", p.r) if s is p.i else ("r", "i", p.i)
    (child,) = [c for c in s.children.values() if c.state is ChildState.INSTALLED]
    before = len(p.of(side, ev.ChildSaRekeyed))
    s.rekey_child(child.child_id, p.now)
    p.run()
    rekeyed = p.of(side, ev.ChildSaRekeyed)
    assert len(rekeyed) == before + 1 and rekeyed[-1].outbound_now
    theirs = p.of(peer_side, ev.ChildSaRekeyed)[-1].child
    if side == "i":
        keys_agree(p, rekeyed[-1].child, theirs)
    else:
        keys_agree(p, theirs, rekeyed[-1].child)
    assert len(p.i.children) == 1 and len(p.r.children) == 1
    assert peer.sa is not None
    next_id = peer.sa.next_request_id
    peer.liveness_check(p.now)
    p.run()
    assert peer.sa.next_request_id == next_id + 1 and peer.sa.pending is None
    assert not p.of("i", ev.PeerDead) and not p.of("r", ev.PeerDead)


def attack(scene: Scene, inputs: list[bytes], strict: bool = False) -> None:
    """Feed the inputs, check each one's effect; then finish the exchange and prove the
    pair intact. ``strict``: no input may change anything (e.g. all have a bad ICV)."""
    s = scene.target
    s.log = scene.emitted.append  # every event the session emits, whoever drains them
    changed = False
    for data in inputs:
        before, n_events = snapshot(s), len(scene.emitted)
        usable = not strict and scene.may_use(data)
        scene.feed(data)  # must not raise
        if snapshot(s) == before and len(scene.emitted) == n_events:
            continue
        assert usable, f"state changed by unusable input {data.hex()}"
        if data not in scene.fresh:
            # A forged IKE_SA_INIT response (it is unauthenticated): the initiator gives up
            # or goes on (to IKE_AUTH, or a retry), nothing else.
            assert s.state in (State.CONNECTING, State.CLOSED)
            if s.state is State.CONNECTING:
                assert s.sa is not None and s.sa.pending is not None
                assert isinstance(s.sa.pending.task, InitTask | AuthTask)
        changed = True
    if changed:
        return  # the session acted on a (forged) message: the held ones no longer fit
    p = scene.pair
    if scene.side == "r":
        p.r = s  # the dispatcher may have admitted sessions for forged IKE_SA_INITs
    p.pending()  # drop stray answers (cache resends, sessions for forged requests)
    p.dispatcher.replies.clear()
    for direction, g in scene.held:
        p.deliver(direction, g)
    p.run()
    scene.done(p)
    prove_intact(p, s)


def run(
    name: str, data: st.DataObject, inputs: Callable[[Scene], st.SearchStrategy[bytes]]
) -> None:
    scene = SCENES[name](data.draw(st.integers(1, 3), label="seed"))
    attack(scene, data.draw(st.lists(inputs(scene), min_size=1, max_size=6), label="inputs"))


def _flat(scene: Scene) -> st.SearchStrategy[list[bytes]]:
    return st.lists(bad_icv(scene), min_size=1, max_size=3).map(
        lambda msgs: [d for m in msgs for d in m]
    )


@pytest.mark.parametrize("name", SCENES)
@FUZZ
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    run(name, data, random_input)


@pytest.mark.parametrize("name", SCENES)
@FUZZ
@given(data=st.data())
def test_mutated_real_messages(name: str, data: st.DataObject) -> None:
    run(name, data, mutants)


@pytest.mark.parametrize("name", SCENES)
@FUZZ
@given(data=st.data())
def test_bad_icv_never_changes_state(name: str, data: st.DataObject) -> None:
    scene = SCENES[name](data.draw(st.integers(1, 3), label="seed"))
    attack(scene, data.draw(_flat(scene), label="forged"), strict=True)


@pytest.mark.parametrize("name", SCENES)
def test_untouched_scene_completes(name: str) -> None:
    """The baseline the properties rely on: with no hostile input every scene completes."""
    attack(SCENES[name](1), [])


def test_snapshot_sees_a_real_change() -> None:
    """The state comparison is not blind: a genuine request does change the snapshot."""
    scene = SCENES["half_open"](1)
    before = snapshot(scene.target)
    ((_, auth),) = scene.held
    scene.feed(auth.data)
    assert snapshot(scene.target) != before and scene.target.state is State.ESTABLISHED
