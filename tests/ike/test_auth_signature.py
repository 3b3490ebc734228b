"""Signature AUTH: RFC 7427 and legacy methods, sign/verify, scheme choice, encodings."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from ike.auth import signature as sig
from ike.auth.signature import SignatureScheme
from ike.constants import AuthMethod, HashAlgorithm
from ike.errors import AuthenticationError, DecodeError
from ike.payloads import AuthPayload
from tests.ike import pki

OCTETS = b"RealMessage1" + bytes(range(32)) + b"\x11" * 32
ALL_SHA2 = {HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512}

# (scheme, key type) pairs: every scheme with every key type it can use.
PAIRS: list[tuple[SignatureScheme, pki.KeyType]] = [
    *[
        (s, k)
        for s in (sig.RSA_PKCS1_SHA256, sig.RSA_PKCS1_SHA384, sig.RSA_PKCS1_SHA512)
        for k in ("rsa2048", "rsa3072")
    ],
    *[
        (s, k)
        for s in (sig.RSA_PSS_SHA256, sig.RSA_PSS_SHA384, sig.RSA_PSS_SHA512)
        for k in ("rsa2048", "rsa3072")
    ],
    *[
        (s, k)
        for s in (sig.ECDSA_SHA256, sig.ECDSA_SHA384, sig.ECDSA_SHA512)
        for k in ("p256", "p384", "p521")
    ],
    (sig.ED25519, "ed25519"),
    (sig.LEGACY_RSA_SHA1, "rsa2048"),
    (sig.LEGACY_RSA_SHA1, "rsa3072"),
    (sig.LEGACY_ECDSA_P256, "p256"),
    (sig.LEGACY_ECDSA_P384, "p384"),
    (sig.LEGACY_ECDSA_P521, "p521"),
]


def key(kt: pki.KeyType, slot: int = 0) -> pki.PrivateKey:
    return pki.cached_key(kt, slot)


def ids(pair: tuple[SignatureScheme, str]) -> str:
    return f"{pair[0].name}-{pair[1]}"


# -- AlgorithmIdentifier bytes ----------------------------------------------------------


def der_children(data: bytes) -> list[bytes]:
    """The complete TLVs inside one DER SEQUENCE (test-side reader)."""
    assert data[0] == 0x30

    def header(buf: bytes, pos: int) -> tuple[int, int]:
        n = buf[pos + 1]
        if n < 0x80:
            return pos + 2, n
        k = n & 0x7F
        return pos + 2 + k, int.from_bytes(buf[pos + 2 : pos + 2 + k], "big")

    start, length = header(data, 0)
    body = data[start : start + length]
    out, pos = [], 0
    while pos < len(body):
        vstart, vlen = header(body, pos)
        out.append(body[pos : vstart + vlen])
        pos = vstart + vlen
    return out


def cert_signature_alg_id(
    signer_type: pki.KeyType, hash_alg: hashes.HashAlgorithm | None, pss: bool = False
) -> bytes:
    """signatureAlgorithm of a certificate cryptography signed: an independent encoding."""
    ca = pki.make_ca("CN=AlgId CA", signer_type, key=key(signer_type), hash_alg=hash_alg)
    cert = pki.issue(ca, "CN=x", "p256", key=key("p256"), hash_alg=hash_alg, pss=pss).cert
    tbs, alg_id, _sig = der_children(cert.public_bytes(serialization.Encoding.DER))
    assert tbs == cert.tbs_certificate_bytes
    return alg_id


@pytest.mark.parametrize(
    ("scheme", "signer", "hash_alg"),
    [
        (sig.RSA_PKCS1_SHA256, "rsa2048", hashes.SHA256()),
        (sig.RSA_PKCS1_SHA384, "rsa2048", hashes.SHA384()),
        (sig.RSA_PKCS1_SHA512, "rsa2048", hashes.SHA512()),
        (sig.ECDSA_SHA256, "p256", hashes.SHA256()),
        (sig.ECDSA_SHA384, "p256", hashes.SHA384()),
        (sig.ECDSA_SHA512, "p256", hashes.SHA512()),
        (sig.ED25519, "ed25519", None),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_alg_id_equals_certificate_encoding(
    scheme: SignatureScheme, signer: pki.KeyType, hash_alg: hashes.HashAlgorithm | None
) -> None:
    assert scheme.alg_id == cert_signature_alg_id(signer, hash_alg)


@pytest.mark.parametrize(
    ("scheme", "hash_alg"),
    [
        (sig.RSA_PSS_SHA256, hashes.SHA256()),
        (sig.RSA_PSS_SHA384, hashes.SHA384()),
        (sig.RSA_PSS_SHA512, hashes.SHA512()),
    ],
)
def test_pss_alg_id_equals_certificate_encoding(
    scheme: SignatureScheme, hash_alg: hashes.HashAlgorithm
) -> None:
    # cryptography signs PSS certs with MGF1(same hash), salt = hash length and NULL hash
    # parameters: the same parameter set, encoded the same way.
    assert cert_signature_alg_id("rsa2048", hash_alg, pss=True) == scheme.alg_id


# Published encodings: RFC 7427 Appendix A and the RSASSA-PSS SHA-256 parameter set of
# RFC 4055 §2.1 / the LAMPS PSS examples (hash and MGF1 hash with NULL, salt 32).
PUBLISHED = {
    "rsa-pkcs1-sha256": "300d06092a864886f70d01010b0500",
    "rsa-pkcs1-sha384": "300d06092a864886f70d01010c0500",
    "rsa-pkcs1-sha512": "300d06092a864886f70d01010d0500",
    "ecdsa-sha256": "300a06082a8648ce3d040302",
    "ecdsa-sha384": "300a06082a8648ce3d040303",
    "ecdsa-sha512": "300a06082a8648ce3d040304",
    "ed25519": "300506032b6570",
    "rsa-pss-sha256": "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120",
}


@pytest.mark.parametrize("scheme", sig.DIGITAL_SIGNATURE_SCHEMES, ids=lambda s: s.name)
def test_alg_id_published_bytes(scheme: SignatureScheme) -> None:
    if scheme.name in PUBLISHED:
        assert scheme.alg_id.hex() == PUBLISHED[scheme.name]
    assert len(scheme.alg_id) < 256


def test_pss_alg_id_fields() -> None:
    # SHA-384/512 differ from SHA-256 only in the hash OID's last arc and the salt length.
    a256, a384 = sig.RSA_PSS_SHA256.alg_id, sig.RSA_PSS_SHA384.alg_id
    assert a384 == a256.replace(b"\x04\x02\x01\x05\x00", b"\x04\x02\x02\x05\x00")[:-1] + bytes([48])
    assert sig.RSA_PSS_SHA512.alg_id[-1] == 64


def test_no_null_variants_accepted() -> None:
    assert bytes.fromhex("300b06092a864886f70d01010b") in sig.RSA_PKCS1_SHA256.also_accepted
    no_null = bytes.fromhex(
        "303d06092a864886f70d01010a3030a00d300b0609608648016503040201"
        "a11a301806092a864886f70d010108300b0609608648016503040201a203020120"
    )
    assert no_null in sig.RSA_PSS_SHA256.also_accepted


# -- sign / verify ------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_round_trip(pair: tuple[SignatureScheme, pki.KeyType]) -> None:
    scheme, kt = pair
    k = key(kt)
    auth = sig.sign(k, scheme, OCTETS)
    assert auth.method == scheme.method
    if scheme.method == AuthMethod.DIGITAL_SIGNATURE:
        n = auth.data[0]
        assert auth.data[1 : 1 + n] == scheme.alg_id
    sig.verify(k.public_key(), auth, OCTETS)
    assert sig.scheme_of(auth)[0] == scheme


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_tampered_octets_and_signature_fail(pair: tuple[SignatureScheme, pki.KeyType]) -> None:
    scheme, kt = pair
    k = key(kt)
    auth = sig.sign(k, scheme, OCTETS)
    with pytest.raises(AuthenticationError, match="signature invalid"):
        sig.verify(k.public_key(), auth, OCTETS[:-1] + b"\x00")
    flipped = auth.data[:-5] + bytes([auth.data[-5] ^ 0x01]) + auth.data[-4:]
    with pytest.raises(AuthenticationError, match="signature invalid"):
        sig.verify(k.public_key(), AuthPayload(auth.method, flipped), OCTETS)
    with pytest.raises(AuthenticationError):
        sig.verify(k.public_key(), AuthPayload(auth.method, auth.data[:-1]), OCTETS)


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_other_key_of_same_type_fails(pair: tuple[SignatureScheme, pki.KeyType]) -> None:
    scheme, kt = pair
    auth = sig.sign(key(kt), scheme, OCTETS)
    with pytest.raises(AuthenticationError, match="signature invalid"):
        sig.verify(key(kt, slot=1).public_key(), auth, OCTETS)


def test_signatures_are_what_the_rfcs_say() -> None:
    """Check the signature values with cryptography directly, not through verify()."""
    rsa_k, p256, p521, ed = key("rsa2048"), key("p256"), key("p521"), key("ed25519")
    assert isinstance(rsa_k, rsa.RSAPrivateKey)
    # RSA_SIG: bare PKCS#1 v1.5 with SHA-1.
    legacy = sig.sign(rsa_k, sig.LEGACY_RSA_SHA1, OCTETS).data
    rsa_k.public_key().verify(legacy, OCTETS, padding.PKCS1v15(), hashes.SHA1())
    # PSS: MGF1 with the same hash, salt exactly the hash length.
    pss = sig.sign(rsa_k, sig.RSA_PSS_SHA384, OCTETS).data
    value = pss[1 + pss[0] :]
    rsa_k.public_key().verify(
        value, OCTETS, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384()
    )
    with pytest.raises(Exception):  # noqa: B017 - any failure: the salt length is not 32
        rsa_k.public_key().verify(
            value, OCTETS, padding.PSS(padding.MGF1(hashes.SHA384()), 32), hashes.SHA384()
        )
    # RFC 7427 ECDSA: DER Ecdsa-Sig-Value.
    der = sig.sign(p256, sig.ECDSA_SHA384, OCTETS).data
    assert isinstance(p256, ec.EllipticCurvePrivateKey)
    p256.public_key().verify(der[1 + der[0] :], OCTETS, ec.ECDSA(hashes.SHA384()))
    # RFC 4754: r|s, 66 bytes each on P-521.
    fixed = sig.sign(p521, sig.LEGACY_ECDSA_P521, OCTETS).data
    assert len(fixed) == 132
    assert isinstance(p521, ec.EllipticCurvePrivateKey)
    r, s = int.from_bytes(fixed[:66], "big"), int.from_bytes(fixed[66:], "big")
    p521.public_key().verify(encode_dss_signature(r, s), OCTETS, ec.ECDSA(hashes.SHA512()))
    assert len(sig.sign(key("p256"), sig.LEGACY_ECDSA_P256, OCTETS).data) == 64
    assert len(sig.sign(key("p384"), sig.LEGACY_ECDSA_P384, OCTETS).data) == 96
    # Ed25519 signs the octets themselves.
    eddata = sig.sign(ed, sig.ED25519, OCTETS).data
    assert isinstance(ed, ed25519.Ed25519PrivateKey)
    ed.public_key().verify(eddata[1 + eddata[0] :], OCTETS)


@pytest.mark.parametrize("scheme", [sig.RSA_PKCS1_SHA256, sig.RSA_PSS_SHA256, sig.RSA_PSS_SHA512])
def test_verify_accepts_alternative_alg_id_encodings(scheme: SignatureScheme) -> None:
    k = key("rsa2048")
    auth = sig.sign(k, scheme, OCTETS)
    value = auth.data[1 + auth.data[0] :]
    for alt in scheme.also_accepted:
        sig.verify(
            k.public_key(),
            AuthPayload(AuthMethod.DIGITAL_SIGNATURE, bytes([len(alt)]) + alt + value),
            OCTETS,
        )


@pytest.mark.parametrize(
    ("scheme", "kt", "shown"),
    [
        (sig.ECDSA_SHA256, "rsa2048", "RSA-2048"),
        (sig.RSA_PKCS1_SHA256, "p256", "ECDSA secp256r1"),
        (sig.RSA_PSS_SHA256, "ed25519", "Ed25519"),
        (sig.ED25519, "p384", "ECDSA secp384r1"),
        (sig.LEGACY_RSA_SHA1, "ed25519", "Ed25519"),
        (sig.LEGACY_ECDSA_P256, "p384", "ECDSA secp384r1"),
        (sig.LEGACY_ECDSA_P521, "p256", "ECDSA secp256r1"),
    ],
)
def test_scheme_key_mismatch(scheme: SignatureScheme, kt: pki.KeyType, shown: str) -> None:
    message = f"signature scheme {scheme.name} does not match key type {shown}"
    with pytest.raises(ValueError, match=message):
        sig.sign(key(kt), scheme, OCTETS)
    # A signature made correctly by another key type, checked against this key.
    right_kt = {"RSA": "rsa2048", "ECDSA": "p256", "Ed25519": "ed25519"}[scheme.key_kind]
    if scheme.curve == "secp521r1":
        right_kt = "p521"
    auth = sig.sign(key(right_kt), scheme, OCTETS)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError, match=message):
        sig.verify(key(kt).public_key(), auth, OCTETS)


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b""), "empty"),
        (AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b"\x10\x30\x05"), "truncated"),
        (
            AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b"\x07" + bytes.fromhex("300506032b6570")),
            "truncated",
        ),
        (
            AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b"\x03\x30\x01\x05sig"),
            "unsupported signature algorithm",
        ),
        # sha1WithRSAEncryption inside RFC 7427: we announce SHA-2 only.
        (
            AuthPayload(
                AuthMethod.DIGITAL_SIGNATURE,
                bytes.fromhex("0f300d06092a864886f70d0101050500") + b"s",
            ),
            "unsupported",
        ),
        (AuthPayload(AuthMethod.PSK, b"x" * 32), "not a signature"),
        (AuthPayload(AuthMethod.DSS_SIG, b"x" * 40), "not a signature"),
        (AuthPayload(99, b"x"), "99 is not a signature"),
    ],
)
def test_malformed_auth(auth: AuthPayload, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        sig.verify(key("ed25519").public_key(), auth, OCTETS)


@given(method=st.sampled_from([1, 9, 10, 11, 14]), data=st.binary(max_size=300))
def test_garbage_auth_only_raises_authentication_error(method: int, data: bytes) -> None:
    for kt in ("p256", "ed25519", "rsa2048"):
        with pytest.raises(AuthenticationError):
            sig.verify(key(kt).public_key(), AuthPayload(method, data), OCTETS)


def test_allowed_restricts_schemes() -> None:
    k = key("rsa2048")
    legacy = sig.sign(k, sig.LEGACY_RSA_SHA1, OCTETS)
    modern = sig.sign(k, sig.RSA_PSS_SHA256, OCTETS)
    allowed = set(sig.DIGITAL_SIGNATURE_SCHEMES)
    sig.verify(k.public_key(), modern, OCTETS, allowed=allowed)
    with pytest.raises(AuthenticationError, match="rsa-sig-sha1 is not allowed"):
        sig.verify(k.public_key(), legacy, OCTETS, allowed=allowed)


# -- scheme choice ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kt", "peer", "pss", "expected"),
    [
        ("rsa2048", None, False, sig.LEGACY_RSA_SHA1),
        ("rsa2048", set(), False, sig.LEGACY_RSA_SHA1),
        ("rsa2048", ALL_SHA2, False, sig.RSA_PKCS1_SHA256),
        ("rsa2048", ALL_SHA2, True, sig.RSA_PSS_SHA256),
        ("rsa3072", {HashAlgorithm.SHA2_512}, True, sig.RSA_PSS_SHA512),
        ("rsa2048", {HashAlgorithm.SHA1}, False, sig.LEGACY_RSA_SHA1),
        ("p256", None, False, sig.LEGACY_ECDSA_P256),
        ("p384", None, False, sig.LEGACY_ECDSA_P384),
        ("p521", None, False, sig.LEGACY_ECDSA_P521),
        ("p256", ALL_SHA2, False, sig.ECDSA_SHA256),
        ("p384", ALL_SHA2, False, sig.ECDSA_SHA384),
        ("p521", ALL_SHA2, False, sig.ECDSA_SHA512),
        ("p384", {HashAlgorithm.SHA2_256}, False, sig.ECDSA_SHA256),
        ("p256", {HashAlgorithm.IDENTITY}, False, sig.LEGACY_ECDSA_P256),
        ("ed25519", {HashAlgorithm.IDENTITY}, False, sig.ED25519),
        ("ed25519", set(sig.our_hash_algorithms()), True, sig.ED25519),
    ],
)
def test_choose(
    kt: pki.KeyType, peer: set[int] | None, pss: bool, expected: SignatureScheme
) -> None:
    assert sig.choose_signature_scheme(key(kt), peer, prefer_pss=pss) == expected


@pytest.mark.parametrize("peer", [None, set(), ALL_SHA2])
def test_ed25519_needs_identity_hash(peer: set[int] | None) -> None:
    with pytest.raises(AuthenticationError, match="IDENTITY"):
        sig.choose_signature_scheme(key("ed25519"), peer)


def test_choose_other_curve_without_rfc7427() -> None:
    k = ec.generate_private_key(ec.SECP256K1())
    assert sig.choose_signature_scheme(k, ALL_SHA2) == sig.ECDSA_SHA256
    with pytest.raises(AuthenticationError, match="secp256k1"):
        sig.choose_signature_scheme(k, None)


def test_choose_unsupported_key() -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        sig.choose_signature_scheme(ed25519.Ed25519PrivateKey.generate().public_key(), None)  # type: ignore[arg-type]


def test_chosen_scheme_signs_and_verifies_for_every_key() -> None:
    for kt in pki.KEY_TYPES:
        for peer in (None, set(sig.our_hash_algorithms())):
            if kt == "ed25519" and peer is None:
                continue
            k = key(kt)
            scheme = sig.choose_signature_scheme(k, peer)
            sig.verify(k.public_key(), sig.sign(k, scheme, OCTETS), OCTETS)


# -- SIGNATURE_HASH_ALGORITHMS ----------------------------------------------------------


def test_hash_algorithm_notify_data() -> None:
    ours = sig.our_hash_algorithms()
    assert ours == [2, 3, 4, 5]
    data = sig.encode_hash_algorithms(ours)
    assert data == bytes.fromhex("0002000300040005")
    assert sig.decode_hash_algorithms(data) == {2, 3, 4, 5}
    assert sig.decode_hash_algorithms(b"") == set()
    assert sig.decode_hash_algorithms(b"\x00\x01\x12\x34") == {1, 0x1234}
    with pytest.raises(DecodeError):
        sig.decode_hash_algorithms(b"\x00\x02\x00")


def test_cert_key_works_with_verify() -> None:
    """The engine verifies with cert.public_key(); make sure those objects are accepted."""
    ca = pki.make_ca("CN=CA", "p256", key=key("p256"))
    for kt in ("rsa2048", "p384", "ed25519"):
        leaf = pki.issue(ca, f"CN={kt}", kt, key=key(kt))
        scheme = sig.choose_signature_scheme(leaf.key, set(sig.our_hash_algorithms()))
        pub = x509.load_der_x509_certificate(leaf.cert_der()).public_key()
        sig.verify(pub, sig.sign(leaf.key, scheme, OCTETS), OCTETS)  # type: ignore[arg-type]
