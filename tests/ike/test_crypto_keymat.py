"""Key derivation: the NIST CAVP IKEv2 KDF vector, hand-built formulas, both-sides agreement,
key lengths and secret-free repr.
"""

from __future__ import annotations

import hmac

import pytest

from ike.constants import EncrId, IntegId, KeId, PrfId
from ike.crypto.base import SkCrypto
from ike.crypto.ke import new_key_exchange
from ike.crypto.keymat import (
    ChildKeys,
    IkeKeys,
    derive_child_keys,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    key_lengths,
)
from ike.crypto.prf import get_prf, prf_plus
from ike.crypto.sk import make_sk_crypto
from ike.errors import ProposalError

h = bytes.fromhex

# NIST CAVP (SP 800-135) IKEv2 KDF test, HMAC-SHA1, as libreswan's self-test carries it.
CAVP_NI = h("32b50d5f4a3763f3")
CAVP_NR = h("9206a04b26564cb1")
CAVP_GIR = h("4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52")
CAVP_GIR_NEW = h("863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330")
CAVP_SPII = h("34c9e7c188868785")
CAVP_SPIR = h("3ff77d760d2b2199")
CAVP_SKEYSEED = h("a9a7b222b59f8f48645f28a1db5b5f5d7479cba7")
CAVP_SKEYSEED_REKEY = h("63e81194946ebd05df7df5ebf5d8750056bf1f1d")
CAVP_DKM = h(
    "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002"
    "a2a63080e514a062768b76606f9fa5e992204fc5a670bde3f10d6b027113936a"
    "5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
    "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435"
    "a7a56cc4"
)


def _concat(keys: IkeKeys) -> bytes:
    return b"".join(
        (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)
    )


def test_cavp_ikev2_kdf_sha1() -> None:
    prf = get_prf(PrfId.HMAC_SHA1)
    # 132 bytes of DKM = 3 x 20 (SK_d, SK_pi, SK_pr) + 2 x 20 (SK_a) + 2 x 16 (SK_e).
    skeyseed, keys = derive_ike_keys(prf, 16, 20, CAVP_GIR, CAVP_NI, CAVP_NR, CAVP_SPII, CAVP_SPIR)
    assert skeyseed == CAVP_SKEYSEED
    assert _concat(keys) == CAVP_DKM
    assert keys.sk_d == CAVP_DKM[:20]
    assert keys.sk_ei == CAVP_DKM[60:76]  # after SK_d and two 20-byte SK_a

    rekey_seed, _ = derive_rekeyed_ike_keys(
        prf, keys.sk_d, prf, CAVP_GIR_NEW, CAVP_NI, CAVP_NR, CAVP_SPII, CAVP_SPIR, 16, 20
    )
    assert rekey_seed == CAVP_SKEYSEED_REKEY


def test_ike_keys_layout_by_hand() -> None:
    prf = get_prf(PrfId.HMAC_SHA2_256)
    ni, nr, gir = b"N" * 32, b"R" * 32, b"G" * 256
    spi_i, spi_r = b"I" * 8, b"J" * 8
    encr_len, integ_len = key_lengths(EncrId.AES_GCM_16, 256, IntegId.NONE)
    assert (encr_len, integ_len) == (36, 0)
    skeyseed, keys = derive_ike_keys(prf, encr_len, integ_len, gir, ni, nr, spi_i, spi_r)
    assert skeyseed == hmac.digest(ni + nr, gir, "sha256")
    stream = prf_plus(prf, skeyseed, ni + nr + spi_i + spi_r, 32 * 3 + 36 * 2)
    assert keys.sk_d == stream[:32]
    assert keys.sk_ai == keys.sk_ar == b""
    assert keys.sk_ei == stream[32:68]
    assert keys.sk_er == stream[68:104]
    assert keys.sk_pi == stream[104:136]
    assert keys.sk_pr == stream[136:168]


def test_rekey_uses_old_prf_for_skeyseed_and_new_prf_for_expansion() -> None:
    old, new = get_prf(PrfId.HMAC_SHA2_256), get_prf(PrfId.HMAC_SHA2_512)
    old_sk_d, gir = b"d" * 32, b"g" * 97
    ni, nr, spi_i, spi_r = b"n" * 16, b"r" * 24, b"a" * 8, b"b" * 8
    skeyseed, keys = derive_rekeyed_ike_keys(new, old_sk_d, old, gir, ni, nr, spi_i, spi_r, 32, 64)
    assert skeyseed == hmac.digest(old_sk_d, gir + ni + nr, "sha256")
    stream = prf_plus(new, skeyseed, ni + nr + spi_i + spi_r, 64 * 3 + 64 * 2 + 32 * 2)
    assert _concat(keys) == stream
    assert len(keys.sk_d) == len(keys.sk_pi) == 64  # the new PRF's key length


