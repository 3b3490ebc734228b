"""Client certificates for P2S users, signed by the [p2s].issuer CA (`gatewayctl p2s issue`).

A client certificate: ECDSA P-256 key, subject CN=NAME, subjectAltName rfc822Name when
NAME has an '@' (else dNSName) so that NAME works as the client's IKE identity, EKU
clientAuth, keyUsage digitalSignature. Written as NAME.key (0600), NAME.crt and NAME.p12
(PKCS#12 with the issuer chain, for Windows/macOS/iOS/Android imports).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewayd.p2s.fileio import atomic_write
from ike.auth.certs import PrivateKey, load_certificates, load_private_key

DEFAULT_DAYS = 365
MAX_DAYS = 3650
# Names that are a valid IKE identity (FQDN or RFC822), a CN (<= 64) and a file name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(@[A-Za-z0-9][A-Za-z0-9.-]*)?")
_BACKDATE = datetime.timedelta(minutes=5)  # client clocks run a little behind


class IssueError(Exception):
    """Cannot issue: missing or unusable issuer, bad name, files in the way."""


def check_client_name(name: str) -> None:
    if len(name) > 64 or not _NAME.fullmatch(name):
        raise IssueError(
            f"{name!r} cannot be a client certificate name: use letters, digits and . _ + - "
            "(optionally user@domain), at most 64 characters"
        )


@dataclass
class IssuerCa:
    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate]  # the issuer certificate, then any certificates above it


def load_issuer(cert_path: str, key_path: str, password: bytes | None = None) -> IssuerCa:
    """The [p2s].issuer CA; IssueError when it is not a CA or the key does not match."""
    try:
        chain = load_certificates(cert_path)
        key = load_private_key(key_path, password)
    except (OSError, ValueError) as e:
        raise IssueError(f"issuer: {e}") from None
    cert = chain[0]
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise IssueError(f"issuer: {cert_path} is not a CA certificate (basicConstraints cA)")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise IssueError(f"issuer: the key in {key_path} does not belong to {cert_path}")
    return IssuerCa(cert, key, chain)


def _signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def client_san(name: str) -> x509.GeneralName:
    return x509.RFC822Name(name) if "@" in name else x509.DNSName(name)


def make_client_certificate(
    issuer: IssuerCa,
    name: str,
    days: int = DEFAULT_DAYS,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    check_client_name(name)
    if not 1 <= days <= MAX_DAYS:
        raise IssueError(f"--days must be between 1 and {MAX_DAYS}")
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + datetime.timedelta(days=days), issuer.cert.not_valid_after_utc)
    try:
        issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    ku = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **ku), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([client_san(name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    cert = builder.sign(issuer.key, _signing_hash(issuer.key))  # type: ignore[arg-type]
    return cert, key


def pkcs12_bytes(
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    password: bytes,
) -> bytes:
    """PKCS#12 in the legacy PBES1 3DES / SHA-1 MAC form: the one that Windows, macOS and
    iOS all import (several releases refuse the AES/PBES2 form OpenSSL 3 writes by
    default). The password protects the file in transit, not at rest."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - the MAC those importers require
        .build(password)
    )
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, chain or None, encryption
        )
    raise IssueError(f"cannot put a {type(key).__name__} into PKCS#12")  # pragma: no cover


def new_p12_password() -> str:
    return secrets.token_urlsafe(12)  # 96 bits, typeable


@dataclass
class IssuedFiles:
    cert: x509.Certificate
    key_path: Path
    cert_path: Path
    p12_path: Path


def write_client_files(
    out_dir: Path,
    name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    chain: list[x509.Certificate],
    p12_password: bytes,
    force: bool = False,
) -> IssuedFiles:
    """NAME.key (0600), NAME.crt, NAME.p12 (0600) into out_dir (created 0700)."""
    paths = [out_dir / f"{name}{ext}" for ext in (".key", ".crt", ".p12")]
    if not force:
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise IssueError(
                f"{', '.join(existing)} already exist(s); use --force to replace "
                "(and revoke the old certificate)"
            )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(paths[0], key_pem, 0o600)
    atomic_write(paths[1], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    atomic_write(paths[2], pkcs12_bytes(name, key, cert, chain, p12_password), 0o600)
    return IssuedFiles(cert, *paths)


def default_client_dir(name: str) -> Path:
    return Path("/etc/gatewayd/p2s-clients") / name


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def describe_issued(files: IssuedFiles) -> list[str]:
    """What to tell the operator; the serial and fingerprint go into the revoked file."""
    c = files.cert
    return [
        f"certificate  {files.cert_path}",
        f"private key  {files.key_path} (mode 0600)",
        f"PKCS#12      {files.p12_path}",
        f"serial       {c.serial_number:x}",
        f"sha256       {fingerprint(c)}",
        f"valid until  {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
    ]


def issuer_in_client_ca(issuer: IssuerCa, client_ca: tuple[str, ...]) -> bool:
    """Will the gateway accept what this issuer signs? ([p2s].client_ca has it or a CA
    above it.) Unreadable files count as no: `gatewayd check` reports them."""
    wanted = {c.fingerprint(hashes.SHA256()) for c in issuer.chain}
    for path in client_ca:
        try:
            certs = load_certificates(os.fspath(path))
        except (OSError, ValueError):
            continue
        if any(c.fingerprint(hashes.SHA256()) in wanted for c in certs):
            return True
    return False
