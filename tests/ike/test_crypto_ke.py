"""Key exchanges: RFC 5903 §8 and RFC 7748 §6.1 vectors, RFC 3526 primes from their
definition, MODP agreement and value checks, ML-KEM round trips, fixed-key factories.
"""

from __future__ import annotations

import pytest

from ike.constants import KeId
from ike.crypto.ke import (
    mlkem_supported,
    new_key_exchange,
    supported_groups,
)
from ike.crypto.ke_fixed import fixed_factory, from_private_bytes
from ike.crypto.modp_groups import MODP_PRIMES
from ike.errors import CryptoError, ProposalError

h = bytes.fromhex

# RFC 5903 §8.1-§8.3: i, g^i (x|y), r, g^r (x|y), g^ir (x).
ECP_VECTORS = {
    KeId.ECP_256: (
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    ),
    KeId.ECP_384: (
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655"
        "E35B538041E649EE3FAEF896783AB194",
        "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6"
        "DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F"
        "65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942"
        "E0308312916B8ED2960E4BD55A7448FC",
        "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D"
        "0D1AC43A0336DEF96FDA41D0774A3571DCFBEC7AACF3196472169E838430367F"
        "66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4"
        "D603135569B9E9D09CF5D4A270F59746",
    ),
}
# RFC 5903 §8.3 (P-521): the private keys and g^ir; the public values are checked by length.
P521_I = (
    "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A0"
    "95AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D4A52"
)
P521_R = (
    "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E"
    "9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB151685EB9"
)
P521_GIR = (
    "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04"
    "D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3DDEA"
)


@pytest.mark.parametrize("group", list(ECP_VECTORS))
def test_rfc5903_ecp(group: KeId) -> None:
    i, gi, r, gr, gir = (h(v) for v in ECP_VECTORS[group])
    initiator = from_private_bytes(group, i)
    responder = from_private_bytes(group, r)
    assert initiator.public_bytes() == gi
    sent, secret_r = responder.respond(gi)
    assert sent == gr
    assert secret_r == gir
    assert initiator.finish(gr) == gir


def test_rfc5903_ecp521() -> None:
    initiator = from_private_bytes(KeId.ECP_521, h(P521_I))
    responder = from_private_bytes(KeId.ECP_521, h(P521_R))
    assert len(initiator.public_bytes()) == 132  # two 66-byte coordinates
    sent, secret = responder.respond(initiator.public_bytes())
    assert secret == h(P521_GIR)
    assert initiator.finish(sent) == h(P521_GIR)


def test_ecp_rejects_bad_points() -> None:
    ke = new_key_exchange(KeId.ECP_256)
    good = new_key_exchange(KeId.ECP_256).public_bytes()
    with pytest.raises(CryptoError):
        ke.finish(good[:-1])  # wrong length
    with pytest.raises(CryptoError):
        ke.finish(good + b"\0")
    off_curve = good[:32] + bytes(31) + b"\x01"
    with pytest.raises(CryptoError):
        ke.finish(off_curve)
    with pytest.raises(CryptoError):
        ke.respond(bytes(64))


def test_rfc7748_x25519() -> None:
    alice = from_private_bytes(
        KeId.CURVE25519, h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    )
    bob = from_private_bytes(
        KeId.CURVE25519, h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    )
    a_pub = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_pub = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert alice.public_bytes() == a_pub
    assert bob.respond(a_pub) == (b_pub, shared)
    assert alice.finish(b_pub) == shared


def test_x25519_rejects_low_order_and_bad_length() -> None:
    ke = new_key_exchange(KeId.CURVE25519)
    with pytest.raises(CryptoError):
        ke.finish(bytes(32))  # the zero point: all-zero shared secret (RFC 8031 §2.3)
    with pytest.raises(CryptoError):
        ke.finish(b"\x01" + bytes(31))  # order-1 point, same result
    with pytest.raises(CryptoError):
        ke.finish(bytes(31))


