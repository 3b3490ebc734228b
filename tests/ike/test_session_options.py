"""Session options the daemon relies on: forced UDP encapsulation, ESP in UDP agreed
between two gatewayd, INITIAL_CONTACT only when we hold no other IKE SA with the peer."""

from __future__ import annotations

import pytest

from ike.codec import decode, decode_header
from ike.constants import ExchangeType, NotifyType
from ike.payloads import VendorPayload
from ike.session import events as ev
from ike.session.init import GATEWAYD_VENDOR_ID
from tests.ike.harness import ADDR_I, ADDR_R, Pair, make_config


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


def _vendor_ids(pair: Pair, direction: str) -> list[bytes]:
    for d, data in pair.wire.log:
        if d == direction and decode_header(data).exchange == ExchangeType.IKE_SA_INIT:
            return [p.vid for p in decode(data).payloads if isinstance(p, VendorPayload)]
    raise AssertionError(f"no IKE_SA_INIT {direction} on the wire")


@pytest.mark.parametrize(
    ("on_i", "on_r", "udp"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_gatewayd_peers_agree_on_esp_in_udp(on_i: bool, on_r: bool, udp: bool) -> None:
    """Both announce the Vendor ID: the responder fakes NAT-D and both carry ESP in UDP.
    Either side without it (any other implementation) keeps plain ESP."""
    pair = Pair(
        cfg_i=make_config(udp_encap_with_gatewayd=on_i),
        cfg_r=make_config(local_id=ADDR_R[0], remote_id=ADDR_I[0], udp_encap_with_gatewayd=on_r),
    )
    pair.connect()
    assert _vendor_ids(pair, "i->r") == ([GATEWAYD_VENDOR_ID] if on_i else [])
    assert _vendor_ids(pair, "r->i") == ([GATEWAYD_VENDOR_ID] if on_r else [])
    (up_i,) = pair.of("i", ev.ChildSaUp)
    (up_r,) = pair.of("r", ev.ChildSaUp)
    assert up_i.child.udp_encap is udp and up_r.child.udp_encap is udp
    assert pair.i.nat_remote is udp and pair.r.nat_local is udp
    assert pair.i.nat_local is False and pair.r.nat_remote is False  # no NAT invented there
    if udp:
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
