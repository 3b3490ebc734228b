"""An independent ESP encoder for tests: any plaintext (bad padding, odd next headers)."""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from esp.sa import EspParams
from ike.constants import EncrId, IntegId

_DIGEST = {
    IntegId.HMAC_SHA1_96: "sha1",
    IntegId.HMAC_SHA2_256_128: "sha256",
    IntegId.HMAC_SHA2_384_192: "sha384",
    IntegId.HMAC_SHA2_512_256: "sha512",
}


def trailer(payload_len: int, next_header: int, align: int) -> bytes:
    pad = -(payload_len + 2) % align
    return bytes(range(1, pad + 1)) + bytes((pad, next_header))


def esp_packet(params: EspParams, seq: int, plaintext: bytes, iv: bytes | None = None) -> bytes:
    """SPI | seq | IV | E(plaintext) | ICV, with plaintext taken as is (trailer included)."""
    header = struct.pack("!II", params.spi, seq & 0xFFFFFFFF)
    high = struct.pack("!I", seq >> 32)
    if params.is_aead:
        iv = iv if iv is not None else os.urandom(8)
        key, salt = params.encr_key[:-4], params.encr_key[-4:]
        chacha = params.encr_id == EncrId.CHACHA20_POLY1305
        cipher = ChaCha20Poly1305(key) if chacha else AESGCM(key)
        aad = header[:4] + high + header[4:] if params.esn else header
        return header + iv + cipher.encrypt(salt + iv, plaintext, aad)
    iv = iv if iv is not None else os.urandom(16)
    encryptor = Cipher(algorithms.AES(params.encr_key), modes.CBC(iv)).encryptor()
    body = header + iv + encryptor.update(plaintext) + encryptor.finalize()
    signed = body + high if params.esn else body
    icv = hmac.digest(params.integ_key, signed, _DIGEST[params.integ_id])[: params.icv_len]
    return body + icv


def esp_for(params: EspParams, seq: int, inner: bytes, next_header: int) -> bytes:
    """A well-formed packet, built independently of esp.sa."""
    return esp_packet(params, seq, inner + trailer(len(inner), next_header, params.align))
