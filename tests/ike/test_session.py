"""Two IkeSessions against each other in memory: every exchange, both roles."""

from __future__ import annotations

import pytest

from ike.constants import EncrId, ExchangeType, NotifyType
from ike.session import events as ev
from ike.session.session import State
from tests.ike.harness import PSK, Pair, make_config


def keys_agree(p: Pair, ci: ev.ChildSaInfo, cr: ev.ChildSaInfo) -> None:
    assert ci.spi_out == cr.spi_in and ci.spi_in == cr.spi_out
    assert ci.encr_key_out == cr.encr_key_in and ci.encr_key_in == cr.encr_key_out
    assert ci.integ_key_out == cr.integ_key_in and ci.integ_key_in == cr.integ_key_out
    assert ci.encr_key_out != ci.encr_key_in


def established(p: Pair) -> tuple[ev.ChildSaInfo, ev.ChildSaInfo]:
    assert p.i.state is State.ESTABLISHED, p.events_i
    assert p.r.state is State.ESTABLISHED, p.events_r
    ci = p.of("i", ev.ChildSaUp)[-1].child
    cr = p.of("r", ev.ChildSaUp)[-1].child
    keys_agree(p, ci, cr)
    return ci, cr


def test_psk_exchange_establishes_ike_and_child() -> None:
    p = Pair()
    p.connect()
    ci, _ = established(p)
    up_i, up_r = p.of("i", ev.IkeSaUp)[0], p.of("r", ev.IkeSaUp)[0]
    assert (up_i.spi_i, up_i.spi_r) == (up_r.spi_i, up_r.spi_r)
    assert up_i.initiator and not up_r.initiator
    assert up_r.initial_contact
    assert up_i.proposal == "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
    assert ci.proposal == "AES_GCM_16_256/NO_EXT_SEQ"
    assert len(ci.encr_key_out) == 36  # 256-bit key + 4-byte salt
    # Four messages: IKE_SA_INIT and IKE_AUTH, request and response each.
    assert len(p.wire.log) == 4


def test_same_seed_replays_byte_for_byte() -> None:
    a, b = Pair(seed=7), Pair(seed=7)
    a.connect()
    b.connect()
    assert a.wire.log == b.wire.log


IKE_MATRIX = [
    "aes128gcm16-prfsha256-ecp256",
    "aes256gcm16-prfsha384-ecp384",
    "aes128gcm16-prfsha256-x25519",
    "aes256gcm16-prfsha512-modp2048",
    "aes256-sha256-modp2048",
    "aes128-sha1-ecp256",
    "aes256-sha384-ecp521",
    "aes256-sha512-x25519",
    "chacha20poly1305-prfsha256-x25519",
]


