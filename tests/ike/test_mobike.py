"""MOBIKE (RFC 4555) between two engine sessions: the initiator moves, the SAs stay."""

from __future__ import annotations

import pytest

from ike.codec import decode_header, encode_protected, open_protected
from ike.constants import ExchangeType, HeaderFlag, NotifyType
from ike.errors import IkeError
from ike.payloads import Message, NotifyPayload, Payload
from ike.session import events as ev
from ike.session.init import nat_hash
from ike.session.mobike import UpdateAddressesTask
from ike.session.session import Datagram, IkeSession, State, Task
from ike.session.state import IkeSa
from tests.ike import test_p2s_eap as eap
from tests.ike.harness import ADDR_I, ADDR_R, Pair, make_config

NEW_I = ("192.0.2.77", 500)  # the initiator's address after the move
NAT_PUBLIC = ("203.0.113.50", 4500)  # what a NAT in front of the initiator shows
NAT_T = 4500


def opened(s: IkeSession, data: bytes) -> Message:
    """A protected message decrypted with ``s``'s inbound keys (s is its receiver)."""
    assert s.sa is not None and s.sa.keys is not None
    return open_protected(data, s.sa.keys.crypto_in)


def exchanges(p: Pair, direction: str, exchange: int) -> list[bytes]:
    return [
        d for dirn, d in p.wire.log if dirn == direction and decode_header(d).exchange == exchange
    ]


def established() -> Pair:
    p = Pair()
    p.connect()
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    return p


def move(p: Pair, local: tuple[str, int], seen_as: tuple[str, int] | None = None) -> None:
    """The initiator's address changes to ``local``; the responder sees ``seen_as`` (a NAT)."""
    p.i.update_addresses(local, p.now)
    p.addr_i = seen_as or local
    p.run()


