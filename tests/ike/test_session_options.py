"""Session options the daemon relies on: forced UDP encapsulation, INITIAL_CONTACT only
when we hold no other IKE SA with the peer."""

from __future__ import annotations

from ike.codec import decode, decode_header
from ike.constants import ExchangeType, NotifyType
from ike.session import events as ev
from tests.ike.harness import Pair, make_config


def _init_request_notifies(pair: Pair) -> set[int]:
    for direction, data in pair.wire.log:
        hdr = decode_header(data)
        if direction == "i->r" and hdr.exchange == ExchangeType.IKE_SA_INIT:
            return {n.notify_type for n in decode(data).notifies()}
    raise AssertionError("no IKE_SA_INIT request on the wire")


def test_without_nat_children_use_plain_esp() -> None:
    pair = Pair()
    pair.connect()
    (up,) = pair.of("i", ev.ChildSaUp)
    assert up.child.udp_encap is False
    assert pair.i.nat_local is False and pair.r.nat_remote is False


def test_force_udp_encap_makes_both_sides_encapsulate() -> None:
    pair = Pair(cfg_i=make_config(force_udp_encap=True))
    pair.connect()
    assert NotifyType.NAT_DETECTION_SOURCE_IP in _init_request_notifies(pair)
    (up_i,) = pair.of("i", ev.ChildSaUp)
    (up_r,) = pair.of("r", ev.ChildSaUp)
    # Our faked source hash makes the responder see a NAT in front of us; we act as if
    # we were behind one, so both ends carry ESP in UDP on the NAT-T port.
    assert pair.r.nat_remote is True and pair.i.nat_local is True
    assert up_i.child.udp_encap and up_r.child.udp_encap
    assert up_i.child.local_addr[1] == 4500 and up_r.child.local_addr[1] == 4500


def test_initial_contact_sent_when_owner_holds_no_other_sa() -> None:
    pair = Pair()
    pair.i.other_sas = lambda: False
    pair.connect()
    (up,) = pair.of("r", ev.IkeSaUp)
    assert up.initial_contact is True


def test_initial_contact_withheld_when_owner_holds_another_sa() -> None:
    pair = Pair()
    pair.i.other_sas = lambda: True
    pair.connect()
    (up,) = pair.of("r", ev.IkeSaUp)
    assert up.initial_contact is False
