"""Proposal strings, selection by the responder, the initiator's check, suites."""

from __future__ import annotations

import struct

import pytest

from ike.codec import decode_payloads, encode_payloads
from ike.constants import (
    EncrId,
    EsnId,
    IntegId,
    KeId,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ike.crypto.ke import mlkem_supported
from ike.crypto.proposals import (
    DEFAULT_ESP_PROPOSALS,
    DEFAULT_IKE_PROPOSALS,
    check_choice,
    describe,
    parse_proposal,
    parse_proposals,
    select_proposal,
)
from ike.crypto.suite import ChildSuite, IkeSuite
from ike.errors import ProposalError
from ike.payloads import Proposal, SaPayload, Transform, TransformAttribute

T = TransformType
IKE, ESP = ProtocolId.IKE, ProtocolId.ESP


def ike(text: str) -> Proposal:
    return parse_proposal(text, IKE)


def esp(text: str) -> Proposal:
    return parse_proposal(text, ESP)


@pytest.mark.parametrize(
    ("text", "described"),
    [
        ("aes256gcm16-prfsha384-ecp384", "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384"),
        ("aes256-sha256-modp2048", "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"),
        ("chacha20poly1305-prfsha256-x25519", "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE_25519"),
        (
            "aes128gcm16-aes256gcm16-prfsha256-x25519-ecp256",
            "AES_GCM_16_128/AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519/ECP_256",
        ),
        ("aes256gcm128-prfsha512-curve25519", "AES_GCM_16_256/PRF_HMAC_SHA2_512/CURVE_25519"),
        ("AES128-SHA1-MODP3072", "AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_3072"),
        ("aes-sha384-ecp521", "AES_CBC_128/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_521"),
        (
            "aes192-sha512-prfsha256-modp4096",
            "AES_CBC_192/HMAC_SHA2_512_256/PRF_HMAC_SHA2_256/MODP_4096",
        ),
    ],
)
def test_parse_ike_examples(text: str, described: str) -> None:
    proposal = ike(text)
    assert (proposal.num, proposal.protocol, proposal.spi) == (1, IKE, b"")
    assert describe(proposal) == described


def test_parse_ike_transforms_exactly() -> None:
    assert ike("aes256gcm16-prfsha384-ecp384").transforms == [
        Transform(T.ENCR, EncrId.AES_GCM_16, 256),
        Transform(T.PRF, PrfId.HMAC_SHA2_384),
        Transform(T.KE, KeId.ECP_384),
    ]
    # Same kinds may appear anywhere; preference order within a kind is kept.
    assert ike("ecp256-aes128gcm16-x25519-prfsha256-aes256gcm16").transforms == [
        Transform(T.ENCR, EncrId.AES_GCM_16, 128),
        Transform(T.ENCR, EncrId.AES_GCM_16, 256),
        Transform(T.PRF, PrfId.HMAC_SHA2_256),
        Transform(T.KE, KeId.ECP_256),
        Transform(T.KE, KeId.CURVE25519),
    ]
    assert (
        Transform(T.ENCR, EncrId.CHACHA20_POLY1305)
        in ike("chacha20poly1305-prfsha1-x25519").transforms
    )


def test_ike_prf_derived_from_integrity() -> None:
    p = ike("aes256-sha256-sha1-sha256-modp2048")
    assert p.of_type(T.INTEG) == [
        Transform(T.INTEG, IntegId.HMAC_SHA2_256_128),
        Transform(T.INTEG, IntegId.HMAC_SHA1_96),
    ]
    assert p.of_type(T.PRF) == [
        Transform(T.PRF, PrfId.HMAC_SHA2_256),
        Transform(T.PRF, PrfId.HMAC_SHA1),
    ]
    # An explicit PRF wins.
    assert ike("aes256-sha256-prfsha512-modp2048").of_type(T.PRF) == [
        Transform(T.PRF, PrfId.HMAC_SHA2_512)
    ]


@pytest.mark.parametrize(
    ("text", "described"),
    [
        ("aes256gcm16", "AES_GCM_16_256/NO_EXT_SEQ"),
        ("aes256-sha256", "AES_CBC_256/HMAC_SHA2_256_128/NO_EXT_SEQ"),
        ("aes128gcm16-ecp256", "AES_GCM_16_128/ECP_256/NO_EXT_SEQ"),
        ("aes128gcm16-esn", "AES_GCM_16_128/EXT_SEQ"),
        ("aes128gcm16-esn-noesn", "AES_GCM_16_128/EXT_SEQ/NO_EXT_SEQ"),
        ("chacha20poly1305-noesn", "CHACHA20_POLY1305/NO_EXT_SEQ"),
    ],
)
def test_parse_esp_examples(text: str, described: str) -> None:
    assert describe(esp(text)) == described
    assert esp(text).protocol == ESP


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aes128gcm8-prfsha256-ecp256", r"'aes128gcm8' is not supported \(.+\)"),
        ("aes256gcm12-prfsha256-ecp256", r"'aes256gcm12' is not supported \(.+\)"),
        ("3des-sha1-modp2048", r"'3des' is not supported \(.+\)"),
        ("aes256-md5-modp2048", r"'md5' is not supported \(.+\)"),
        ("aes256-sha256-modp1024", r"'modp1024' is not supported \(.+\)"),
        ("aes256-sha256-prfaesxcbc-modp2048", r"'prfaesxcbc' is not supported"),
        ("aes256-sha256-ecp256bp", r"'ecp256bp' is not supported"),
        ("aes256ccm16-prfsha256-ecp256", r"'aes256ccm16' is not supported"),
        ("aes256-sha256-frobnicate", r"unknown algorithm 'frobnicate'"),
        ("aes257-sha256-modp2048", r"unknown algorithm 'aes257'"),
        ("aes256gcm16-sha256-prfsha256-ecp256", "mixes AEAD and integrity"),
        ("aes256-aes256gcm16-sha256-ecp256", "mixes AEAD and non-AEAD"),
        ("aes256gcm16-ecp256", "needs a PRF"),
        ("aes256-sha256", "needs a key exchange"),
        ("aes256-prfsha256-modp2048", "needs an integrity"),
        ("prfsha256-modp2048", "no encryption"),
        ("aes256gcm16-prfsha256-ecp256-esn", "ESN is only for ESP"),
        ("aes256--sha256-modp2048", "empty"),
        ("", "empty"),
        ("aes256gcm16-prfsha256-ke1_ecp256", "no first one"),
        ("aes256gcm16-prfsha256-ecp256-ke1_sha256", "not a key exchange"),
    ],
)
def test_parse_ike_errors(text: str, message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        ike(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aes256", "needs an integrity"),
        ("aes256gcm16-sha256", "mixes AEAD and integrity"),
        ("aes256gcm16-prfsha256", "cannot have a PRF"),
        ("sha256", "no encryption"),
        ("aes256gcm16-modp768", r"'modp768' is not supported"),
    ],
)
def test_parse_esp_errors(text: str, message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        esp(text)


def test_parse_rejects_ah() -> None:
    with pytest.raises(ProposalError):
        parse_proposal("sha256", ProtocolId.AH)


def test_additional_key_exchanges() -> None:
    p = ike("aes256gcm16-prfsha256-x25519-ke1_ecp384-ke2_none")
    assert p.of_type(T.ADDKE1) == [Transform(T.ADDKE1, KeId.ECP_384)]
    assert p.of_type(T.ADDKE2) == [Transform(T.ADDKE2, KeId.NONE)]
    assert describe(p).endswith("CURVE_25519/KE1_ECP_384/KE2_NONE")
    if mlkem_supported():
        q = ike("aes256gcm16-prfsha384-ecp384-ke1_mlkem768-ke1_mlkem1024")
        assert describe(q).endswith("ECP_384/KE1_ML_KEM_768/KE1_ML_KEM_1024")
        assert describe(ike("aes256gcm16-prfsha256-mlkem768")).endswith("/ML_KEM_768")
    with pytest.raises(ProposalError, match="mlkem512"):
        ike("aes256gcm16-prfsha256-mlkem512")


def test_defaults_parse() -> None:
    ikes = parse_proposals(DEFAULT_IKE_PROPOSALS, IKE)
    esps = parse_proposals(DEFAULT_ESP_PROPOSALS, ESP)
    assert [p.num for p in ikes] == [1, 2, 3]
    assert [describe(p) for p in esps] == [
        "AES_GCM_16_256/NO_EXT_SEQ",
        "AES_GCM_16_128/NO_EXT_SEQ",
        "AES_CBC_256/HMAC_SHA2_256_128/NO_EXT_SEQ",
    ]
    assert describe(ikes[1]) == "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519/ECP_256"


def _offer(texts: list[str], protocol: ProtocolId = IKE, spi: bytes = b"") -> list[Proposal]:
    proposals = parse_proposals(texts, protocol)
    for p in proposals:
        p.spi = spi
    return proposals


def test_select_prefers_our_order() -> None:
    offered = _offer(["aes128-sha1-modp2048", "aes256gcm16-prfsha384-ecp384"])
    ours = parse_proposals(["aes256gcm16-prfsha384-ecp384", "aes128-sha1-modp2048"], IKE)
    chosen = select_proposal(offered, ours)
    assert chosen is not None
    assert chosen.num == 2  # the peer's number for that proposal
    assert describe(chosen) == "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384"
    # With our order reversed the peer's first proposal wins.
    chosen = select_proposal(offered, list(reversed(ours)))
    assert chosen is not None and chosen.num == 1


def test_select_picks_one_of_each_by_our_preference() -> None:
    offered = _offer(["aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519"])
    ours = [ike("aes256gcm16-aes128gcm16-prfsha384-x25519-ecp256")]
    chosen = select_proposal(offered, ours)
    assert chosen is not None
    assert describe(chosen) == "AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519"
    assert len(chosen.transforms) == 3
    assert check_choice(chosen, offered)


def test_select_no_overlap() -> None:
    offered = _offer(["aes128-sha1-modp2048"])
    assert select_proposal(offered, [ike("aes256gcm16-prfsha384-ecp384")]) is None
    assert select_proposal([], [ike("aes256gcm16-prfsha384-ecp384")]) is None
    # An ESP offer never matches an IKE configuration.
    assert (
        select_proposal(_offer(["aes256gcm16"], ESP), [ike("aes256gcm16-prfsha256-x25519")]) is None
    )


def test_select_key_length_must_match_exactly() -> None:
    offered = _offer(["aes128gcm16-prfsha256-ecp256"])
    assert select_proposal(offered, [ike("aes256gcm16-prfsha256-ecp256")]) is None
    # A cipher sent without its KEY_LENGTH attribute matches nothing of ours.
    bare = Proposal(
        1,
        IKE,
        b"",
        [
            Transform(T.ENCR, EncrId.AES_GCM_16),
            Transform(T.PRF, PrfId.HMAC_SHA2_256),
            Transform(T.KE, KeId.ECP_256),
        ],
    )
    assert select_proposal([bare], [ike("aes128gcm16-prfsha256-ecp256")]) is None


def test_select_ignores_unknown_transforms() -> None:
    offer = ike("aes256gcm16-prfsha256-ecp256")
    offer.transforms.insert(1, Transform(T.ENCR, 1234, 256))
    offer.transforms.insert(0, Transform(T.KE, 4242))
    chosen = select_proposal([offer], [ike("aes256gcm16-prfsha256-ecp256")])
    assert chosen is not None and describe(chosen) == "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"
    # A whole transform type we do not know cannot be agreed, unless it is optional (NONE).
    odd = ike("aes256gcm16-prfsha256-ecp256")
    odd.transforms.append(Transform(77, 5))
    assert select_proposal([odd], [ike("aes256gcm16-prfsha256-ecp256")]) is None
    odd.transforms.append(Transform(77, 0))
    chosen = select_proposal([odd], [ike("aes256gcm16-prfsha256-ecp256")])
    assert chosen is not None and Transform(77, 0) in chosen.transforms


def _with_attribute(t: Transform) -> Transform:
    return Transform(t.type, t.id, t.key_length, (TransformAttribute(17, 1),))


def test_select_rejects_transforms_with_unknown_attributes() -> None:
    ours = [ike("aes256gcm16-prfsha256-ecp256-x25519")]
    offer = ike("aes256gcm16-prfsha256-x25519-ecp256")
    # RFC 7296 §3.3.6: the preferred ECP_256 is unusable; the other group still counts.
    offer.transforms[3] = _with_attribute(offer.transforms[3])
    chosen = select_proposal([offer], ours)
    assert chosen is not None and describe(chosen) == "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
    # The only ENCR is unusable: the proposal cannot match, the next one can.
    lone = ike("aes256gcm16-prfsha256-ecp256")
    lone.transforms[0] = _with_attribute(lone.transforms[0])
    assert select_proposal([lone], ours) is None
    fallback = ike("aes256gcm16-prfsha256-ecp256")
    fallback.num = 2
    chosen = select_proposal([lone, fallback], ours)
    assert chosen is not None and chosen.num == 2
    # Not even as the NONE option of a type we do not use.
    optional = ike("aes256gcm16-prfsha256-ecp256")
    optional.transforms.append(_with_attribute(Transform(77, 0)))
    assert select_proposal([optional], ours) is None


def test_unknown_attribute_from_the_wire_makes_transform_unusable() -> None:
    ours = [ike("aes256gcm16-prfsha256-ecp256")]
    offer = ike("aes256gcm16-prfsha256-ecp256")
    encoded = encode_payloads([SaPayload([offer])])[1]
    assert select_proposal(decode_payloads(PayloadType.SA, encoded)[0].proposals, ours)
    # The same proposal with one TV attribute (type 17) behind ENCR's KEY_LENGTH.
    key_length = struct.pack("!HH", 0x800E, 256)
    patched = encoded.replace(key_length, key_length + struct.pack("!HH", 0x8011, 1))
    patched = _fix_lengths(patched, 4)
    (sa,) = decode_payloads(PayloadType.SA, patched)
    assert sa.proposals[0].transforms[0].unknown_attributes == (TransformAttribute(17, 1),)
    assert select_proposal(sa.proposals, ours) is None


def _fix_lengths(sa_body: bytes, grew: int) -> bytes:
    """Add ``grew`` to the SA payload, proposal and first transform length fields."""
    buf = bytearray(sa_body)
    for at in (2, 4 + 2, 4 + 8 + 2):  # payload header, proposal header, first transform
        buf[at : at + 2] = (int.from_bytes(buf[at : at + 2], "big") + grew).to_bytes(2, "big")
    return bytes(buf)


def test_check_choice_rejects_unknown_attributes() -> None:
    ours = parse_proposals(["aes256gcm16-prfsha256-ecp256"], IKE)
    chosen = Proposal(1, IKE, b"", list(ours[0].transforms))
    assert check_choice(chosen, ours)
    chosen.transforms[2] = _with_attribute(chosen.transforms[2])
    assert not check_choice(chosen, ours)


def test_select_esp_carries_peer_spi_and_esn() -> None:
    offered = _offer(["aes128gcm16-esn-noesn", "aes256gcm16"], ESP, spi=b"\xc1\x00\x00\x01")
    chosen = select_proposal(offered, [esp("aes128gcm16")])
    assert chosen is not None
    assert chosen.spi == b"\xc1\x00\x00\x01" and chosen.num == 1
    assert chosen.of_type(T.ESN) == [Transform(T.ESN, EsnId.NO_ESN)]
    chosen = select_proposal(offered, [esp("aes128gcm16-esn")])
    assert chosen is not None and chosen.of_type(T.ESN) == [Transform(T.ESN, EsnId.ESN)]
    # The peer insists on ESN, we refuse it.
    assert select_proposal(_offer(["aes128gcm16-esn"], ESP), [esp("aes128gcm16")]) is None


def test_select_esp_absent_esn_means_no_esn() -> None:
    offer = Proposal(1, ESP, b"\x01\x02\x03\x04", [Transform(T.ENCR, EncrId.AES_GCM_16, 256)])
    chosen = select_proposal([offer], [esp("aes256gcm16")])
    assert chosen is not None
    assert chosen.transforms == [Transform(T.ENCR, EncrId.AES_GCM_16, 256)]  # no type added
    assert ChildSuite.from_proposal(chosen).esn is False
    assert select_proposal([offer], [esp("aes256gcm16-esn")]) is None


def test_select_pfs_groups() -> None:
    pfs_offer = _offer(["aes256gcm16-ecp256-x25519"], ESP, spi=b"abcd")
    assert select_proposal(pfs_offer, [esp("aes256gcm16")]) is None  # PFS required by peer
    chosen = select_proposal(pfs_offer, [esp("aes256gcm16-x25519")])
    assert chosen is not None and chosen.of_type(T.KE) == [Transform(T.KE, KeId.CURVE25519)]
    # A NONE transform makes PFS optional for the peer.
    optional = _offer(["aes256gcm16-ecp256"], ESP)
    optional[0].transforms.append(Transform(T.KE, KeId.NONE))
    chosen = select_proposal(optional, [esp("aes256gcm16")])
    assert chosen is not None and chosen.of_type(T.KE) == [Transform(T.KE, KeId.NONE)]
    # We want PFS but the peer offers none.
    assert select_proposal(_offer(["aes256gcm16"], ESP), [esp("aes256gcm16-ecp256")]) is None


def test_select_integrity_none_with_aead() -> None:
    offer = ike("aes256gcm16-prfsha256-ecp256")
    offer.transforms.append(Transform(T.INTEG, IntegId.NONE))
    chosen = select_proposal([offer], [ike("aes256gcm16-prfsha256-ecp256")])
    assert chosen is not None and Transform(T.INTEG, IntegId.NONE) in chosen.transforms
    assert IkeSuite.from_proposal(chosen).integ_id == IntegId.NONE


def test_check_choice() -> None:
    ours = parse_proposals(["aes256gcm16-prfsha384-ecp384-ecp256", "aes256-sha256-modp2048"], IKE)
    good = Proposal(
        1,
        IKE,
        b"",
        [
            Transform(T.ENCR, EncrId.AES_GCM_16, 256),
            Transform(T.PRF, PrfId.HMAC_SHA2_384),
            Transform(T.KE, KeId.ECP_256),
        ],
    )
    assert check_choice(good, ours)
    wrong_num = Proposal(2, IKE, b"", list(good.transforms))
    assert not check_choice(wrong_num, ours)  # transforms of proposal 1 under number 2
    two_kes = Proposal(1, IKE, b"", [*good.transforms, Transform(T.KE, KeId.ECP_384)])
    assert not check_choice(two_kes, ours)
    missing = Proposal(1, IKE, b"", good.transforms[:2])
    assert not check_choice(missing, ours)
    foreign = Proposal(1, IKE, b"", [*good.transforms[:2], Transform(T.KE, KeId.CURVE25519)])
    assert not check_choice(foreign, ours)
    assert not check_choice(Proposal(3, IKE, b"", good.transforms), ours)
    assert not check_choice(Proposal(1, ESP, b"", good.transforms), ours)
    cbc = Proposal(
        2,
        IKE,
        b"",
        [
            Transform(T.ENCR, EncrId.AES_CBC, 256),
            Transform(T.PRF, PrfId.HMAC_SHA2_256),
            Transform(T.INTEG, IntegId.HMAC_SHA2_256_128),
            Transform(T.KE, KeId.MODP_2048),
        ],
    )
    assert check_choice(cbc, ours)


def test_check_choice_esp_optional_types() -> None:
    ours = parse_proposals(["aes256gcm16-esn-noesn"], ESP)
    chosen = Proposal(
        1,
        ESP,
        b"spi!",
        [
            Transform(T.ENCR, EncrId.AES_GCM_16, 256),
            Transform(T.ESN, EsnId.ESN),
        ],
    )
    assert check_choice(chosen, ours)
    # ESN may be left out because we offered NO_ESN (id 0) as an option.
    assert check_choice(Proposal(1, ESP, b"spi!", chosen.transforms[:1]), ours)
    strict = parse_proposals(["aes256gcm16-esn"], ESP)
    assert not check_choice(Proposal(1, ESP, b"spi!", chosen.transforms[:1]), strict)


def test_select_then_check_round_trip_for_defaults() -> None:
    offered = parse_proposals(DEFAULT_IKE_PROPOSALS, IKE)
    for ours_text in DEFAULT_IKE_PROPOSALS:
        chosen = select_proposal(offered, [ike(ours_text)])
        assert chosen is not None and check_choice(chosen, offered)
        suite = IkeSuite.from_proposal(chosen)
        assert suite.prf.id == suite.prf_id
    offered_esp = _offer(DEFAULT_ESP_PROPOSALS, ESP, spi=b"\x00\x00\x10\x01")
    for ours_text in DEFAULT_ESP_PROPOSALS:
        chosen = select_proposal(offered_esp, [esp(ours_text)])
        assert chosen is not None and check_choice(chosen, offered_esp)


def test_ike_suite() -> None:
    chosen = select_proposal(_offer(["aes256-sha384-modp3072"]), [ike("aes256-sha384-modp3072")])
    assert chosen is not None
    suite = IkeSuite.from_proposal(chosen)
    assert suite == IkeSuite(
        EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192, PrfId.HMAC_SHA2_384, KeId.MODP_3072
    )
    assert suite.key_lengths == (32, 48)
    sk = suite.sk_crypto(bytes(32), bytes(48))
    assert (sk.iv_len, sk.icv_len) == (16, 24)
    gcm = IkeSuite.from_proposal(ike("aes128gcm16-prfsha256-x25519"))
    assert (gcm.integ_id, gcm.key_lengths, gcm.prf.output_len) == (IntegId.NONE, (20, 0), 32)
    with pytest.raises(ProposalError):
        IkeSuite.from_proposal(ike("aes128gcm16-aes256gcm16-prfsha256-x25519"))  # not chosen
    with pytest.raises(ProposalError):
        IkeSuite.from_proposal(esp("aes128gcm16"))


def test_child_suite() -> None:
    suite = ChildSuite.from_proposal(esp("aes256-sha512-ecp384-esn"))
    assert suite == ChildSuite(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256, True, KeId.ECP_384)
    assert suite.key_lengths == (32, 64)
    gcm = ChildSuite.from_proposal(esp("aes128gcm16"))
    assert (gcm.esn, gcm.ke_group, gcm.key_lengths) == (False, KeId.NONE, (20, 0))
    with pytest.raises(ProposalError):
        ChildSuite.from_proposal(esp("aes128gcm16-esn-noesn"))