class Recorder:
    """Filter: delivers everything and remembers where each datagram was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Datagram]] = []

    def __call__(self, direction: str, g: Datagram) -> list[Datagram]:
        self.sent.append((direction, g))
        return [g]


# ------------------------------------------------------------------------ negotiation


def test_mobike_supported_in_ike_auth_both_ways() -> None:
    p = established()
    request = opened(p.r, exchanges(p, "i->r", ExchangeType.IKE_AUTH)[0])
    response = opened(p.i, exchanges(p, "r->i", ExchangeType.IKE_AUTH)[0])
    assert request.notify(NotifyType.MOBIKE_SUPPORTED) is not None
    assert response.notify(NotifyType.MOBIKE_SUPPORTED) is not None
    assert p.i.mobike and p.r.mobike


@pytest.mark.parametrize("disabled", ["initiator", "responder"])
def test_disabled_mobike_sends_no_notify_and_refuses_updates(disabled: str) -> None:
    off = make_config(mobike=False) if disabled == "initiator" else None
    off_r = (
        make_config(local_id=ADDR_R[0], remote_id=ADDR_I[0], mobike=False)
        if disabled == "responder"
        else None
    )
    p = Pair(off, off_r)
    p.connect()
    assert p.i.state is State.ESTABLISHED
    request = opened(p.r, exchanges(p, "i->r", ExchangeType.IKE_AUTH)[0])
    response = opened(p.i, exchanges(p, "r->i", ExchangeType.IKE_AUTH)[0])
    assert (request.notify(NotifyType.MOBIKE_SUPPORTED) is None) is (disabled == "initiator")
    assert response.notify(NotifyType.MOBIKE_SUPPORTED) is None
    assert not p.i.mobike and not p.r.mobike
    with pytest.raises(IkeError, match="not negotiated"):
        p.i.update_addresses(NEW_I, p.now)
    # Sent anyway (a peer that ignores the negotiation): answered, nothing moves.
    p.i.enqueue(UpdateAddressesTask(p.i.remote_addr), p.now)
    p.addr_i = NEW_I
    p.run()
    assert p.r.remote_addr == ADDR_I
    assert not p.of("r", ev.PeerAddressChanged)
    assert p.r.drops["mobike_refused"] == 1
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED


def test_mobike_negotiated_with_eap_in_final_response() -> None:
    ca = eap.pki.make_ca("CN=Test Root,O=gatewayd", "p256")
    p = eap.connect(eap.client(ca, "alice", "alice-secret"), eap.gateway(ca, eap.pool()))
    assert p.i.state is State.ESTABLISHED
    auth = exchanges(p, "r->i", ExchangeType.IKE_AUTH)
    *rounds, final = [opened(p.i, d) for d in auth]
    assert final.notify(NotifyType.MOBIKE_SUPPORTED) is not None
    assert all(m.notify(NotifyType.MOBIKE_SUPPORTED) is None for m in rounds)
    assert p.i.mobike and p.r.mobike


# ------------------------------------------------------------------------ the move


def test_update_moves_the_sa_and_keeps_spis() -> None:
    p = established()
    spis_i, spis_r = p.i.spis, p.r.spis
    children_i = {c.spi_in for c in p.i.children.values()}
    children_r = {c.spi_in for c in p.r.children.values()}
    rec = Recorder()
    p.filter = rec
    move(p, NEW_I)

    (moved,) = p.of("r", ev.PeerAddressChanged)
    # The initiator floated to the NAT-T port for the update (RFC 4555 §3.3).
    assert moved == ev.PeerAddressChanged(ADDR_I, (NEW_I[0], NAT_T), False)
    (ours,) = p.of("i", ev.PeerAddressChanged)
    assert ours == ev.PeerAddressChanged(ADDR_R, (ADDR_R[0], NAT_T), False)
    assert p.r.remote_addr == (NEW_I[0], NAT_T)
    assert (p.i.spis, p.r.spis) == (spis_i, spis_r)
    assert {c.spi_in for c in p.i.children.values()} == children_i
    assert {c.spi_in for c in p.r.children.values()} == children_r
    assert not p.of("r", ev.ChildSaDown) and not p.of("i", ev.ChildSaDown)

    # The wire: UPDATE_SA_ADDRESSES, NAT detection and COOKIE2 each way, cookie echoed,
    # the answer to the new address from our NAT-T port.
    (req_g,) = [g for d, g in rec.sent if d == "i->r"]
    (resp_g,) = [g for d, g in rec.sent if d == "r->i"]
    req, resp = opened(p.r, req_g.data), opened(p.i, resp_g.data)
    assert req.notify(NotifyType.UPDATE_SA_ADDRESSES) is not None
    assert resp_g.remote == (NEW_I[0], NAT_T) and resp_g.local_port == NAT_T
    cookie = req.notify(NotifyType.COOKIE2)
    echo = resp.notify(NotifyType.COOKIE2)
    assert cookie is not None and echo is not None and echo.data == cookie.data
    assert 8 <= len(cookie.data) <= 64
    assert p.r.sa is not None
    spi_i, spi_r = p.r.sa.spi_i, p.r.sa.spi_r
    src = req.notify(NotifyType.NAT_DETECTION_SOURCE_IP)
    assert src is not None and src.data == nat_hash(spi_i, spi_r, (NEW_I[0], NAT_T))
    r_src = resp.notify(NotifyType.NAT_DETECTION_SOURCE_IP)
    assert r_src is not None and r_src.data == nat_hash(spi_i, spi_r, (ADDR_R[0], NAT_T))

    # Afterwards the responder's own requests go to the new address.
    rec.sent.clear()
    p.r.liveness_check(p.now)
    p.run()
    dpd = [g for d, g in rec.sent if d == "r->i"]
    assert dpd and all(g.remote == (NEW_I[0], NAT_T) for g in dpd)
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED


def test_child_rekey_after_move_uses_new_addresses() -> None:
    p = established()
    move(p, NEW_I)
    child = next(iter(p.r.children.values()))
    p.r.rekey_child(child.child_id, p.now)
    p.run()
    (rekeyed,) = p.of("r", ev.ChildSaRekeyed)
    assert rekeyed.child.remote_addr == (NEW_I[0], NAT_T)
    assert rekeyed.child.udp_encap is False


def test_message_from_elsewhere_moves_nothing() -> None:
    """Without UPDATE_SA_ADDRESSES an authenticated request from a new address is
    answered there, but the SA stays where it was (even behind a NAT)."""
    p = established()
    p.r.nat_remote = True  # NAT-T rules would follow it; MOBIKE must not
    rec = Recorder()
    p.filter = rec
    p.addr_i = NEW_I
    p.i.liveness_check(p.now)
    p.run()
    (answer,) = [g for d, g in rec.sent if d == "r->i"]
    assert answer.remote == NEW_I
    assert p.r.remote_addr == ADDR_I
    assert not p.of("r", ev.PeerAddressChanged)


def test_garbled_update_is_ignored_then_retransmission_accepted() -> None:
    p = established()
    garbled: list[bytes] = []

    def corrupt_first_update(direction: str, g: Datagram) -> list[Datagram]:
        if direction == "i->r" and not garbled:
            bad = bytearray(g.data)
            bad[-1] ^= 0x01  # the ICV no longer verifies
            garbled.append(bytes(bad))
            return [Datagram(bytes(bad), g.local_port, g.remote)]
        return [g]

    p.filter = corrupt_first_update
    move(p, NEW_I)
    assert garbled
    assert p.r.drops["bad_icv"] == 1
    assert p.r.remote_addr == ADDR_I and not p.of("r", ev.PeerAddressChanged)
    assert not p.of("i", ev.PeerAddressChanged)
    p.advance(p.cfg_i.retransmit.timeout + 0.1)  # the initiator retransmits, intact
    assert p.r.remote_addr == (NEW_I[0], NAT_T)
    assert len(p.of("r", ev.PeerAddressChanged)) == 1
    assert len(p.of("i", ev.PeerAddressChanged)) == 1


def test_lost_response_is_resent_from_cache_and_applied_once() -> None:
    p = established()
    dropped: list[Datagram] = []

    def drop_first_answer(direction: str, g: Datagram) -> list[Datagram]:
        if direction == "r->i" and not dropped:
            dropped.append(g)
            return []
        return [g]

    p.filter = drop_first_answer
    move(p, NEW_I)
    assert dropped and not p.of("i", ev.PeerAddressChanged)
    assert len(p.of("r", ev.PeerAddressChanged)) == 1
    p.advance(p.cfg_i.retransmit.timeout + 0.1)
    assert len(p.of("i", ev.PeerAddressChanged)) == 1
    assert len(p.of("r", ev.PeerAddressChanged)) == 1  # the cache answered, not a redo
    assert p.r.remote_addr == (NEW_I[0], NAT_T)


def test_nat_detection_toggles_udp_encapsulation() -> None:
    p = established()
    assert not (p.r.nat_local or p.r.nat_remote)
    # Behind a NAT: the responder sees another address than the initiator hashed.
    move(p, ("10.9.9.9", 500), seen_as=NAT_PUBLIC)
    (to_nat,) = p.of("r", ev.PeerAddressChanged)
    assert to_nat.new == NAT_PUBLIC and to_nat.udp is True
    assert p.r.nat_remote and not p.r.nat_local
    assert p.i.nat_local and p.of("i", ev.PeerAddressChanged)[-1].udp is True
    # Child SAs negotiated now carry ESP in UDP.
    child = next(iter(p.i.children.values()))
    p.i.rekey_child(child.child_id, p.now)
    p.run()
    assert p.of("r", ev.ChildSaRekeyed)[-1].child.udp_encap is True
    # Out from behind the NAT again: plain ESP, IKE stays on port 4500.
    move(p, ADDR_I)
    back = p.of("r", ev.PeerAddressChanged)[-1]
    assert back == ev.PeerAddressChanged(NAT_PUBLIC, (ADDR_I[0], NAT_T), False)
    assert not (p.r.nat_local or p.r.nat_remote) and p.r.use_nat_t_port
    assert p.of("i", ev.PeerAddressChanged)[-1].udp is False


def test_cookie2_mismatch_is_not_an_answer() -> None:
    p = established()

    def change_echo(direction: str, g: Datagram) -> list[Datagram]:
        if direction != "r->i" or decode_header(g.data).exchange != ExchangeType.INFORMATIONAL:
            return [g]
        msg = opened(p.i, g.data)
        payloads: list[Payload] = [
            NotifyPayload(NotifyType.COOKIE2, bytes(16))
            if isinstance(x, NotifyPayload) and x.notify_type == NotifyType.COOKIE2
            else x
            for x in msg.payloads
        ]
        assert p.r.sa is not None and p.r.sa.keys is not None
        forged = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id, payloads)
        return [Datagram(encode_protected(forged, p.r.sa.keys.crypto_out), g.local_port, g.remote)]

    p.filter = change_echo
    move(p, NEW_I)
    assert p.i.drops["cookie2_mismatch"] == 1
    assert not p.of("i", ev.PeerAddressChanged)
    assert p.i.state is State.ESTABLISHED


def test_only_the_original_initiator_moves() -> None:
    p = established()
    with pytest.raises(IkeError, match="original initiator"):
        p.r.update_addresses(("198.51.100.9", 500), p.now)


class _Informational(Task):
    """An INFORMATIONAL request carrying the given payloads (peer-made address lists)."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (test)"

    def __init__(self, payloads: list[Payload]) -> None:
        self.payloads = payloads
        self.answer: Message | None = None

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        return self.payloads

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        self.answer = msg


