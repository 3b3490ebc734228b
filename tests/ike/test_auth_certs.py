"""Certificates: loading, chain validation, identity checks, CERT/CERTREQ payloads."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from ike.auth import certs
from ike.auth.certs import TrustStore
from ike.auth.identity import Identity
from ike.constants import CertEncoding, IdType, PayloadType
from ike.errors import AuthenticationError
from ike.payloads import CertPayload, CertReqPayload
from tests.ike import pki

NOW = pki.NOW
DAY = pki.DAY


def k(kt: pki.KeyType, slot: int = 0) -> pki.PrivateKey:
    return pki.cached_key(kt, slot)


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_ca("CN=Test Root CA, O=Example", "p384", key=k("p384"))


@pytest.fixture(scope="module")
def sub(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, "CN=Test Sub CA, O=Example", "p256", key=k("p256"))


@pytest.fixture(scope="module")
def hub(sub: pki.Issued) -> pki.Issued:
    return pki.issue(
        sub,
        "CN=hub, O=Example",
        "rsa2048",
        key=k("rsa2048"),
        sans=[
            "hub.example.org",
            "Alice@Example.org",
            "192.0.2.1",
            "2001:db8::1",
            "CN=alias, O=Example",
        ],
    )


@pytest.fixture(scope="module")
def store(root: pki.Issued) -> TrustStore:
    return TrustStore([root.cert])


def fails(
    store: TrustStore,
    leaf: pki.Issued,
    intermediates: list[x509.Certificate],
    match: str,
    now: datetime.datetime = NOW,
) -> None:
    with pytest.raises(AuthenticationError, match=match):
        store.validate(leaf.cert, intermediates, now)


# -- loading --------------------------------------------------------------------------


def test_load_certificates_pem_bundle_der_and_bytes(
    tmp_path: Path, root: pki.Issued, sub: pki.Issued
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(sub.cert_pem() + root.cert_pem())
    assert certs.load_certificates(bundle) == [sub.cert, root.cert]
    assert certs.load_certificates(str(bundle)) == [sub.cert, root.cert]
    der = tmp_path / "root.der"
    der.write_bytes(root.cert_der())
    assert certs.load_certificates(der) == [root.cert]
    assert certs.load_certificates(root.cert_pem()) == [root.cert]


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_load_certificates_errors(data: bytes) -> None:
    with pytest.raises(ValueError, match="no valid PEM or DER certificate"):
        certs.load_certificates(data)


def test_load_certificates_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        certs.load_certificates(tmp_path / "nope.pem")


@pytest.mark.parametrize("kt", ["rsa2048", "p256", "p384", "p521", "ed25519"])
def test_load_private_key(tmp_path: Path, kt: pki.KeyType) -> None:
    key = k(kt)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    loaded = certs.load_private_key(path)
    assert loaded.public_key() == key.public_key()
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert certs.load_private_key(der).public_key() == key.public_key()


def test_load_private_key_traditional_formats() -> None:
    rsa_pem = k("rsa2048").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert isinstance(certs.load_private_key(rsa_pem), rsa.RSAPrivateKey)
    ec_pem = k("p256").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert isinstance(certs.load_private_key(ec_pem), ec.EllipticCurvePrivateKey)


def test_load_private_key_password(tmp_path: Path, root: pki.Issued) -> None:
    path = tmp_path / "enc.pem"
    path.write_bytes(root.key_pem(password=b"hunter2-hunter2"))
    with pytest.raises(ValueError, match="needs a password"):
        certs.load_private_key(path)
    with pytest.raises(ValueError, match="not a valid private key") as info:
        certs.load_private_key(path, b"wrong")
    assert "hunter2" not in str(info.value)
    assert certs.load_private_key(path, b"hunter2-hunter2").public_key() == root.key.public_key()


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (rsa.generate_private_key(65537, 1024), "1024 bits"),
        (ec.generate_private_key(ec.SECP256K1()), "unsupported curve secp256k1"),
        (ed448.Ed448PrivateKey.generate(), "unsupported key type"),
    ],
    ids=["rsa1024", "secp256k1", "ed448"],
)
def test_load_private_key_refuses(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey, reason: str
) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match=reason):
        certs.load_private_key(pem)


def test_load_private_key_garbage() -> None:
    with pytest.raises(ValueError, match="not a valid private key"):
        certs.load_private_key(b"\x30\x03\x02\x01\x00")


# -- CERTREQ --------------------------------------------------------------------------


def der_split(buf: bytes) -> list[tuple[bytes, bytes]]:
    """(whole TLV, content) of each DER element in buf (test-side reader)."""
    out, pos = [], 0
    while pos < len(buf):
        n = buf[pos + 1]
        start, length = pos + 2, n
        if n >= 0x80:
            start += n & 0x7F
            length = int.from_bytes(buf[pos + 2 : start], "big")
        out.append((buf[pos : start + length], buf[start : start + length]))
        pos = start + length
    return out


def spki_from_der(cert: x509.Certificate) -> bytes:
    """SubjectPublicKeyInfo bytes cut out of the certificate DER, not re-encoded."""
    [(_, certificate)] = der_split(cert.public_bytes(serialization.Encoding.DER))
    (_, tbs), _alg, _sig = der_split(certificate)
    fields = der_split(tbs)
    # [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    assert fields[0][0][0] == 0xA0
    return fields[6][0]


def test_certreq_data_is_sha1_of_spki(root: pki.Issued, sub: pki.Issued) -> None:
    ed_root = pki.make_ca("CN=Ed Root", "ed25519", key=k("ed25519"))
    store = TrustStore([root.cert, sub.cert, ed_root.cert, root.cert])  # duplicate dropped
    expected = b"".join(hashlib.sha1(spki_from_der(c.cert)).digest() for c in (root, sub, ed_root))
    assert store.certreq_data() == expected
    assert len(store.certreq_data()) == 60
    payload = store.certreq_payload()
    assert payload.encoding == CertEncoding.X509_SIGNATURE
    assert payload.data == expected


def test_certreq_hashes_from_payloads() -> None:
    h1, h2 = b"\x01" * 20, b"\x02" * 20
    payloads = [
        CertReqPayload(CertEncoding.X509_SIGNATURE, h1 + h2 + b"\x03" * 7),  # partial tail ignored
        CertReqPayload(CertEncoding.PKCS7_X509, b"\x04" * 20),
    ]
    assert certs.certreq_hashes(payloads) == {h1, h2}


# -- chain validation: success --------------------------------------------------------


def test_good_chain_with_intermediate(
    store: TrustStore, root: pki.Issued, sub: pki.Issued, hub: pki.Issued
) -> None:
    assert store.validate(hub.cert, [sub.cert], NOW) == [hub.cert, sub.cert, root.cert]


def test_good_chain_directly_under_root(store: TrustStore, root: pki.Issued) -> None:
    leaf = pki.issue(root, "CN=direct", "p256", key=k("p256", 1))
    assert store.validate(leaf.cert, [], NOW) == [leaf.cert, root.cert]


def test_intermediate_order_duplicates_and_extras_do_not_matter(
    store: TrustStore, root: pki.Issued, sub: pki.Issued, hub: pki.Issued
) -> None:
    other = pki.make_ca("CN=Unrelated", "p256", key=k("p256", 2))
    chain = store.validate(hub.cert, [other.cert, sub.cert, root.cert, sub.cert, hub.cert], NOW)
    assert chain == [hub.cert, sub.cert, root.cert]


@pytest.mark.parametrize("ca_type", ["rsa3072", "p521", "ed25519"])
@pytest.mark.parametrize("leaf_type", ["rsa2048", "p384", "ed25519"])
def test_key_types(ca_type: pki.KeyType, leaf_type: pki.KeyType) -> None:
    ca = pki.make_ca(f"CN={ca_type} Root", ca_type, key=k(ca_type))
    inter = pki.make_intermediate(ca, "CN=Inter", leaf_type, key=k(leaf_type, 3))
    leaf = pki.issue(inter, "CN=leaf", leaf_type, key=k(leaf_type))
    assert TrustStore([ca.cert]).validate(leaf.cert, [inter.cert], NOW) == [
        leaf.cert,
        inter.cert,
        ca.cert,
    ]


def test_pss_signed_and_sha512_signed(store: TrustStore) -> None:
    ca = pki.make_ca("CN=RSA Root", "rsa2048", key=k("rsa2048", 1))
    a = pki.issue(ca, "CN=pss", "p256", key=k("p256"), pss=True, hash_alg=hashes.SHA384())
    b = pki.issue(ca, "CN=sha512", "p256", key=k("p256"), hash_alg=hashes.SHA512())
    for leaf in (a, b):
        assert TrustStore([ca.cert]).validate(leaf.cert, [], NOW)[-1] == ca.cert


def test_any_eku_accepted(store: TrustStore, sub: pki.Issued) -> None:
    for eku in (
        [pki.SERVER_AUTH_EKU],
        [pki.IKE_INTERMEDIATE_EKU],
        [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")],
    ):
        leaf = pki.issue(sub, "CN=eku", "p256", key=k("p256"), extended_key_usage=eku)
        store.validate(leaf.cert, [sub.cert], NOW)


def test_end_entity_without_key_usage_or_basic_constraints(
    store: TrustStore, sub: pki.Issued
) -> None:
    leaf = pki.issue(
        sub, "CN=plain", "p256", key=k("p256"), key_usage=None, basic_constraints=False
    )
    store.validate(leaf.cert, [sub.cert], NOW)


def test_validity_boundaries_are_inclusive(store: TrustStore, sub: pki.Issued) -> None:
    nb, na = NOW - DAY / 2, NOW + 10 * DAY  # inside the CAs' validity
    leaf = pki.issue(sub, "CN=edge", "p256", key=k("p256"), not_before=nb, not_after=na)
    store.validate(leaf.cert, [sub.cert], nb)
    store.validate(leaf.cert, [sub.cert], na)
    fails(store, leaf, [sub.cert], "not valid before", nb - datetime.timedelta(seconds=1))
    fails(store, leaf, [sub.cert], "expired", na + datetime.timedelta(seconds=1))


def test_path_length_respected(root: pki.Issued) -> None:
    ca = pki.make_ca("CN=PL Root", "p256", key=k("p256", 4), path_length=1)
    i1 = pki.make_intermediate(ca, "CN=PL I1", "p256", key=k("p256", 5), path_length=0)
    leaf = pki.issue(i1, "CN=leaf", "p256", key=k("p256"))
    assert len(TrustStore([ca.cert]).validate(leaf.cert, [i1.cert], NOW)) == 3


def test_backtracks_past_a_same_name_impostor(
    store: TrustStore, root: pki.Issued, sub: pki.Issued, hub: pki.Issued
) -> None:
    impostor = pki.make_intermediate(root, "CN=Test Sub CA, O=Example", "p256", key=k("p256", 6))
    assert store.validate(hub.cert, [impostor.cert, sub.cert], NOW) == [
        hub.cert,
        sub.cert,
        root.cert,
    ]


def test_two_roots_with_same_name(sub: pki.Issued, hub: pki.Issued, root: pki.Issued) -> None:
    twin = pki.make_ca("CN=Test Root CA, O=Example", "p384", key=k("p384", 1))
    assert TrustStore([twin.cert, root.cert]).validate(hub.cert, [sub.cert], NOW)[-1] == root.cert


# -- chain validation: failures -------------------------------------------------------


def test_expired_end_entity(store: TrustStore, sub: pki.Issued) -> None:
    leaf = pki.issue(
        sub,
        "CN=old, O=Example",
        "p256",
        key=k("p256"),
        not_before=datetime.datetime(2019, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    fails(
        store, leaf, [sub.cert], r"certificate CN=old, O=Example expired on 2020-01-02 03:04:05 UTC"
    )


def test_not_yet_valid_end_entity(store: TrustStore, sub: pki.Issued) -> None:
    leaf = pki.issue(
        sub, "CN=future", "p256", key=k("p256"), not_before=NOW + DAY, not_after=NOW + 9 * DAY
    )
    fails(store, leaf, [sub.cert], r"certificate CN=future is not valid before")


def test_expired_intermediate(store: TrustStore, root: pki.Issued) -> None:
    inter = pki.make_intermediate(
        root, "CN=Old Sub", "p256", key=k("p256", 1), not_before=NOW - 30 * DAY, not_after=NOW - DAY
    )
    leaf = pki.issue(inter, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [inter.cert], "certificate CN=Old Sub expired on")


def test_expired_root(hub: pki.Issued) -> None:
    old_root = pki.make_ca(
        "CN=Old Root", "p256", key=k("p256", 7), not_before=NOW - 30 * DAY, not_after=NOW - DAY
    )
    leaf = pki.issue(old_root, "CN=leaf", "p256", key=k("p256"))
    fails(TrustStore([old_root.cert]), leaf, [], "certificate CN=Old Root expired on")


def test_unknown_ca(store: TrustStore) -> None:
    other = pki.make_ca("CN=Other Root, O=Elsewhere", "p256", key=k("p256", 2))
    leaf = pki.issue(other, "CN=stranger", "p256", key=k("p256"))
    fails(store, leaf, [], r"unknown CA: issuer CN=Other Root, O=Elsewhere of CN=stranger")


def test_missing_intermediate(store: TrustStore, hub: pki.Issued) -> None:
    fails(store, hub, [], r"unknown CA: issuer CN=Test Sub CA, O=Example of CN=hub")


def test_intermediate_from_untrusted_root(sub: pki.Issued, hub: pki.Issued) -> None:
    other = pki.make_ca("CN=Other Root", "p256", key=k("p256", 2))
    fails(
        TrustStore([other.cert]),
        hub,
        [sub.cert],
        r"unknown CA: issuer CN=Test Root CA, O=Example of CN=Test Sub CA",
    )


def test_empty_store(hub: pki.Issued, sub: pki.Issued) -> None:
    fails(TrustStore([]), hub, [sub.cert], "unknown CA")


def test_issuer_not_a_ca(store: TrustStore, root: pki.Issued) -> None:
    not_ca = pki.issue(
        root,
        "CN=Not A CA",
        "p256",
        key=k("p256", 1),
        key_usage={"digital_signature", "key_cert_sign"},
    )
    leaf = pki.issue(not_ca, "CN=leaf", "p256", key=k("p256"))
    fails(
        store, leaf, [not_ca.cert], r"issuer CN=Not A CA is not a CA \(basicConstraints cA false\)"
    )


def test_issuer_without_basic_constraints(store: TrustStore, root: pki.Issued) -> None:
    no_bc = pki.issue(
        root,
        "CN=No BC",
        "p256",
        key=k("p256", 1),
        basic_constraints=False,
        key_usage={"key_cert_sign"},
    )
    leaf = pki.issue(no_bc, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [no_bc.cert], "issuer CN=No BC is not a CA")


def test_bad_signature(store: TrustStore, sub: pki.Issued) -> None:
    forged = pki.issue(sub, "CN=forged", "p256", key=k("p256"), signer=k("p256", 8))
    fails(
        store,
        forged,
        [sub.cert],
        r"signature of CN=forged does not verify with the key of CN=Test Sub CA, O=Example",
    )


def test_bad_signature_on_intermediate(store: TrustStore, root: pki.Issued) -> None:
    forged_sub = pki.issue(
        root, "CN=Forged Sub", "p256", key=k("p256", 1), is_ca=True, signer=k("p384", 2)
    )
    leaf = pki.issue(forged_sub, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [forged_sub.cert], "signature of CN=Forged Sub does not verify")


def test_end_entity_key_usage_without_digital_signature(store: TrustStore, sub: pki.Issued) -> None:
    leaf = pki.issue(
        sub, "CN=encipher", "rsa2048", key=k("rsa2048"), key_usage={"key_encipherment"}
    )
    fails(
        store,
        leaf,
        [sub.cert],
        "keyUsage of certificate CN=encipher does not allow digitalSignature",
    )


def test_ca_key_usage_without_key_cert_sign(store: TrustStore, root: pki.Issued) -> None:
    inter = pki.make_intermediate(
        root, "CN=CRL Only", "p256", key=k("p256", 1), key_usage={"crl_sign", "digital_signature"}
    )
    leaf = pki.issue(inter, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [inter.cert], "keyUsage of CA CN=CRL Only does not allow keyCertSign")


def test_root_key_usage_without_key_cert_sign() -> None:
    ca = pki.make_ca("CN=Odd Root", "p256", key=k("p256", 9), key_usage={"digital_signature"})
    leaf = pki.issue(ca, "CN=leaf", "p256", key=k("p256"))
    fails(TrustStore([ca.cert]), leaf, [], "keyUsage of CA CN=Odd Root does not allow keyCertSign")


def test_path_length_exceeded() -> None:
    ca = pki.make_ca("CN=PL Root", "p256", key=k("p256", 4), path_length=0)
    inter = pki.make_intermediate(ca, "CN=PL Sub", "p256", key=k("p256", 5))
    leaf = pki.issue(inter, "CN=leaf", "p256", key=k("p256"))
    fails(
        TrustStore([ca.cert]),
        leaf,
        [inter.cert],
        r"path length constraint 0 of CN=PL Root exceeded",
    )


def test_chain_length_bounded() -> None:
    ca = pki.make_ca("CN=Deep Root", "p256", key=k("p256", 10))
    node, inters = ca, []
    for i in range(certs.MAX_CHAIN_LENGTH - 1):  # one too many: leaf + 7 CAs + root = 9
        node = pki.make_intermediate(node, f"CN=Level {i}", "p256", key=k("p256", 11))
        inters.append(node.cert)
    leaf = pki.issue(node, "CN=deep leaf", "p256", key=k("p256"))
    fails(TrustStore([ca.cert]), leaf, inters, f"longer than {certs.MAX_CHAIN_LENGTH}")
    # One level less fits exactly.
    leaf_ok = pki.issue(pki.Issued(inters[-2], k("p256", 11), None), "CN=ok", "p256", key=k("p256"))
    assert (
        len(TrustStore([ca.cert]).validate(leaf_ok.cert, inters[:-1], NOW))
        == certs.MAX_CHAIN_LENGTH
    )


def test_only_the_first_intermediates_are_considered(
    store: TrustStore, sub: pki.Issued, hub: pki.Issued
) -> None:
    filler = [
        pki.make_ca(f"CN=Filler {i}", "p256", key=k("p256", 12)).cert
        for i in range(certs.MAX_INTERMEDIATES)
    ]
    fails(store, hub, [*filler, sub.cert], "unknown CA")
    assert store.validate(hub.cert, [sub.cert, *filler[1:]], NOW)[1] == sub.cert


def test_issuer_loop_terminates(store: TrustStore) -> None:
    # Two CAs that certify each other, neither trusted.
    ka, kb = k("p256", 13), k("p256", 14)
    a_self = pki.make_ca("CN=Loop A", "p256", key=ka)
    b_by_a = pki.issue(a_self, "CN=Loop B", "p256", key=kb, is_ca=True)
    a_by_b = pki.issue(b_by_a, "CN=Loop A", "p256", key=ka, is_ca=True)
    leaf = pki.issue(b_by_a, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [b_by_a.cert, a_by_b.cert], "unknown CA")


def test_unknown_critical_extension(store: TrustStore, sub: pki.Issued) -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.name("CN=critical"))
        .issuer_name(sub.cert.subject)
        .public_key(k("p256").public_key())
        .serial_number(7)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    )
    leaf = pki.Issued(builder.sign(sub.key, hashes.SHA256()), k("p256"), sub)
    fails(store, leaf, [sub.cert], "unsupported critical extension 1.3.6.1.4.1.99999.1")


def test_name_constraints_refused(store: TrustStore, root: pki.Issued) -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.name("CN=Constrained"))
        .issuer_name(root.cert.subject)
        .public_key(k("p256", 1).public_key())
        .serial_number(8)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.NameConstraints([x509.DNSName("example.org")], None), critical=True)
    )
    inter = pki.Issued(builder.sign(root.key, hashes.SHA256()), k("p256", 1), root)
    leaf = pki.issue(inter, "CN=leaf", "p256", key=k("p256"))
    fails(store, leaf, [inter.cert], "unsupported critical extension 2.5.29.30")


def test_small_rsa_key_refused(store: TrustStore, sub: pki.Issued) -> None:
    leaf = pki.issue(sub, "CN=weak", "rsa2048", key=rsa.generate_private_key(65537, 1024))
    fails(store, leaf, [sub.cert], "RSA key of 1024 bits")


def test_naive_now_refused(store: TrustStore, hub: pki.Issued, sub: pki.Issued) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.validate(hub.cert, [sub.cert], datetime.datetime(2030, 1, 1))


# -- identities -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hub.example.org", True),
        ("HUB.Example.ORG", True),
        ("@hub.example.org", True),
        ("other.example.org", False),
        ("hub", False),  # the CN is not a dNSName
        ("alice@example.org", True),
        ("bob@example.org", False),
        ("192.0.2.1", True),
        ("192.0.2.2", False),
        ("2001:db8:0::1", True),
        ("2001:db8::2", False),
        ("CN=hub, O=Example", True),
        ("cn=HUB, o=example", True),
        ("O=Example, CN=hub", False),
        ("CN=hub", False),
        ("CN=alias, O=Example", True),  # SAN directoryName
        ("%any", True),
    ],
)
def test_certificate_matches_identity(hub: pki.Issued, text: str, expected: bool) -> None:
    assert certs.certificate_matches_identity(hub.cert, Identity.parse(text)) is expected


def test_certificate_without_san(sub: pki.Issued) -> None:
    leaf = pki.issue(sub, "CN=nosan.example.org", "p256", key=k("p256"))
    assert not certs.certificate_matches_identity(leaf.cert, Identity.parse("nosan.example.org"))
    assert certs.certificate_matches_identity(leaf.cert, Identity.parse("CN=nosan.example.org"))
    assert not certs.certificate_matches_identity(leaf.cert, Identity(IdType.KEY_ID, b"\x01"))


def test_peer_identity_from_payload_matches_cert(hub: pki.Issued) -> None:
    peer = Identity.from_payload(Identity.parse("hub.example.org").to_payload(PayloadType.IDr))
    assert certs.certificate_matches_identity(hub.cert, peer)
    weird = Identity(IdType.FQDN, b"hub.example.org\xff")
    assert not certs.certificate_matches_identity(hub.cert, weird)


def test_identity_from_certificate(hub: pki.Issued) -> None:
    ident = certs.identity_from_certificate(hub.cert)
    assert ident.id_type == IdType.DER_ASN1_DN
    assert ident.data == hub.cert.subject.public_bytes()
    assert str(ident) == "CN=hub, O=Example"
    assert certs.certificate_matches_identity(hub.cert, ident)
    assert certs.describe(hub.cert) == "CN=hub, O=Example"


# -- what to send ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep(root: pki.Issued, sub: pki.Issued) -> pki.Issued:
    sub2 = pki.make_intermediate(sub, "CN=Sub 2", "p256", key=k("p256", 15))
    return pki.issue(sub2, "CN=deep", "p256", key=k("p256"))


def sha1_spki(c: pki.Issued) -> bytes:
    return hashlib.sha1(spki_from_der(c.cert)).digest()


def test_select_chain(root: pki.Issued, sub: pki.Issued, deep: pki.Issued) -> None:
    sub2 = deep.issuer
    assert sub2 is not None
    ours = [deep.cert, sub2.cert, sub.cert, root.cert]
    everything = [deep.cert, sub2.cert, sub.cert]
    assert certs.select_chain_for_certreq(ours, None) == everything
    assert certs.select_chain_for_certreq(ours, set()) == everything
    assert certs.select_chain_for_certreq(ours, {b"\x00" * 20}) == everything
    assert certs.select_chain_for_certreq(ours, {sha1_spki(root)}) == everything
    assert certs.select_chain_for_certreq(ours, {sha1_spki(sub)}) == [deep.cert, sub2.cert]
    assert certs.select_chain_for_certreq(ours, {sha1_spki(sub2), sha1_spki(root)}) == [deep.cert]
    assert certs.select_chain_for_certreq([deep.cert], {sha1_spki(root)}) == [deep.cert]
    with pytest.raises(ValueError):
        certs.select_chain_for_certreq([], None)


def test_select_chain_from_store_certreq(
    root: pki.Issued, sub: pki.Issued, hub: pki.Issued
) -> None:
    peer_store = TrustStore([root.cert])
    wanted = certs.certreq_hashes([peer_store.certreq_payload()])
    sent = certs.select_chain_for_certreq([hub.cert, sub.cert, root.cert], wanted)
    end_entity, inters = certs.certs_from_payloads(certs.cert_payloads(sent))
    assert peer_store.validate(end_entity, inters, NOW) == [hub.cert, sub.cert, root.cert]


# -- CERT payloads --------------------------------------------------------------------


def test_cert_payload_round_trip(sub: pki.Issued, hub: pki.Issued) -> None:
    payloads = certs.cert_payloads([hub.cert, sub.cert])
    assert [p.encoding for p in payloads] == [CertEncoding.X509_SIGNATURE] * 2
    assert payloads[0].data == hub.cert_der()
    other = CertPayload(CertEncoding.HASH_URL_X509, b"\x00" * 20 + b"http://x")
    assert certs.certs_from_payloads([other, *payloads]) == (hub.cert, [sub.cert])


def test_cert_payload_errors(hub: pki.Issued) -> None:
    with pytest.raises(AuthenticationError, match=r"no X\.509 certificate"):
        certs.certs_from_payloads([])
    with pytest.raises(AuthenticationError, match=r"no X\.509 certificate"):
        certs.certs_from_payloads([CertPayload(CertEncoding.PKCS7_X509, hub.cert_der())])
    good = CertPayload(CertEncoding.X509_SIGNATURE, hub.cert_der())
    with pytest.raises(AuthenticationError, match="CERT payload 2 is not a DER certificate"):
        certs.certs_from_payloads(
            [good, CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x03\x02\x01\x01")]
        )
    with pytest.raises(AuthenticationError, match="CERT payload 1"):
        certs.certs_from_payloads([CertPayload(CertEncoding.X509_SIGNATURE, hub.cert_pem())])
    with pytest.raises(AuthenticationError, match="too many CERT payloads"):
        certs.certs_from_payloads([good] * (certs.MAX_CERT_PAYLOADS + 1))
    assert certs.certs_from_payloads([good] * certs.MAX_CERT_PAYLOADS)[0] == hub.cert
