"""Signature AUTH data: RFC 7427 DIGITAL_SIGNATURE and the legacy RFC 7296/4754 methods.

DIGITAL_SIGNATURE (method 14) AUTH data is
    1-byte length | ASN.1 AlgorithmIdentifier (DER) | signature value.
The AlgorithmIdentifiers are fixed byte strings built below from their OIDs (RFC 4055 for
RSA and PSS, RFC 5758 for ECDSA, RFC 8410 for Ed25519); they match RFC 7427 Appendix A.
Legacy methods carry the bare signature: RSA_SIG is PKCS#1 v1.5 with SHA-1, the ECDSA
methods 9-11 (RFC 4754) are r|s at fixed width on one fixed curve and hash.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ike.constants import AuthMethod, HashAlgorithm
from ike.errors import AuthenticationError, DecodeError
from ike.payloads import AuthPayload

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# -- a tiny DER encoder, only for the constant AlgorithmIdentifiers -----------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _alg_id(oid: str, params: bytes = b"") -> bytes:
    return _tlv(0x30, _oid(oid) + params)


_NULL = b"\x05\x00"
_OID_SHA = {  # NIST hash OIDs (RFC 5754)
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_OID_RSA_PKCS1 = {  # sha*WithRSAEncryption (RFC 4055 §5)
    "sha256": "1.2.840.113549.1.1.11",
    "sha384": "1.2.840.113549.1.1.12",
    "sha512": "1.2.840.113549.1.1.13",
}
_OID_ECDSA = {  # ecdsa-with-SHA* (RFC 5758 §3.2)
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}
_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"  # RFC 4055 §3.1
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_ED25519 = "1.3.101.112"  # RFC 8410 §3


def _pss_params(hash_name: str, salt_len: int, with_null: bool) -> bytes:
    """RSASSA-PSS-params: hash, MGF1 with the same hash, salt length; trailerField is the
    DEFAULT 1 and so absent in DER. Hash AlgorithmIdentifiers carry NULL when with_null."""
    hash_alg = _alg_id(_OID_SHA[hash_name], _NULL if with_null else b"")
    return _tlv(
        0x30,
        _tlv(0xA0, hash_alg)
        + _tlv(0xA1, _alg_id(_OID_MGF1, hash_alg))
        + _tlv(0xA2, _tlv(0x02, bytes([salt_len]))),
    )


# -- schemes --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureScheme:
    """One way to sign AUTH octets."""

    name: str
    method: AuthMethod
    key_kind: str  # "RSA", "ECDSA" or "Ed25519"
    hash_id: HashAlgorithm  # the RFC 7427 hash it needs the peer to accept
    pss: bool = False
    curve: str | None = None  # legacy ECDSA methods are tied to one curve
    alg_id: bytes = b""  # DIGITAL_SIGNATURE only: what we send
    also_accepted: tuple[bytes, ...] = ()  # other encodings of alg_id seen from peers


_HASHES: dict[HashAlgorithm, hashes.HashAlgorithm] = {
    HashAlgorithm.SHA1: hashes.SHA1(),  # noqa: S303 - legacy RSA_SIG only
    HashAlgorithm.SHA2_256: hashes.SHA256(),
    HashAlgorithm.SHA2_384: hashes.SHA384(),
    HashAlgorithm.SHA2_512: hashes.SHA512(),
}
_SHA2 = {
    HashAlgorithm.SHA2_256: "sha256",
    HashAlgorithm.SHA2_384: "sha384",
    HashAlgorithm.SHA2_512: "sha512",
}
_SALT = {"sha256": 32, "sha384": 48, "sha512": 64}  # salt length = hash length


def _rsa_pkcs1(h: HashAlgorithm) -> SignatureScheme:
    oid = _OID_RSA_PKCS1[_SHA2[h]]
    # RFC 4055 §5: parameters MUST be NULL (what we and strongSwan send), and absent
    # parameters MUST be accepted too.
    return SignatureScheme(
        f"rsa-pkcs1-{_SHA2[h]}",
        AuthMethod.DIGITAL_SIGNATURE,
        "RSA",
        h,
        alg_id=_alg_id(oid, _NULL),
        also_accepted=(_alg_id(oid),),
    )


def _rsa_pss(h: HashAlgorithm) -> SignatureScheme:
    name = _SHA2[h]
    variants = [
        _alg_id(_OID_RSASSA_PSS, _pss_params(name, _SALT[name], null)) for null in (True, False)
    ]
    return SignatureScheme(
        f"rsa-pss-{name}",
        AuthMethod.DIGITAL_SIGNATURE,
        "RSA",
        h,
        pss=True,
        alg_id=variants[0],
        also_accepted=tuple(variants[1:]),
    )


def _ecdsa(h: HashAlgorithm) -> SignatureScheme:
    return SignatureScheme(
        f"ecdsa-{_SHA2[h]}",
        AuthMethod.DIGITAL_SIGNATURE,
        "ECDSA",
        h,
        alg_id=_alg_id(_OID_ECDSA[_SHA2[h]]),
    )


_RSA_PKCS1 = {h: _rsa_pkcs1(h) for h in _SHA2}
_RSA_PSS = {h: _rsa_pss(h) for h in _SHA2}
_ECDSA = {h: _ecdsa(h) for h in _SHA2}
RSA_PKCS1_SHA256 = _RSA_PKCS1[HashAlgorithm.SHA2_256]
RSA_PKCS1_SHA384 = _RSA_PKCS1[HashAlgorithm.SHA2_384]
RSA_PKCS1_SHA512 = _RSA_PKCS1[HashAlgorithm.SHA2_512]
RSA_PSS_SHA256 = _RSA_PSS[HashAlgorithm.SHA2_256]
RSA_PSS_SHA384 = _RSA_PSS[HashAlgorithm.SHA2_384]
RSA_PSS_SHA512 = _RSA_PSS[HashAlgorithm.SHA2_512]
ECDSA_SHA256 = _ECDSA[HashAlgorithm.SHA2_256]
ECDSA_SHA384 = _ECDSA[HashAlgorithm.SHA2_384]
ECDSA_SHA512 = _ECDSA[HashAlgorithm.SHA2_512]
ED25519 = SignatureScheme(
    "ed25519",
    AuthMethod.DIGITAL_SIGNATURE,
    "Ed25519",
    HashAlgorithm.IDENTITY,
    alg_id=_alg_id(_OID_ED25519),
)
LEGACY_RSA_SHA1 = SignatureScheme("rsa-sig-sha1", AuthMethod.RSA_SIG, "RSA", HashAlgorithm.SHA1)
LEGACY_ECDSA_P256 = SignatureScheme(
    "ecdsa-p256-sha256-legacy",
    AuthMethod.ECDSA_SHA256_P256,
    "ECDSA",
    HashAlgorithm.SHA2_256,
    curve="secp256r1",
)
LEGACY_ECDSA_P384 = SignatureScheme(
    "ecdsa-p384-sha384-legacy",
    AuthMethod.ECDSA_SHA384_P384,
    "ECDSA",
    HashAlgorithm.SHA2_384,
    curve="secp384r1",
)
LEGACY_ECDSA_P521 = SignatureScheme(
    "ecdsa-p521-sha512-legacy",
    AuthMethod.ECDSA_SHA512_P521,
    "ECDSA",
    HashAlgorithm.SHA2_512,
    curve="secp521r1",
)

DIGITAL_SIGNATURE_SCHEMES = (
    RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384,
    RSA_PKCS1_SHA512,
    RSA_PSS_SHA256,
    RSA_PSS_SHA384,
    RSA_PSS_SHA512,
    ECDSA_SHA256,
    ECDSA_SHA384,
    ECDSA_SHA512,
    ED25519,
)
LEGACY_SCHEMES = (LEGACY_RSA_SHA1, LEGACY_ECDSA_P256, LEGACY_ECDSA_P384, LEGACY_ECDSA_P521)
_BY_ALG_ID = {
    enc: s
    for s in DIGITAL_SIGNATURE_SCHEMES
    for enc in itertools.chain([s.alg_id], s.also_accepted)
}
_BY_METHOD: dict[int, SignatureScheme] = {s.method: s for s in LEGACY_SCHEMES}
_LEGACY_BY_CURVE = {s.curve: s for s in LEGACY_SCHEMES if s.curve}
_CURVE_HASH = {  # the hash whose strength matches the curve, tried first
    "secp256r1": HashAlgorithm.SHA2_256,
    "secp384r1": HashAlgorithm.SHA2_384,
    "secp521r1": HashAlgorithm.SHA2_512,
}
_SHA2_ORDER = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)


# -- SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4) -----------------------------------------


def our_hash_algorithms() -> list[int]:
    """What we announce in SIGNATURE_HASH_ALGORITHMS."""
    return [
        HashAlgorithm.SHA2_256,
        HashAlgorithm.SHA2_384,
        HashAlgorithm.SHA2_512,
        HashAlgorithm.IDENTITY,
    ]


def encode_hash_algorithms(algorithms: Iterable[int]) -> bytes:
    """Notify data: one 2-byte big-endian value per hash algorithm."""
    return b"".join(int(a).to_bytes(2, "big") for a in algorithms)


def decode_hash_algorithms(data: bytes) -> set[int]:
    """The peer's SIGNATURE_HASH_ALGORITHMS notify data; DecodeError if its length is odd."""
    if len(data) % 2:
        raise DecodeError(f"SIGNATURE_HASH_ALGORITHMS data of odd length {len(data)}")
    return {int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)}