def test_additional_addresses_are_accepted_and_ignored() -> None:
    p = established()
    many: list[Payload] = [
        NotifyPayload(NotifyType.ADDITIONAL_IP4_ADDRESS, bytes([192, 0, 2, n])) for n in range(60)
    ]
    many += [
        NotifyPayload(NotifyType.ADDITIONAL_IP6_ADDRESS, bytes(15) + b"\x01"),
        NotifyPayload(NotifyType.NO_ADDITIONAL_ADDRESSES),
    ]
    task = _Informational(many)
    p.i.enqueue(task, p.now)
    p.run()
    assert task.answer is not None and task.answer.payloads == []
    assert task.answer.flags & HeaderFlag.RESPONSE
    assert p.r.remote_addr == ADDR_I and not p.of("r", ev.PeerAddressChanged)
    assert p.r.state is State.ESTABLISHED


def test_bad_cookie2_length_is_invalid_syntax() -> None:
    p = established()
    assert p.i.sa is not None
    task = _Informational(
        [NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES), NotifyPayload(NotifyType.COOKIE2, b"x")]
    )
    p.i.enqueue(task, p.now)
    p.addr_i = NEW_I
    p.run()
    assert task.answer is not None
    assert task.answer.notify(NotifyType.INVALID_SYNTAX) is not None
    assert p.r.remote_addr == ADDR_I and not p.of("r", ev.PeerAddressChanged)


