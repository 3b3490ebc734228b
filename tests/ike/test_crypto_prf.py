"""PRFs, prf+ and integrity algorithms against RFC 4231 / RFC 2202 vectors."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ike.constants import IntegId, PrfId
from ike.crypto.integ import get_integ
from ike.crypto.prf import get_prf, prf_plus
from ike.errors import CryptoError, ProposalError

h = bytes.fromhex

# RFC 4231 §4.2-§4.8: (key, data, HMAC-SHA-256, HMAC-SHA-384, HMAC-SHA-512)
RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
        "faea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
        "8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
        "2a5ab39dc13814b94e3ab6e101a34f27",
        "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
        "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
        "6801dd23c4a7d679ccf8a386c674cffb",
        "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
        "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
        "0c2ef6ab4030fe8296248df163f44952",
        "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size"
        b" data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
        "a678cc31e799176d3860e6110c46523e",
        "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
        "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
    ),
]
SHA2_PRFS = (PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512)
SHA2_INTEGS = (IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA2_384_192, IntegId.HMAC_SHA2_512_256)


@pytest.mark.parametrize("case", RFC4231, ids=["tc1", "tc2", "tc3", "tc4", "tc6", "tc7"])
def test_rfc4231_prf(case: tuple[bytes, bytes, str, str, str]) -> None:
    key, data, *expected = case
    for prf_id, want in zip(SHA2_PRFS, expected, strict=True):
        prf = get_prf(prf_id)
        assert prf(key, data) == h(want)
        assert prf.output_len == prf.key_len == len(h(want))


@pytest.mark.parametrize("case", RFC4231, ids=["tc1", "tc2", "tc3", "tc4", "tc6", "tc7"])
def test_rfc4231_integ_is_truncated_hmac(case: tuple[bytes, bytes, str, str, str]) -> None:
    key, data, *expected = case
    for integ_id, want in zip(SHA2_INTEGS, expected, strict=True):
        integ = get_integ(integ_id)
        icv = h(want)[: integ.icv_len]
        assert integ.compute(key, data) == icv
        assert integ.verify(key, data, icv)


def test_rfc4231_case5_truncation() -> None:
    key, data = b"\x0c" * 20, b"Test With Truncation"
    want = {
        PrfId.HMAC_SHA2_256: "a3b6167473100ee06e0c796c2955552b",
        PrfId.HMAC_SHA2_384: "3abf34c3503b2a23a46efc619baef897",
        PrfId.HMAC_SHA2_512: "415fad6271580a531d4179bc891d87a6",
    }
    for prf_id, trunc in want.items():
        assert get_prf(prf_id)(key, data)[:16] == h(trunc)
    # HMAC-SHA2-256-128 is exactly this 128-bit truncation.
    assert get_integ(IntegId.HMAC_SHA2_256_128).compute(key, data) == h(want[PrfId.HMAC_SHA2_256])


def test_rfc2202_sha1() -> None:
    prf = get_prf(PrfId.HMAC_SHA1)
    assert prf(b"\x0b" * 20, b"Hi There") == h("b617318655057264e28bc0b6fb378c8ef146be00")
    assert prf(b"Jefe", b"what do ya want for nothing?") == h(
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    )
    # Test case 5 also gives the 96-bit truncation used by HMAC-SHA1-96.
    integ = get_integ(IntegId.HMAC_SHA1_96)
    assert integ.compute(b"\x0c" * 20, b"Test With Truncation") == h("4c1a03424b55e07fe7f27be1")
    assert (integ.key_len, integ.icv_len) == (20, 12)


def test_integ_verify_rejects() -> None:
    integ = get_integ(IntegId.HMAC_SHA2_256_128)
    key = b"k" * 32
    icv = integ.compute(key, b"data")
    assert not integ.verify(key, b"datb", icv)
    assert not integ.verify(key, b"data", icv[:-1])  # a short ICV never matches
    assert not integ.verify(key, b"data", bytes(16))
    assert not integ.verify(b"x" * 32, b"data", icv)


def test_unsupported_ids() -> None:
    with pytest.raises(ProposalError, match="AES128_XCBC"):
        get_prf(PrfId.AES128_XCBC)
    with pytest.raises(ProposalError):
        get_prf(999)
    with pytest.raises(ProposalError, match="HMAC_MD5_96"):
        get_integ(IntegId.HMAC_MD5_96)
    with pytest.raises(ProposalError):
        get_integ(IntegId.NONE)


def _hand_prf_plus(key: bytes, seed: bytes, n_blocks: int) -> bytes:
    """prf+ spelled out with hmac.new, block by block, as RFC 7296 §2.13 writes it."""
    t1 = hmac.new(key, seed + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(key, t1 + seed + b"\x02", hashlib.sha256).digest()
    t3 = hmac.new(key, t2 + seed + b"\x03", hashlib.sha256).digest()
    return (t1 + t2 + t3)[: n_blocks * 32]


def test_prf_plus_matches_hand_expansion() -> None:
    prf = get_prf(PrfId.HMAC_SHA2_256)
    key, seed = b"K" * 32, b"seed bytes"
    assert prf_plus(prf, key, seed, 96) == _hand_prf_plus(key, seed, 3)
    # A length that is not a multiple of the output size is a prefix of the stream.
    assert prf_plus(prf, key, seed, 70) == _hand_prf_plus(key, seed, 3)[:70]
    assert prf_plus(prf, key, seed, 1) == _hand_prf_plus(key, seed, 1)[:1]
    assert prf_plus(prf, key, seed, 0) == b""


def test_prf_plus_iteration_limit() -> None:
    prf = get_prf(PrfId.HMAC_SHA1)
    assert len(prf_plus(prf, b"k", b"s", 255 * 20)) == 255 * 20
    with pytest.raises(CryptoError):
        prf_plus(prf, b"k", b"s", 255 * 20 + 1)