# -- key helpers ----------------------------------------------------------------------


def _kind(key: object) -> str | None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    return None


def describe_key(key: object) -> str:
    """'RSA-3072', 'ECDSA secp384r1', 'Ed25519' (for messages)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _fits(scheme: SignatureScheme, key: object) -> bool:
    if _kind(key) != scheme.key_kind:
        return False
    if scheme.curve is None:
        return True
    return (
        isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        and key.curve.name == scheme.curve
    )


def _mismatch(scheme: SignatureScheme, key: object) -> str:
    return f"signature scheme {scheme.name} does not match key type {describe_key(key)}"


# -- choosing, signing, verifying -------------------------------------------------------


def choose_signature_scheme(
    private_key: PrivateKey,
    peer_hash_algorithms: Collection[int] | None,
    prefer_pss: bool = False,
) -> SignatureScheme:
    """How to sign for this peer.

    RFC 7427 when the peer announced SIGNATURE_HASH_ALGORITHMS including a SHA-2 hash we
    can use (for ECDSA the one matching the curve first); otherwise the legacy method of the
    key type. Ed25519 has no legacy method: it needs the peer to accept IDENTITY, else
    AuthenticationError. ValueError for key types we cannot sign with at all.
    """
    peer = peer_hash_algorithms or set()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        if HashAlgorithm.IDENTITY not in peer:
            raise AuthenticationError(
                "Ed25519 needs RFC 7427 signature authentication with the IDENTITY hash, "
                "which the peer did not announce"
            )
        return ED25519
    if isinstance(private_key, rsa.RSAPrivateKey):
        for h in _SHA2_ORDER:
            if h in peer:
                return _RSA_PSS[h] if prefer_pss else _RSA_PKCS1[h]
        return LEGACY_RSA_SHA1
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        curve = private_key.curve.name
        first = _CURVE_HASH.get(curve)
        for h in sorted(_SHA2_ORDER, key=lambda h: h != first):
            if h in peer:
                return _ECDSA[h]
        legacy = _LEGACY_BY_CURVE.get(curve)
        if legacy is None:
            raise AuthenticationError(
                f"no signature method for ECDSA {curve}: the peer did not announce RFC 7427 "
                "hash algorithms and RFC 4754 covers only P-256, P-384 and P-521"
            )
        return legacy
    raise ValueError(f"cannot sign IKE AUTH with a {describe_key(private_key)} key")


def _rsa_padding(scheme: SignatureScheme, h: hashes.HashAlgorithm) -> padding.AsymmetricPadding:
    if scheme.pss:  # MGF1 with the same hash, salt as long as the hash (what alg_id says)
        return padding.PSS(padding.MGF1(h), h.digest_size)
    return padding.PKCS1v15()


def sign(private_key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> AuthPayload:
    """Our AUTH payload over ``octets`` (see psk.signed_octets). ValueError on a key that
    does not fit the scheme."""
    if not _fits(scheme, private_key):
        raise ValueError(_mismatch(scheme, private_key))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        sig = private_key.sign(octets)  # RFC 8420: the octets themselves, no prehash
    elif isinstance(private_key, rsa.RSAPrivateKey):
        h = _HASHES[scheme.hash_id]
        sig = private_key.sign(octets, _rsa_padding(scheme, h), h)
    else:
        sig = private_key.sign(octets, ec.ECDSA(_HASHES[scheme.hash_id]))
        if scheme.curve is not None:  # RFC 4754: r|s, each the width of the curve order
            width = (private_key.curve.key_size + 7) // 8
            r, s = decode_dss_signature(sig)
            sig = r.to_bytes(width, "big") + s.to_bytes(width, "big")
    if scheme.method == AuthMethod.DIGITAL_SIGNATURE:
        return AuthPayload(scheme.method, bytes([len(scheme.alg_id)]) + scheme.alg_id + sig)
    return AuthPayload(scheme.method, sig)


def scheme_of(auth: AuthPayload) -> tuple[SignatureScheme, bytes]:
    """(scheme, signature value) of a received signature AUTH payload."""
    data = auth.data
    if auth.method == AuthMethod.DIGITAL_SIGNATURE:
        if not data:
            raise AuthenticationError("empty DIGITAL_SIGNATURE AUTH data")
        n = data[0]
        alg_id, sig = data[1 : 1 + n], data[1 + n :]
        if len(alg_id) != n or not sig:
            raise AuthenticationError("truncated DIGITAL_SIGNATURE AUTH data")
        scheme = _BY_ALG_ID.get(alg_id)
        if scheme is None:
            raise AuthenticationError(
                f"unsupported signature algorithm in AUTH (AlgorithmIdentifier {alg_id.hex()})"
            )
        return scheme, sig
    legacy = _BY_METHOD.get(auth.method)
    if legacy is None:
        raise AuthenticationError(f"AUTH method {_method_name(auth.method)} is not a signature")
    return legacy, data


def verify(
    public_key: CertificatePublicKeyTypes,
    auth: AuthPayload,
    octets: bytes,
    allowed: Collection[SignatureScheme] | None = None,
) -> None:
    """Check the peer's signature AUTH payload over ``octets``; AuthenticationError if not
    valid. Any certificate key type is taken: unsupported ones fail the scheme/key check.
    ``allowed`` restricts the schemes we accept (e.g. to refuse SHA-1)."""
    scheme, sig = scheme_of(auth)
    if allowed is not None and scheme not in allowed:
        raise AuthenticationError(f"signature scheme {scheme.name} is not allowed")
    if not _fits(scheme, public_key):
        raise AuthenticationError(_mismatch(scheme, public_key))
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(sig, octets)
        elif isinstance(public_key, rsa.RSAPublicKey):
            h = _HASHES[scheme.hash_id]
            public_key.verify(sig, octets, _rsa_padding(scheme, h), h)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if scheme.curve is not None:
                sig = _der_from_fixed(sig, public_key)
            public_key.verify(sig, octets, ec.ECDSA(_HASHES[scheme.hash_id]))
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise AuthenticationError(f"signature invalid ({scheme.name})") from None


def _der_from_fixed(sig: bytes, key: ec.EllipticCurvePublicKey) -> bytes:
    width = (key.curve.key_size + 7) // 8
    if len(sig) != 2 * width:
        raise ValueError("r|s signature of the wrong length")
    return encode_dss_signature(
        int.from_bytes(sig[:width], "big"), int.from_bytes(sig[width:], "big")
    )


def _method_name(method: int) -> str:
    try:
        return AuthMethod(method).name
    except ValueError:
        return str(method)
