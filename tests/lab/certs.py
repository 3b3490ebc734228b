"""Throwaway CA and end-entity certificates for pubkey-auth lab tests.

ECDSA P-256 by default; ``key_type`` picks another of KEY_TYPES. ``expired=True`` makes an
end-entity certificate whose validity ended yesterday."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path  # PEM certificate
    key: Path  # PEM PKCS#8 private key (unencrypted)
    dn: str  # subject as strongSwan writes identities: "O=gatewayd lab, CN=name"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewayd lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
KEY_TYPES = ("ecdsa256", "ecdsa384", "rsa3072", "ed25519")


def _new_key(key_type: str) -> Key:
    if key_type == "ecdsa256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"key_type must be one of {KEY_TYPES}")


def _digest(key: object) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a CA signs with: none for Ed25519, SHA-384 for P-384, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Key) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    dn = ", ".join(f"{a.rfc4514_string()}" for a in cert.subject)
    return CertFiles(cert_path, key_path, dn)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    pub: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    expired: bool = False,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=2)
    if expired:
        start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def make_ca(
    directory: Path, cn: str = "gatewayd lab CA", *, key_type: str = "ecdsa256", stem: str = "ca"
) -> CertFiles:
    key = _new_key(key_type)
    name = _name(cn)
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, _digest(key))
    )
    return _write(directory, stem, cert, key)


def make_cert(
    directory: Path,
    ca: CertFiles,
    cn: str,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    key_type: str = "ecdsa256",
    expired: bool = False,
    stem: str | None = None,
) -> CertFiles:
    """An end-entity certificate for ``cn`` with IP/DNS subjectAltNames, signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, Key)
    key = _new_key(key_type)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.DNSName(d) for d in dns]
    builder = _builder(_name(cn), ca_cert.subject, key.public_key(), expired)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, _digest(ca_key))
    return _write(directory, stem or cn.replace(" ", "_"), cert, key)