def test_both_sides_derive_the_same_keys() -> None:
    prf = get_prf(PrfId.HMAC_SHA2_384)
    init_ke, resp_ke = new_key_exchange(KeId.ECP_384), new_key_exchange(KeId.ECP_384)
    gr, resp_secret = resp_ke.respond(init_ke.public_bytes())
    init_secret = init_ke.finish(gr)
    ni, nr, spi_i, spi_r = b"\x01" * 32, b"\x02" * 32, b"\x03" * 8, b"\x04" * 8
    lens = key_lengths(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192)
    assert lens == (32, 48)
    _, k_init = derive_ike_keys(prf, *lens, init_secret, ni, nr, spi_i, spi_r)
    _, k_resp = derive_ike_keys(prf, *lens, resp_secret, ni, nr, spi_i, spi_r)
    assert k_init == k_resp

    # The initiator's outbound SK crypto is the responder's inbound one.
    def sk(e: bytes, a: bytes) -> SkCrypto:
        return make_sk_crypto(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192, e, a)

    init_out, resp_in = sk(k_init.sk_ei, k_init.sk_ai), sk(k_resp.sk_ei, k_resp.sk_ai)
    resp_out, init_in = sk(k_resp.sk_er, k_resp.sk_ar), sk(k_init.sk_er, k_init.sk_ar)
    assert resp_in.open(b"hdr", init_out.seal(b"hdr", b"IDi AUTH")) == b"IDi AUTH"
    assert init_in.open(b"hdr", resp_out.seal(b"hdr", b"IDr AUTH")) == b"IDr AUTH"
    assert k_init.sk_ei != k_init.sk_er and k_init.sk_pi != k_init.sk_pr


def test_child_keys_order_and_pfs() -> None:
    prf = get_prf(PrfId.HMAC_SHA2_256)
    sk_d, ni, nr = b"D" * 32, b"i" * 32, b"r" * 32
    e, a = key_lengths(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    keys = derive_child_keys(prf, sk_d, None, ni, nr, e, a)
    stream = prf_plus(prf, sk_d, ni + nr, 2 * (16 + 32))
    assert keys == ChildKeys(stream[:16], stream[16:48], stream[48:64], stream[64:96])

    gir = b"\x09" * 32
    pfs = derive_child_keys(prf, sk_d, gir, ni, nr, e, a)
    pfs_stream = prf_plus(prf, sk_d, gir + ni + nr, 96)
    assert pfs.encr_i + pfs.integ_i + pfs.encr_r + pfs.integ_r == pfs_stream
    assert pfs != keys

    aead = derive_child_keys(prf, sk_d, None, ni, nr, *key_lengths(EncrId.AES_GCM_16, 128, 0))
    assert (len(aead.encr_i), aead.integ_i, len(aead.encr_r)) == (20, b"", 20)


def test_key_lengths() -> None:
    assert key_lengths(EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96) == (16, 20)
    assert key_lengths(EncrId.AES_CBC, 192, IntegId.HMAC_SHA2_512_256) == (24, 64)
    assert key_lengths(EncrId.AES_GCM_16, 128, IntegId.NONE) == (20, 0)
    assert key_lengths(EncrId.CHACHA20_POLY1305, None, IntegId.NONE) == (36, 0)
    assert key_lengths(EncrId.CHACHA20_POLY1305, 256, IntegId.NONE) == (36, 0)
    for bad in (
        (EncrId.AES_CBC, None, IntegId.HMAC_SHA1_96),
        (EncrId.AES_GCM_16, 64, IntegId.NONE),
        (EncrId.CHACHA20_POLY1305, 128, IntegId.NONE),
        (EncrId.AES_CCM_16, 128, IntegId.NONE),
        (EncrId.AES_CBC, 128, IntegId.HMAC_MD5_96),
    ):
        with pytest.raises(ProposalError):
            key_lengths(*bad)


def test_repr_hides_key_bytes() -> None:
    prf = get_prf(PrfId.HMAC_SHA2_256)
    _, keys = derive_ike_keys(prf, 16, 32, b"secret", b"n" * 16, b"m" * 16, b"i" * 8, b"r" * 8)
    text = repr(keys) + str(keys) + f"{keys}"
    for value in (keys.sk_d, keys.sk_ai, keys.sk_ei, keys.sk_pr):
        assert value.hex() not in text
        assert repr(value) not in text
    assert "sk_d=<32 bytes>" in text
    child = derive_child_keys(prf, keys.sk_d, None, b"n", b"m", 16, 32)
    assert child.encr_i.hex() not in repr(child) and "encr_i=<16 bytes>" in repr(child)