def test_initiator_behind_nat_does_not_offer_mobike() -> None:
    """Our initiator does not watch its NAT mapping (§3.8), so it keeps the responder
    following mapping changes implicitly by not offering MOBIKE from behind a NAT."""
    p = Pair(make_config(force_udp_encap=True))  # looks like a NAT in front of us
    p.connect()
    assert p.i.state is State.ESTABLISHED and p.i.nat_local
    request = opened(p.r, exchanges(p, "i->r", ExchangeType.IKE_AUTH)[0])
    assert request.notify(NotifyType.MOBIKE_SUPPORTED) is None
    assert not p.i.mobike and not p.r.mobike


def test_liveness_check_with_nat_detection_is_answered_with_ours() -> None:
    """RFC 4555 §3.8: an initiator behind a NAT asks where we see it; nothing moves."""
    p = established()
    assert p.r.sa is not None
    spi_i, spi_r = p.r.sa.spi_i, p.r.sa.spi_r
    seen = ("203.0.113.60", 500)
    task = _Informational(
        [
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, nat_hash(spi_i, spi_r, ADDR_I)),
            NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(spi_i, spi_r, ADDR_R)),
        ]
    )
    p.i.enqueue(task, p.now)
    p.addr_i = seen  # the NAT mapping moved
    p.run()
    assert task.answer is not None
    dst = task.answer.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    src = task.answer.notify(NotifyType.NAT_DETECTION_SOURCE_IP)
    assert dst is not None and dst.data == nat_hash(spi_i, spi_r, seen)
    assert src is not None and src.data == nat_hash(spi_i, spi_r, ADDR_R)
    assert p.r.remote_addr == ADDR_I and not p.of("r", ev.PeerAddressChanged)


def test_mobike_initiator_still_follows_a_responder_nat_mapping() -> None:
    """Only the initiator moves with updates; a NATed responder's mapping is followed."""
    p = established()
    p.i.nat_remote = True
    moved = ("198.51.100.3", 500)
    p.addr_r = moved
    p.r.liveness_check(p.now)
    p.run()
    assert p.i.remote_addr == moved


def test_remote_access_client_keeps_virtual_ip_and_child_when_it_moves() -> None:
    ca = eap.pki.make_ca("CN=Test Root,O=gatewayd", "p256")
    p = eap.connect(eap.client(ca, "alice", "alice-secret"), eap.gateway(ca, eap.pool()))
    (given,) = p.of("r", ev.VirtualIpAssigned)
    children = {c.spi_in for c in p.r.children.values()}
    move(p, NEW_I)
    assert p.of("r", ev.PeerAddressChanged)[-1].new == (NEW_I[0], NAT_T)
    assert p.of("r", ev.VirtualIpAssigned) == [given]  # no new lease, no release
    assert {c.spi_in for c in p.r.children.values()} == children
    assert not p.of("r", ev.ChildSaDown) and not p.of("r", ev.IkeSaDown)


def test_responder_follows_a_mobike_initiator_floating_to_4500_without_nat() -> None:
    """A MOBIKE initiator (strongSwan) moves IKE to port 4500 at IKE_AUTH even without a
    NAT (RFC 4555 §3.3): answer from 4500, keep ESP unencapsulated."""
    p = Pair()
    rec = Recorder()

    def float_after_init(direction: str, g: Datagram) -> list[Datagram]:
        if direction == "i->r" and decode_header(g.data).exchange != ExchangeType.IKE_SA_INIT:
            g = Datagram(g.data, NAT_T, g.remote)
        return rec(direction, g)

    p.filter = float_after_init
    p.connect()
    assert p.r.state is State.ESTABLISHED
    assert p.r.floated and p.r.remote_addr == (ADDR_I[0], NAT_T)
    auth_answers = [
        g
        for d, g in rec.sent
        if d == "r->i" and decode_header(g.data).exchange == ExchangeType.IKE_AUTH
    ]
    assert auth_answers and all(g.local_port == NAT_T for g in auth_answers)
    assert all(g.remote == (ADDR_I[0], NAT_T) for g in auth_answers)
    (up,) = p.of("r", ev.ChildSaUp)
    assert up.child.udp_encap is False and up.child.remote_addr == (ADDR_I[0], NAT_T)
    assert p.of("r", ev.IkeSaUp)[0].local_addr == (ADDR_R[0], NAT_T)
