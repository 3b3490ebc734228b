"""A small test PKI built with `cryptography`: CAs, intermediates and end-entity certs.

Usage::

    ca = make_ca("CN=Test Root CA,O=Example", "p256")
    sub = make_intermediate(ca, "CN=Test Sub CA,O=Example")
    hub = issue(sub, "CN=hub,O=Example", "rsa2048", sans=["hub.example.org", "192.0.2.1"])
    hub.cert, hub.key, hub.chain()   # x509.Certificate, private key, [hub, sub] (no root)
    hub.write(tmp_path, "hub")        # hub.crt / hub.key PEM files

Names are written "CN=x,O=y" (first attribute first in the DER, as IKE IDs are written);
this module parses them itself so that tests do not depend on the code they test.
Validity defaults to [NOW - 1 day, NOW + 365 days], with NOW fixed at import time.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa2048", "rsa3072", "p256", "p384", "p521", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("rsa2048", "rsa3072", "p256", "p384", "p521", "ed25519")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)

# Key usage flag names, as the keyword arguments of x509.KeyUsage.
EE_KEY_USAGE = frozenset({"digital_signature"})
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign"})
_KU_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
IKE_INTERMEDIATE_EKU = x509.ObjectIdentifier("1.3.6.1.5.5.8.2.2")  # RFC 4945 §5.1.3.12
SERVER_AUTH_EKU = ExtendedKeyUsageOID.SERVER_AUTH

_NAME_KEYS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
}


def new_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of the given type."""
    if key_type == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(65537, 3072)
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


@functools.cache
def cached_key(key_type: KeyType, slot: int = 0) -> PrivateKey:
    """A key shared by every test that asks for the same (type, slot): RSA is slow to make."""
    return new_key(key_type)


def name(text: str | x509.Name) -> x509.Name:
    """'CN=hub,O=Example' -> x509.Name in the written order (no escapes; test names only)."""
    if isinstance(text, x509.Name):
        return text
    rdns = []
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(_NAME_KEYS[key], value)]))
    return x509.Name(rdns)


def general_name(san: str | x509.GeneralName) -> x509.GeneralName:
    """A SAN from text: IP literal, user@domain (rfc822Name), CN=.. (directoryName), else DNS."""
    if isinstance(san, x509.GeneralName):
        return san
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        pass
    if "=" in san:
        return x509.DirectoryName(name(san))
    if "@" in san:
        return x509.RFC822Name(san)
    return x509.DNSName(san)


@dataclass
class Issued:
    """A certificate with its private key and the authority that issued it."""

    cert: x509.Certificate
    key: PrivateKey
    issuer: Issued | None = None  # None for a self-signed root

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    def chain(self) -> list[x509.Certificate]:
        """This cert and its issuers up to, but not including, the self-signed root."""
        out: list[x509.Certificate] = []
        node: Issued | None = self
        while node is not None and node.issuer is not None:
            out.append(node.cert)
            node = node.issuer
        return out or [self.cert]

    def root(self) -> Issued:
        node = self
        while node.issuer is not None:
            node = node.issuer
        return node

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, password: bytes | None = None) -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write <stem>.crt and <stem>.key (PEM) into directory; returns both paths."""
        cert_path = Path(directory) / f"{stem}.crt"
        key_path = Path(directory) / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem())
        key_path.write_bytes(self.key_pem())
        key_path.chmod(0o600)
        return cert_path, key_path


class _Default:
    """Marker: use the usual value for a CA or an end entity."""


DEFAULT = _Default()


def _sign_args(key: PrivateKey, hash_alg: hashes.HashAlgorithm | None, pss: bool) -> dict:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"algorithm": None}
    args: dict = {"algorithm": hash_alg or hashes.SHA256()}
    if pss:
        h = hash_alg or hashes.SHA256()
        args["rsa_padding"] = padding.PSS(padding.MGF1(h), h.digest_size)
    return args


def _build(
    subject: x509.Name,
    key: PrivateKey,
    issuer_name: x509.Name,
    issuer_key: PrivateKey,
    *,
    is_ca: bool,
    path_length: int | None,
    sans: Sequence[str | x509.GeneralName],
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    key_usage: Iterable[str] | _Default | None,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None,
    basic_constraints: bool,
    hash_alg: hashes.HashAlgorithm | None,
    pss: bool,
    issuer_ski: x509.SubjectKeyIdentifier | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 365 * DAY)
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
    if isinstance(key_usage, _Default):
        key_usage = CA_KEY_USAGE if is_ca else EE_KEY_USAGE
    if key_usage is not None:
        flags = set(key_usage)
        unknown = flags - set(_KU_FLAGS)
        if unknown:
            raise ValueError(f"unknown key usage {sorted(unknown)}")
        builder = builder.add_extension(
            x509.KeyUsage(**{f: f in flags for f in _KU_FLAGS}), critical=True
        )
    if extended_key_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended_key_usage), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([general_name(s) for s in sans]), critical=False
        )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = builder.add_extension(ski, critical=False)
    if issuer_ski is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
        builder = builder.add_extension(aki, critical=False)
    return builder.sign(issuer_key, **_sign_args(issuer_key, hash_alg, pss))


def make_ca(
    subject: str | x509.Name,
    key_type: KeyType = "p256",
    *,
    key: PrivateKey | None = None,
    path_length: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key_usage: Iterable[str] | _Default | None = DEFAULT,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> Issued:
    """A self-signed root CA."""
    key = key or new_key(key_type)
    subj = name(subject)
    cert = _build(
        subj,
        key,
        subj,
        key,
        is_ca=True,
        path_length=path_length,
        sans=(),
        not_before=not_before,
        not_after=not_after,
        key_usage=key_usage,
        extended_key_usage=None,
        basic_constraints=True,
        hash_alg=hash_alg,
        pss=False,
        issuer_ski=None,
    )
    return Issued(cert, key, None)


def issue(
    ca: Issued,
    subject: str | x509.Name,
    key_type: KeyType = "p256",
    *,
    key: PrivateKey | None = None,
    sans: Sequence[str | x509.GeneralName] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key_usage: Iterable[str] | _Default | None = DEFAULT,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None = None,
    is_ca: bool = False,
    path_length: int | None = None,
    basic_constraints: bool = True,
    hash_alg: hashes.HashAlgorithm | None = None,
    pss: bool = False,
    signer: PrivateKey | None = None,
) -> Issued:
    """A certificate for ``subject`` signed by ``ca``.

    key_usage: DEFAULT (digitalSignature, or keyCertSign+cRLSign for a CA), None to omit the
    extension, or a set of x509.KeyUsage flag names. ``signer`` signs with another key than
    the CA's (a certificate whose signature does not verify). ``pss`` signs with RSASSA-PSS.
    """
    key = key or new_key(key_type)
    try:
        issuer_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        issuer_ski = None
    cert = _build(
        name(subject),
        key,
        ca.cert.subject,
        signer or ca.key,
        is_ca=is_ca,
        path_length=path_length,
        sans=sans,
        not_before=not_before,
        not_after=not_after,
        key_usage=key_usage,
        extended_key_usage=extended_key_usage,
        basic_constraints=basic_constraints,
        hash_alg=hash_alg,
        pss=pss,
        issuer_ski=issuer_ski,
    )
    return Issued(cert, key, ca)


def make_intermediate(
    ca: Issued,
    subject: str | x509.Name,
    key_type: KeyType = "p256",
    **kwargs: object,
) -> Issued:
    """An intermediate CA signed by ``ca`` (same keyword arguments as issue())."""
    return issue(ca, subject, key_type, is_ca=True, **kwargs)  # type: ignore[arg-type]