def _rfc3526_prime(bits: int, k: int) -> int:
    """p = 2^n - 2^(n-64) - 1 + 2^64 * ( [2^(n-130) pi] + k ), pi by Machin's formula."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    pi_scaled = (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard  # pi * 2^bits
    return 2**bits - 2 ** (bits - 64) - 1 + 2**64 * ((pi_scaled >> 130) + k)


def test_rfc3526_primes_match_definition() -> None:
    assert MODP_PRIMES[KeId.MODP_2048] == _rfc3526_prime(2048, 124476)
    assert MODP_PRIMES[KeId.MODP_3072] == _rfc3526_prime(3072, 1690314)
    assert MODP_PRIMES[KeId.MODP_4096] == _rfc3526_prime(4096, 240904)


@pytest.mark.parametrize("group", [KeId.MODP_2048, KeId.MODP_3072, KeId.MODP_4096])
def test_modp_agreement(group: KeId) -> None:
    size = MODP_PRIMES[group].bit_length() // 8
    initiator, responder = new_key_exchange(group), new_key_exchange(group)
    gi = initiator.public_bytes()
    assert len(gi) == size
    gr, secret = responder.respond(gi)
    assert len(gr) == size and len(secret) == size
    assert initiator.finish(gr) == secret


def test_modp_fixed_key_matches_pow() -> None:
    p = MODP_PRIMES[KeId.MODP_2048]
    a, b = 0x1234567890ABCDEF << 100, 0xFEDCBA0987654321 << 90
    ka = from_private_bytes(KeId.MODP_2048, a.to_bytes(32, "big"))
    kb = from_private_bytes(KeId.MODP_2048, b.to_bytes(32, "big"))
    assert ka.public_bytes() == pow(2, a, p).to_bytes(256, "big")
    assert ka.finish(kb.public_bytes()) == pow(2, a * b, p).to_bytes(256, "big")


def test_modp_values_are_left_padded() -> None:
    # Exponent 2: g^x = 4 and, against a peer sending 4, g^xy = 16, each one significant
    # byte that must be padded to the 256-byte prime length (RFC 7296 §2.14, §3.4).
    ke = from_private_bytes(KeId.MODP_2048, b"\x02")
    assert ke.public_bytes() == (4).to_bytes(256, "big")
    assert ke.finish((4).to_bytes(256, "big")) == (16).to_bytes(256, "big")


def test_modp_rejects_bad_values() -> None:
    p = MODP_PRIMES[KeId.MODP_2048]
    ke = new_key_exchange(KeId.MODP_2048)
    for y in (0, 1, p - 1, p, p + 1, 2**2048 - 1):
        with pytest.raises(CryptoError):
            ke.finish(y.to_bytes(256, "big"))
    with pytest.raises(CryptoError):
        ke.finish((4).to_bytes(255, "big"))  # fine value, wrong (short) length
    with pytest.raises(CryptoError):
        ke.respond((5).to_bytes(255, "big"))
    with pytest.raises(CryptoError):
        from_private_bytes(KeId.MODP_2048, b"\x01")


@pytest.mark.skipif(not mlkem_supported(), reason="cryptography without ML-KEM")
@pytest.mark.parametrize(
    ("group", "ek_len", "ct_len"), [(KeId.ML_KEM_768, 1184, 1088), (KeId.ML_KEM_1024, 1568, 1568)]
)
def test_mlkem_round_trip(group: KeId, ek_len: int, ct_len: int) -> None:
    initiator, responder = new_key_exchange(group), new_key_exchange(group)
    ek = initiator.public_bytes()
    assert len(ek) == ek_len
    ct, secret = responder.respond(ek)
    assert len(ct) == ct_len and len(secret) == 32
    assert initiator.finish(ct) == secret
    with pytest.raises(CryptoError):
        responder.respond(ek[:-1])
    with pytest.raises(CryptoError, match="rejected"):
        responder.respond(b"\xff" * ek_len)  # coefficients >= q fail the FIPS 203 check
    with pytest.raises(CryptoError):
        initiator.finish(ct + b"\0")
    # A corrupted ciphertext decapsulates (implicit rejection) to a different secret.
    assert initiator.finish(bytes([ct[0] ^ 1]) + ct[1:]) != secret


@pytest.mark.skipif(not mlkem_supported(), reason="cryptography without ML-KEM")
def test_mlkem_fixed_seed_is_deterministic() -> None:
    seed = bytes(range(64))
    a = from_private_bytes(KeId.ML_KEM_768, seed).public_bytes()
    assert a == from_private_bytes(KeId.ML_KEM_768, seed).public_bytes()


def test_supported_and_unsupported_groups() -> None:
    assert {KeId.MODP_2048, KeId.ECP_256, KeId.ECP_521, KeId.CURVE25519} <= supported_groups()
    for group in (KeId.MODP_1024, KeId.CURVE448, KeId.ML_KEM_512, KeId.NONE, 4242):
        with pytest.raises(ProposalError):
            new_key_exchange(group)
    for group in supported_groups():
        assert new_key_exchange(group).group == group


def test_fixed_factory_replays_byte_for_byte() -> None:
    keys = {KeId.CURVE25519: bytes(range(32)), KeId.ECP_256: bytes(31) + b"\x07"}
    factory = fixed_factory(keys)
    for group in keys:
        assert factory(group).public_bytes() == factory(group).public_bytes()
    with pytest.raises(ProposalError):
        factory(KeId.MODP_2048)
