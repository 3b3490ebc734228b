"""MS-CHAPv2 computations (RFC 2759 §8) and its MPPE master keys (RFC 3079 §3.4).

The EAP-MSCHAPv2 MSK (for the IKE AUTH payload, RFC 7296 §2.16) is, from the
authenticator's side, MasterReceiveKey | MasterSendKey | 32 zero octets (MS-CHAP
[MS-CHAP] §3.1.5.1); both ends compute the same 64 octets.
"""

from __future__ import annotations

import hashlib
import hmac

from ike.eap.des import des_encrypt, expand_key
from ike.eap.md4 import md4

_AUTH_MAGIC1 = b"Magic server to client signing constant"
_AUTH_MAGIC2 = b"Pad to make it do more than one iteration"
_KEY_MAGIC1 = b"This is the MPPE Master Key"
_KEY_MAGIC2 = (
    b"On the client side, this is the send key; on the server side, it is the receive key."
)
_KEY_MAGIC3 = (
    b"On the client side, this is the receive key; on the server side, it is the send key."
)
_PAD1 = b"\x00" * 40
_PAD2 = b"\xf2" * 40


def _sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()  # noqa: S324 - RFC 2759 prescribes it


def nt_password_hash(password: str) -> bytes:
    return md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    return md4(password_hash)


def challenge_hash(peer_challenge: bytes, auth_challenge: bytes, username: bytes) -> bytes:
    return _sha1(peer_challenge, auth_challenge, username)[:8]


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    z = password_hash + b"\x00" * 5
    return b"".join(des_encrypt(expand_key(z[i : i + 7]), challenge) for i in (0, 7, 14))


def nt_response(
    auth_challenge: bytes, peer_challenge: bytes, username: bytes, password_hash: bytes
) -> bytes:
    """GenerateNTResponse, from the NT hash (the gateway's users file stores only that)."""
    return challenge_response(
        challenge_hash(peer_challenge, auth_challenge, username), password_hash
    )


def authenticator_response(
    password_hash: bytes,
    nt_resp: bytes,
    peer_challenge: bytes,
    auth_challenge: bytes,
    username: bytes,
) -> bytes:
    """GenerateAuthenticatorResponse: the 42-octet "S=<40 hex digits>"."""
    digest = _sha1(hash_nt_password_hash(password_hash), nt_resp, _AUTH_MAGIC1)
    digest = _sha1(digest, challenge_hash(peer_challenge, auth_challenge, username), _AUTH_MAGIC2)
    return b"S=" + digest.hex().upper().encode()


def master_key(password_hash: bytes, nt_resp: bytes) -> bytes:
    return _sha1(hash_nt_password_hash(password_hash), nt_resp, _KEY_MAGIC1)[:16]


def asymmetric_start_key(master: bytes, *, send: bool, server: bool) -> bytes:
    magic = _KEY_MAGIC3 if send == server else _KEY_MAGIC2
    return _sha1(master, _PAD1, magic, _PAD2)[:16]


def msk(password_hash: bytes, nt_resp: bytes) -> bytes:
    master = master_key(password_hash, nt_resp)
    receive = asymmetric_start_key(master, send=False, server=True)
    send = asymmetric_start_key(master, send=True, server=True)
    return receive + send + b"\x00" * 32


def equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
