"""SK payload protection: AES-GCM and ChaCha20-Poly1305 known answers through seal/open with
the IV pinned, AES-CBC encrypt-then-MAC, padding and tamper detection.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ike.constants import EncrId, IntegId
from ike.crypto.base import SkCrypto
from ike.crypto.integ import get_integ
from ike.crypto.sk import AeadSk, CbcSk, make_sk_crypto, pad, unpad
from ike.errors import CryptoError, ProposalError

h = bytes.fromhex

# The GCM specification (McGrew & Viega), test cases 13-16 use a 256-bit key; 2 uses 128.
GCM_K = h("feffe9928665731c6d6a8f9467308308")
GCM_IV = h("cafebabefacedbaddecaf888")  # salt cafebabe | explicit IV facedbaddecaf888
GCM_P = h(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_A = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")


def _gcm(key: bytes, nonce: bytes) -> AeadSk:
    return AeadSk(AESGCM(key), nonce[:4], first_iv=int.from_bytes(nonce[4:], "big"))


def test_gcm_case14_seal() -> None:
    # P = 16 zero bytes is 15 zero bytes of payload plus a Pad Length of 0.
    sk = _gcm(bytes(32), bytes(12))
    body = sk.seal(b"", bytes(15))
    assert body == bytes(8) + h("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
    assert len(body) == sk.sealed_len(15)
    assert _gcm(bytes(32), bytes(12)).open(b"", body) == bytes(15)


def test_gcm_case2_seal_aes128() -> None:
    sk = _gcm(bytes(16), bytes(12))
    body = sk.seal(b"", bytes(15))
    assert body[8:] == h("0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf")


def test_gcm_case16_open_with_aad() -> None:
    ct = h(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    )
    tag = h("76fc6ece0f4e1768cddf8853bb2d551b")
    body = GCM_IV[4:] + ct + tag
    # The last plaintext byte, 0x39 = 57, reads as the Pad Length: 2 payload bytes remain.
    assert _gcm(GCM_K * 2, GCM_IV).open(GCM_A, body) == GCM_P[:2]
    with pytest.raises(CryptoError):
        _gcm(GCM_K * 2, GCM_IV).open(GCM_A[:-1] + b"\0", body)


def test_gcm_case15_bad_pad_length_after_valid_icv() -> None:
    ct = h(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
    )
    body = GCM_IV[4:] + ct + h("b094dac5d93471bdec1a502270e3cc6c")
    # Authentic, but its last byte 0x55 = 85 claims more padding than the 63 bytes before it.
    with pytest.raises(CryptoError, match="Pad Length"):
        _gcm(GCM_K * 2, GCM_IV).open(b"", body)


def test_chacha20_poly1305_rfc7539_aead_vector() -> None:
    key = bytes(range(0x80, 0xA0))
    aad = h("50515253c0c1c2c3c4c5c6c7")
    plain = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for"
        b" the future, sunscreen would be it."
    )
    ct = h(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
    )
    tag = h("1ae10b594f09e26a7e902ecbd0600691")
    iv = h("4041424344454647")
    sk = AeadSk(ChaCha20Poly1305(key), h("07000000"), first_iv=int.from_bytes(iv, "big"))
    # The final "." (0x2e = 46) reads as the Pad Length.
    assert sk.open(aad, iv + ct + tag) == plain[: len(plain) - 1 - 46]
    # Sealing the same bytes minus a zero Pad Length reproduces the vector's ciphertext
    # up to the last byte, which is where our Pad Length (0) differs from ".".
    sealed = sk.seal(aad, plain[:-1])
    assert sealed[:8] == iv and sealed[8 : 8 + len(plain) - 1] == ct[:-1]
    # make_sk_crypto splits the 36-byte key material into key | salt the same way.
    sk2 = make_sk_crypto(EncrId.CHACHA20_POLY1305, None, IntegId.NONE, key + h("07000000"), b"")
    assert sk2.open(aad, iv + ct + tag) == plain[: len(plain) - 1 - 46]


def test_aead_iv_counter_never_repeats() -> None:
    sk = make_sk_crypto(EncrId.AES_GCM_16, 256, IntegId.NONE, os.urandom(36), b"")
    ivs = {sk.seal(b"hdr", b"x")[:8] for _ in range(100)}
    assert len(ivs) == 100
    last = AeadSk(AESGCM(bytes(16)), bytes(4), first_iv=(1 << 64) - 1)
    last.seal(b"", b"x")
    with pytest.raises(CryptoError, match="exhausted"):
        last.seal(b"", b"x")


def _cbc_pair(integ_id: IntegId, key_bits: int = 256) -> tuple[SkCrypto, SkCrypto]:
    sk_e, sk_a = os.urandom(key_bits // 8), os.urandom(get_integ(integ_id).key_len)
    sender = make_sk_crypto(EncrId.AES_CBC, key_bits, integ_id, sk_e, sk_a)
    receiver = make_sk_crypto(EncrId.AES_CBC, key_bits, integ_id, sk_e, sk_a)
    return sender, receiver


@pytest.mark.parametrize(
    "integ_id",
    [
        IntegId.HMAC_SHA1_96,
        IntegId.HMAC_SHA2_256_128,
        IntegId.HMAC_SHA2_384_192,
        IntegId.HMAC_SHA2_512_256,
    ],
)
def test_cbc_round_trip_all_lengths(integ_id: IntegId) -> None:
    sender, receiver = _cbc_pair(integ_id, 128)
    for n in range(40):
        msg = os.urandom(n)
        body = sender.seal(b"header", msg)
        assert len(body) == sender.sealed_len(n)
        assert (len(body) - 16 - get_integ(integ_id).icv_len) % 16 == 0
        assert receiver.open(b"header", body) == msg


def test_cbc_cross_check_encrypt_then_mac() -> None:
    """Rebuild the wire form by hand: IV | AES-CBC(pad(P)) | HMAC(aad | IV | C)[:16]."""
    key, ikey, iv = os.urandom(32), os.urandom(32), os.urandom(16)
    integ = get_integ(IntegId.HMAC_SHA2_256_128)
    sk = CbcSk(key, integ, ikey, random=lambda n: iv[:n])
    aad, msg = b"A" * 32, b"payload bytes"
    body = sk.seal(aad, msg)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    padded = msg + bytes(2) + b"\x02"  # 13 + 2 + 1 = 16
    ct = enc.update(padded) + enc.finalize()
    assert body == iv + ct + integ.compute(ikey, aad + iv + ct)


def test_cbc_icv_checked_before_decrypting() -> None:
    sender, receiver = _cbc_pair(IntegId.HMAC_SHA2_256_128)
    body = bytearray(sender.seal(b"aad", b"secret"))
    for pos in (0, 16, len(body) - 1):  # IV, ciphertext, ICV
        bad = bytearray(body)
        bad[pos] ^= 1
        with pytest.raises(CryptoError, match="ICV"):
            receiver.open(b"aad", bytes(bad))
    with pytest.raises(CryptoError, match="ICV"):
        receiver.open(b"aae", bytes(body))
    with pytest.raises(CryptoError):
        receiver.open(b"aad", bytes(body[:-1]))


def test_cbc_bad_pad_length_rejected_after_valid_icv() -> None:
    key, ikey = os.urandom(16), os.urandom(32)
    integ = get_integ(IntegId.HMAC_SHA2_256_128)
    iv = bytes(16)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(bytes(15) + b"\x10") + enc.finalize()  # Pad Length 16 > 15
    body = iv + ct + integ.compute(ikey, b"aad" + iv + ct)
    with pytest.raises(CryptoError, match="Pad Length"):
        CbcSk(key, integ, ikey, os.urandom).open(b"aad", body)


def test_padding_accepts_any_pad_bytes() -> None:
    assert pad(b"abc", 16) == b"abc" + bytes(12) + b"\x0c"
    assert pad(b"", 1) == b"\x00"
    assert unpad(b"abc" + b"\xff\xee" + b"\x02") == b"abc"
    assert unpad(b"\x00") == b""
    assert unpad(b"ab\x02") == b""  # all padding is fine
    with pytest.raises(CryptoError):
        unpad(b"")
    with pytest.raises(CryptoError):
        unpad(b"ab\x03")


def test_aead_tamper_and_short_bodies() -> None:
    keymat = os.urandom(20)
    a = make_sk_crypto(EncrId.AES_GCM_16, 128, IntegId.NONE, keymat, b"")
    b = make_sk_crypto(EncrId.AES_GCM_16, 128, IntegId.NONE, keymat, b"")
    body = a.seal(b"aad", b"hello")
    assert b.open(b"aad", body) == b"hello"
    for pos in range(len(body)):
        bad = bytearray(body)
        bad[pos] ^= 0x80
        with pytest.raises(CryptoError):
            b.open(b"aad", bytes(bad))
    with pytest.raises(CryptoError):
        b.open(b"aad", body[:24])


def test_make_sk_crypto_validates() -> None:
    with pytest.raises(CryptoError):
        make_sk_crypto(EncrId.AES_GCM_16, 256, IntegId.NONE, os.urandom(32), b"")  # no salt
    with pytest.raises(CryptoError):
        make_sk_crypto(
            EncrId.AES_GCM_16, 128, IntegId.HMAC_SHA2_256_128, os.urandom(20), os.urandom(32)
        )
    with pytest.raises(CryptoError):
        make_sk_crypto(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, os.urandom(16), b"x")
    with pytest.raises(ProposalError):
        make_sk_crypto(EncrId.AES_CBC, 128, IntegId.NONE, os.urandom(16), b"")
    with pytest.raises(ProposalError):
        make_sk_crypto(EncrId.AES_CBC, 100, IntegId.HMAC_SHA2_256_128, os.urandom(16), b"")
    with pytest.raises(ProposalError):
        make_sk_crypto(EncrId.TRIPLE_DES, None, IntegId.HMAC_SHA1_96, os.urandom(24), b"")
    sk = make_sk_crypto(EncrId.AES_CBC, 192, IntegId.HMAC_SHA1_96, os.urandom(24), bytes(20))
    assert (sk.iv_len, sk.icv_len, sk.block_len) == (16, 12, 16)
