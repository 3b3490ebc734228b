"""Interop bugs found against a real strongSwan (tests/netns/test_ike_interop.py), each
pinned here in memory, where possible with the bytes strongSwan sent (tests/ike/vectors)."""

from __future__ import annotations

import json
from pathlib import Path

from ike.codec import decode
from ike.constants import ExchangeType, NotifyType, ProtocolId
from ike.crypto.proposals import describe, parse_proposal
from ike.payloads import KePayload, Message, NoncePayload, Proposal, SaPayload
from ike.session import events as ev
from ike.session.ikerekey import RekeyIkeTask, respond_ike_rekey
from ike.session.session import IkeSession
from tests.ike.harness import ADDR_I, ADDR_R, T0, Pair, make_config, seeded, seeded_ke

VECTOR = Path(__file__).parent / "vectors" / "strongswan-aes256gcm16-prfsha256-ecp256"
SW_INITIATOR = ("192.0.2.1", 500)
US = ("198.51.100.1", 500)


def strongswan_datagrams() -> list[bytes]:
    """strongSwan's IKE messages of the captured exchange (non-ESP marker stripped)."""
    out = []
    for e in json.loads((VECTOR / "exchange.json").read_text()):
        if e["kind"] == "ike":
            raw = bytes.fromhex(e["hex"])
            out.append(raw[4:] if e["non_esp_marker"] else raw)
    return out


def responder() -> IkeSession:
    cfg = make_config(
        local_id=US[0], remote_id=SW_INITIATOR[0], ike=("aes256gcm16-prfsha256-ecp256",)
    )
    return IkeSession(
        cfg,
        initiator=False,
        local_addr=US,
        remote_addr=SW_INITIATOR,
        now=T0,
        rng=seeded(7),
        ke_factory=seeded_ke(7),
    )


def test_ike_sa_init_response_announces_childless_support() -> None:
    """strongSwan with ``childless = force`` refused us ("peer does not support childless
    IKE_SA initiation"): RFC 6023 wants CHILDLESS_IKEV2_SUPPORTED in our IKE_SA_INIT answer."""
    s = responder()
    s.receive_datagram(strongswan_datagrams()[0], SW_INITIATOR, T0)
    (answer,) = s.datagrams_to_send()
    assert decode(answer.data).notify(NotifyType.CHILDLESS_IKEV2_SUPPORTED) is not None


# ------------------------------------------------ IKE SA rekeys keep the PRF

IKE_A = "aes256gcm16-prfsha256-x25519"
IKE_B = "aes256gcm16-prfsha384-x25519"  # same KE group, another PRF


def pair_on_b() -> Pair:
    """Both sides accept A and B; the responder prefers B, so the IKE SA runs on B."""
    p = Pair(
        make_config(ike=(IKE_A, IKE_B)),
        make_config(local_id=ADDR_R[0], remote_id=ADDR_I[0], ike=(IKE_B, IKE_A)),
    )
    p.connect()
    assert p.i.state.value == "established" and p.i.sa and p.i.sa.proposal
    assert describe(p.i.sa.proposal).endswith("PRF_HMAC_SHA2_384/CURVE_25519")
    return p


def test_ike_rekey_offers_only_the_current_algorithms() -> None:
    """Offering our whole list let strongSwan pick another PRF; it then ran prf+ with the
    old PRF and we (RFC 7296 §2.18) with the new one: the rekeyed IKE SA was dead."""
    p = pair_on_b()
    sa = p.i.sa
    assert sa is not None and sa.proposal is not None
    payloads = RekeyIkeTask().build(p.i, sa, p.now)
    assert payloads is not None
    (offer,) = next(x for x in payloads if isinstance(x, SaPayload)).proposals
    assert describe(offer) == describe(sa.proposal) and len(offer.spi) == 8


def test_ike_rekey_responder_keeps_the_current_algorithms() -> None:
    """strongSwan offers its whole list when it rekeys; we used to pick our favourite."""
    p = pair_on_b()
    s, sa = p.i, p.i.sa
    assert sa is not None and sa.keys is not None and sa.proposal is not None
    group = sa.keys.suite.ke_group
    offer = [
        Proposal(
            n, ProtocolId.IKE, bytes([n]) * 8, list(parse_proposal(text, ProtocolId.IKE).transforms)
        )
        for n, text in ((1, IKE_A), (2, IKE_B))
    ]
    sa_p, nonce = SaPayload(offer), NoncePayload(bytes(32))
    ke = KePayload(group, seeded_ke(99)(group).public_bytes())
    msg = Message(sa.spi_i, sa.spi_r, ExchangeType.CREATE_CHILD_SA, 0, 9, [sa_p, nonce, ke])
    answer = respond_ike_rekey(s, sa, msg, sa_p, nonce, p.now)
    (chosen,) = next(x for x in answer if isinstance(x, SaPayload)).proposals
    assert chosen.num == 2 and describe(chosen) == describe(sa.proposal)


def test_ike_rekey_by_either_side_keeps_the_prf() -> None:
    p = pair_on_b()
    p.r.rekey_ike(p.now)
    p.run()
    p.i.rekey_ike(p.now)
    p.run()
    rekeys = p.of("i", ev.IkeSaRekeyed)
    assert len(rekeys) == 2
    assert all(r.proposal.endswith("PRF_HMAC_SHA2_384/CURVE_25519") for r in rekeys)
    assert p.i.state.value == p.r.state.value == "established"


def test_ike_sa_up_reports_the_nat_t_port() -> None:
    """strongSwan with kernel-libipsec always fakes a NAT, so every SA moves to 4500; the
    IkeSaUp event still named port 500 (ChildSaInfo had it right)."""
    p = Pair(make_config(force_udp_encap=True))
    p.connect()
    for side in ("i", "r"):
        (up,) = p.of(side, ev.IkeSaUp)
        (child,) = p.of(side, ev.ChildSaUp)
        assert up.local_addr[1] == 4500 == child.child.local_addr[1]