@pytest.mark.parametrize("ike", IKE_MATRIX)
def test_ike_proposal_matrix(ike: str) -> None:
    p = Pair(
        make_config(ike=(ike,)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1", ike=(ike,)),
    )
    p.connect()
    established(p)


@pytest.mark.parametrize(
    "esp",
    [
        "aes128gcm16",
        "aes256gcm16",
        "aes256-sha256",
        "aes128-sha1",
        "aes256-sha512",
        "chacha20poly1305",
        "aes256gcm16-esn",
    ],
)
def test_esp_proposal_matrix(esp: str) -> None:
    p = Pair(
        make_config(esp=(esp,)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1", esp=(esp,)),
    )
    p.connect()
    ci, _ = established(p)
    assert ci.esn == esp.endswith("-esn")
    if "gcm" not in esp and "chacha" not in esp:
        assert ci.integ_key_out and ci.encr_id == EncrId.AES_CBC


def test_wrong_psk_fails_on_both_sides_with_reason() -> None:
    p = Pair(
        cfg_r=make_config(
            local_id="198.51.100.2", remote_id="192.0.2.1", psk=b"another-long-secret-key-xx"
        )
    )
    p.connect()
    fail_r = p.of("r", ev.AuthFailed)
    fail_i = p.of("i", ev.AuthFailed)
    assert fail_r and "pre-shared key mismatch" in fail_r[0].reason
    assert fail_i and "AUTHENTICATION_FAILED" in fail_i[0].reason
    assert p.i.state is State.CLOSED and p.r.state is State.CLOSED
    assert not p.of("i", ev.ChildSaUp) and not p.of("r", ev.ChildSaUp)


def test_wrong_identity_is_refused() -> None:
    p = Pair(cfg_r=make_config(local_id="198.51.100.2", remote_id="203.0.113.9"))
    p.connect()
    assert "does not match" in p.of("r", ev.AuthFailed)[0].reason
    assert p.of("i", ev.AuthFailed)


def test_no_proposal_chosen_names_both_offers() -> None:
    p = Pair(
        make_config(ike=("aes128gcm16-prfsha256-ecp256",)),
        make_config(
            local_id="198.51.100.2", remote_id="192.0.2.1", ike=("aes256-sha512-modp2048",)
        ),
    )
    p.connect()
    reason = p.of("r", ev.NegotiationFailed)[0].reason
    assert "AES_GCM_16_128" in reason and "AES_CBC_256" in reason
    assert "NO_PROPOSAL_CHOSEN" in p.of("i", ev.NegotiationFailed)[0].reason
    assert p.i.state is State.CLOSED


def test_invalid_ke_payload_retry_with_the_group_the_responder_wants() -> None:
    p = Pair(
        make_config(ike=("aes256gcm16-prfsha256-x25519-ecp256",)),
        make_config(
            local_id="198.51.100.2", remote_id="192.0.2.1", ike=("aes256gcm16-prfsha256-ecp256",)
        ),
    )
    p.connect()
    # The responder that said INVALID_KE kept no state; a new one answered the retry.
    established(p)
    assert p.of("i", ev.IkeSaUp)[0].proposal.endswith("ECP_256")
    assert len(p.wire.log) == 6  # INIT (x25519), INVALID_KE, INIT (ecp256), response, AUTH x2
    assert not p.dispatcher.half_open


def test_esp_no_proposal_keeps_ike_sa_up() -> None:
    p = Pair(
        make_config(esp=("aes128gcm16",)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1", esp=("aes256-sha256",)),
    )
    p.connect()
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    failed = p.of("i", ev.ChildSaFailed)
    assert failed and "NO_PROPOSAL_CHOSEN" in failed[0].reason
    assert "AES_CBC_256" in p.of("r", ev.ChildSaFailed)[0].reason


def test_policy_based_selectors_narrowed_and_extra_children_created() -> None:
    cfg_i = make_config(local_nets=("10.1.0.0/16", "10.3.0.0/16"), remote_nets=("10.2.0.0/16",))
    cfg_r = make_config(
        local_id="198.51.100.2",
        remote_id="192.0.2.1",
        local_nets=("10.2.0.0/16",),
        remote_nets=("10.1.0.0/16", "10.3.0.0/16"),
    )
    p = Pair(cfg_i, cfg_r)
    p.connect()
    ups = p.of("i", ev.ChildSaUp)
    assert len(ups) == 2
    assert {str(c.child.local_ts[0].start_addr) for c in ups} == {"10.1.0.0", "10.3.0.0"}
    assert len(p.of("r", ev.ChildSaUp)) == 2


def test_route_based_responder_narrows_any_to_peer_networks() -> None:
    cfg_i = make_config(local_nets=("10.2.0.0/16",), remote_nets=("10.1.0.0/16",))
    p = Pair(cfg_i, make_config(local_id="198.51.100.2", remote_id="192.0.2.1"))
    p.connect()
    cr = p.of("r", ev.ChildSaUp)[0].child
    assert (
        str(cr.remote_ts[0].start_addr) == "10.2.0.0"
        and str(cr.local_ts[0].start_addr) == "10.1.0.0"
    )


def test_unacceptable_selectors_answer_ts_unacceptable() -> None:
    cfg_i = make_config(local_nets=("10.9.0.0/16",), remote_nets=("10.1.0.0/16",))
    cfg_r = make_config(
        local_id="198.51.100.2",
        remote_id="192.0.2.1",
        local_nets=("10.1.0.0/16",),
        remote_nets=("10.2.0.0/16",),
    )
    p = Pair(cfg_i, cfg_r)
    p.connect()
    assert "TS_UNACCEPTABLE" in p.of("i", ev.ChildSaFailed)[0].reason


# ------------------------------------------------------------------ CREATE_CHILD_SA


@pytest.mark.parametrize("esp", ["aes256gcm16", "aes256gcm16-ecp256", "aes128-sha256-x25519"])
def test_child_rekey_make_before_break(esp: str) -> None:
    p = Pair(
        make_config(esp=(esp,)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1", esp=(esp,)),
    )
    p.connect()
    old_i, _ = established(p)
    p.i.rekey_child(old_i.child_id, p.now)
    p.run()
    rk_i = p.of("i", ev.ChildSaRekeyed)
    rk_r = p.of("r", ev.ChildSaRekeyed)
    assert rk_i and rk_r and rk_i[0].outbound_now and not rk_r[0].outbound_now
    keys_agree(p, rk_i[0].child, rk_r[0].child)
    assert rk_i[0].child.encr_key_out != old_i.encr_key_out
    down_i = p.of("i", ev.ChildSaDown)
    down_r = p.of("r", ev.ChildSaDown)
    assert [d.spi_in for d in down_i] == [old_i.spi_in]
    assert down_r[0].successor == rk_r[0].child.child_id  # responder switches outbound now
    assert len(p.i.children) == 1 and len(p.r.children) == 1


def test_create_additional_child_and_delete_it() -> None:
    p = Pair()
    p.connect()
    established(p)
    from ike.session.child import CreateChildTask

    p.i.enqueue(CreateChildTask(p.cfg_i.children[0]), p.now)
    p.run()
    assert len(p.i.children) == 2 and len(p.r.children) == 2
    second = max(p.i.children)
    p.i.delete_child(second, p.now)
    p.run()
    assert len(p.i.children) == 1 and len(p.r.children) == 1
    assert p.of("r", ev.ChildSaDown)[0].reason == "deleted by peer"


def test_responder_accepts_pfs_it_does_not_require() -> None:
    p = Pair(
        make_config(esp=("aes256gcm16-ecp256",)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1"),
    )
    p.connect()
    old, _ = established(p)
    p.i.rekey_child(old.child_id, p.now)
    p.run()
    assert p.of("i", ev.ChildSaRekeyed), p.events_i


def test_pfs_invalid_ke_retry_on_rekey() -> None:
    p = Pair(
        make_config(esp=("aes256gcm16-x25519-ecp256",)),
        make_config(local_id="198.51.100.2", remote_id="192.0.2.1", esp=("aes256gcm16-ecp256",)),
    )
    p.connect()
    old, _ = established(p)
    p.i.rekey_child(old.child_id, p.now)
    p.run()
    rk = p.of("i", ev.ChildSaRekeyed)
    assert rk and p.of("r", ev.ChildSaRekeyed)
    keys_agree(p, rk[0].child, p.of("r", ev.ChildSaRekeyed)[0].child)


@pytest.mark.parametrize("initiator_rekeys", [True, False])
def test_ike_rekey_moves_children_and_deletes_old_sa(initiator_rekeys: bool) -> None:
    p = Pair()
    p.connect()
    ci, _ = established(p)
    old = p.i.spis
    (p.i if initiator_rekeys else p.r).rekey_ike(p.now)
    p.run()
    assert p.i.spis != old and p.i.spis == p.r.spis
    assert p.of("i", ev.IkeSaRekeyed) and p.of("r", ev.IkeSaRekeyed)
    assert not p.i.retiring and not p.r.retiring
    assert len(p.i.children) == 1 and not p.of("i", ev.ChildSaDown)
    # The children rekey under the new IKE SA's SK_d.
    p.i.rekey_child(ci.child_id, p.now)
    p.run()
    rk = p.of("i", ev.ChildSaRekeyed)
    assert rk
    keys_agree(p, rk[0].child, p.of("r", ev.ChildSaRekeyed)[0].child)


# ------------------------------------------------------------------ INFORMATIONAL


def test_delete_ike_sa_tells_peer() -> None:
    p = Pair()
    p.connect()
    established(p)
    p.i.delete(p.now)
    p.run()
    assert p.i.state is State.CLOSED and p.r.state is State.CLOSED
    assert p.of("r", ev.IkeSaDown)[0].reason == "deleted by peer"
    assert p.of("r", ev.ChildSaDown)


def test_liveness_check_when_idle_and_peer_dead_on_silence() -> None:
    p = Pair(make_config(dpd_interval=10.0))
    p.connect()
    established(p)
    p.advance(11)
    assert p.i.state is State.ESTABLISHED
    before = len(p.wire.log)
    p.advance(11)
    assert len(p.wire.log) > before  # a DPD exchange went both ways
    # Now the peer goes silent: retransmissions, then give-up within the configured time.
    p.filter = lambda d, g: []
    p.advance(10 + p.cfg_i.retransmit.give_up + 1)
    assert p.i.state is State.CLOSED
    assert p.of("i", ev.PeerDead)
    assert p.of("i", ev.IkeSaDown)[0].reason.startswith("peer dead")


def test_retransmission_backs_off_and_recovers_after_loss() -> None:
    p = Pair()
    dropped: list[int] = []

    def lossy(direction: str, g):  # drop the first IKE_AUTH response
        if (
            direction == "r->i"
            and len([x for x in p.wire.log if x[0] == "r->i"]) == 1
            and not dropped
        ):
            dropped.append(1)
            return []
        return [g]

    p.filter = lossy
    p.connect()
    assert p.i.state is State.CONNECTING
    p.advance(p.cfg_i.retransmit.timeout + 0.01)
    established(p)
    # The responder answered the retransmission from its cache, not by reprocessing it.
    assert len(p.of("r", ev.ChildSaUp)) == 1


def test_duplicate_request_answered_from_cache_without_reprocessing() -> None:
    p = Pair()
    p.connect()
    established(p)
    p.i.liveness_check(p.now)
    batch = p.pending()
    assert len(batch) == 1
    direction, g = batch[0]
    p.deliver(direction, g)
    p.deliver(direction, g)  # the same request twice
    replies = p.r.datagrams_to_send()
    assert len(replies) == 2 and replies[0].data == replies[1].data
    assert p.r.drops == {} or "message_id" not in p.r.drops


def test_tampered_message_is_dropped_and_changes_nothing() -> None:
    p = Pair()
    p.connect()
    established(p)
    p.i.liveness_check(p.now)
    ((direction, g),) = p.pending()
    bad = bytearray(g.data)
    bad[-1] ^= 1
    state = (p.r.state, p.r.sa.expected_request_id)
    p.r.receive_datagram(bytes(bad), ("192.0.2.1", 500), p.now)
    assert p.r.drops["bad_icv"] == 1 and not p.r.datagrams_to_send()
    assert (p.r.state, p.r.sa.expected_request_id) == state
    p.deliver(direction, g)  # the genuine one still works
    assert p.r.datagrams_to_send()


def test_fragmentation_of_large_messages_any_order() -> None:
    cfg_i = make_config(
        fragment_size=120, local_nets=("10.1.0.0/16", "10.3.0.0/16"), remote_nets=("10.2.0.0/16",)
    )
    cfg_r = make_config(
        local_id="198.51.100.2",
        remote_id="192.0.2.1",
        fragment_size=120,
        local_nets=("10.2.0.0/16",),
        remote_nets=("10.1.0.0/16", "10.3.0.0/16"),
    )
    p = Pair(cfg_i, cfg_r)
    seen: list[int] = []

    def reverse(direction: str, g):
        seen.append(len(g.data))
        return [g]

    p.filter = reverse
    p.i.initiate(p.now)
    for _ in range(2):  # IKE_SA_INIT request and response
        ((direction, g),) = p.pending()
        p.deliver(direction, g)
    batch = p.pending()
    assert len(batch) > 1, "IKE_AUTH should be fragmented at 120 bytes"
    assert all(len(g.data) <= 120 for _, g in batch)
    for direction, g in reversed(batch):
        p.deliver(direction, g)
    p.run()
    established(p)


# ------------------------------------------------------------------ NAT


def test_nat_detected_moves_to_4500_and_marks_udp_encapsulation() -> None:
    # The responder sees the initiator at a different address: a NAT in between.
    p = Pair()
    nat = ("203.0.113.7", 40000)

    def natted(direction: str, g):
        return [g]

    p.filter = natted
    p.i.initiate(p.now)
    for _ in range(10):
        batch = p.pending()
        if not batch:
            break
        for direction, g in batch:
            if direction == "i->r":
                port = nat[1] if g.local_port == 500 else nat[1] + 1
                p.r.receive_datagram(g.data, (nat[0], port), p.now)
            else:
                p.i.receive_datagram(g.data, ("198.51.100.2", g.local_port), p.now)
    p._drain_events()
    ci = p.of("i", ev.ChildSaUp)[0].child
    cr = p.of("r", ev.ChildSaUp)[0].child
    assert ci.udp_encap and cr.udp_encap
    assert p.of("i", ev.IkeSaUp)[0].nat_local and p.of("r", ev.IkeSaUp)[0].nat_remote
    assert p.i.remote_addr[1] == 4500 and cr.remote_addr == (nat[0], nat[1] + 1)


def test_unknown_critical_payload_answered() -> None:
    from ike.codec import encode_protected
    from ike.payloads import Message, UnknownPayload

    p = Pair()
    p.connect()
    established(p)
    sa = p.i.sa
    msg = Message(
        sa.spi_i,
        sa.spi_r,
        ExchangeType.INFORMATIONAL,
        sa.flags_i,
        sa.next_request_id,
        [UnknownPayload(200, True, b"xx")],
    )
    p.r.receive_datagram(encode_protected(msg, sa.keys.crypto_out), ("192.0.2.1", 500), p.now)
    (reply,) = p.r.datagrams_to_send()
    from ike.codec import open_protected

    answer = open_protected(reply.data, sa.keys.crypto_in)
    n = answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert n is not None and n.data == bytes([200])


def test_lifetimes_rekey_child_and_ike_automatically() -> None:
    cfg_i = make_config(ike_lifetime=400.0, child_lifetime=200.0, jitter=0.0, dpd_interval=1e9)
    cfg_r = make_config(
        local_id="198.51.100.2",
        remote_id="192.0.2.1",
        ike_lifetime=4000.0,
        child_lifetime=2000.0,
        jitter=0.0,
        dpd_interval=1e9,
    )
    p = Pair(cfg_i, cfg_r)
    p.connect()
    established(p)
    p.advance(185)  # child soft lifetime is 90% of 200 s
    assert len(p.of("i", ev.ChildSaRekeyed)) == 1
    p.advance(200)  # IKE soft lifetime 360 s
    assert len(p.of("i", ev.IkeSaRekeyed)) == 1
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    assert PSK  # same credentials throughout
