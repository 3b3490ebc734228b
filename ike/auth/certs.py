"""X.509 for IKE: loading, CERT/CERTREQ payloads, chain validation, identity checks.

Chain validation is done here rather than with cryptography.x509.verification: that
verifier applies the Web PKI profile, which refuses Ed25519 CA keys (used by IKE
deployments, RFC 8420) and reports failures too vaguely to tell an operator what is
wrong. Signatures themselves are checked by cryptography (verify_directly_issued_by).

Profile (RFC 5280 §6 trimmed to what IKE needs, RFC 4945, RFC 4809):
- every certificate valid at the injected ``now``;
- issuers: basicConstraints cA (a trust anchor may instead be an old v1 certificate),
  keyCertSign if keyUsage is present, pathLenConstraint honoured;
- end entity: digitalSignature if keyUsage is present; any or no EKU (RFC 4809: EKU must
  not decide an IKE connection);
- no MD5/SHA-1 certificate signatures, no RSA keys below 2048 bits;
- critical extensions other than the ones above, SAN and key identifiers are refused
  (name constraints and policy processing are not implemented);
- at most MAX_CHAIN_LENGTH certificates per path, MAX_INTERMEDIATES candidates.
Revocation: no CRL/OCSP; the owner of a TrustStore may pass a ``revoked`` predicate (the
P2S revocation list) that every certificate of a path except the trust anchor must pass.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Callable, Collection, Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ike.auth.identity import Identity, dn_string
from ike.constants import CertEncoding, IdType
from ike.errors import AuthenticationError
from ike.payloads import CertPayload, CertReqPayload

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

MAX_CHAIN_LENGTH = 8  # certificates in one path, end entity and trust anchor included
MAX_INTERMEDIATES = 16  # untrusted intermediates we look at
MAX_CERT_PAYLOADS = 16  # CERT payloads we parse from one message
_MAX_SIGNATURE_CHECKS = 64  # bounds the path search when names repeat
MIN_RSA_BITS = 2048
_SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_CERTREQ_HASH_LEN = 20  # SHA-1

_PROCESSED_CRITICAL = frozenset(
    {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.ExtendedKeyUsage.oid,
        x509.SubjectAlternativeName.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
    }
)
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)

RevokedCheck = Callable[[x509.Certificate], bool]


# -- loading --------------------------------------------------------------------------


def _read(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "certificate data"
    with open(source, "rb") as f:
        return f.read(), os.fspath(source)


def load_certificates(source: str | os.PathLike[str] | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or bytes), or the one in a DER file. ValueError."""
    data, where = _read(source)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise ValueError(f"{where}: no valid PEM or DER certificate ({e})") from None


def load_private_key(
    source: str | os.PathLike[str] | bytes, password: bytes | None = None
) -> PrivateKey:
    """An RSA (>= 2048 bits), ECDSA (P-256/384/521) or Ed25519 private key, PEM or DER."""
    data, where = _read(source)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except TypeError:
        raise ValueError(f"{where}: key is encrypted and needs a password") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        # The message never contains key material, only what failed.
        raise ValueError(f"{where}: not a valid private key (or wrong password): {e}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where}: RSA key of {key.key_size} bits, need {MIN_RSA_BITS}")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _SUPPORTED_CURVES:
            raise ValueError(f"{where}: unsupported curve {key.curve.name}")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ValueError(f"{where}: unsupported key type {type(key).__name__} (RSA, ECDSA, Ed25519)")


# -- names for messages ---------------------------------------------------------------


def describe(cert: x509.Certificate) -> str:
    """The subject DN as we print DNs."""
    try:
        return dn_string(cert.subject)
    except ValueError:
        return f"certificate serial {cert.serial_number:x}"


def _fmt_time(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def spki_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's SubjectPublicKeyInfo DER: its CERTREQ hash (§3.7)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(spki).digest()  # noqa: S324 - the hash RFC 7296 prescribes


# -- single-certificate checks ----------------------------------------------------------


def _check_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise AuthenticationError(
            f"certificate {describe(cert)} is not valid before "
            f"{_fmt_time(cert.not_valid_before_utc)}"
        )
    if now > cert.not_valid_after_utc:
        raise AuthenticationError(
            f"certificate {describe(cert)} expired on {_fmt_time(cert.not_valid_after_utc)}"
        )


def _extension(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_common(cert: x509.Certificate, now: datetime.datetime) -> None:
    """What every certificate of a path must pass, end entity or CA."""
    _check_validity(cert, now)
    try:
        extensions = list(cert.extensions)
    except ValueError as e:  # duplicate or malformed extensions
        raise AuthenticationError(f"certificate {describe(cert)}: bad extensions ({e})") from None
    for ext in extensions:
        if ext.critical and ext.oid not in _PROCESSED_CRITICAL:
            raise AuthenticationError(
                f"certificate {describe(cert)} has an unsupported critical extension "
                f"{ext.oid.dotted_string}"
            )
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise AuthenticationError(f"certificate {describe(cert)}: unusable key ({e})") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise AuthenticationError(
            f"certificate {describe(cert)} has an RSA key of {key.key_size} bits"
        )


def _check_end_entity(cert: x509.Certificate, now: datetime.datetime) -> None:
    _check_common(cert, now)
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        raise AuthenticationError(
            f"keyUsage of certificate {describe(cert)} does not allow digitalSignature"
        )


def _check_issuer(ca: x509.Certificate, cas_below: int, anchor: bool) -> None:
    """May ``ca`` sign certificates, with ``cas_below`` intermediate CAs under it?"""
    bc = _extension(ca, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints):
        if not (anchor and ca.version == x509.Version.v1):
            raise AuthenticationError(
                f"issuer {describe(ca)} is not a CA (no basicConstraints extension)"
            )
    elif not bc.ca:
        raise AuthenticationError(f"issuer {describe(ca)} is not a CA (basicConstraints cA false)")
    elif bc.path_length is not None and cas_below > bc.path_length:
        raise AuthenticationError(
            f"path length constraint {bc.path_length} of {describe(ca)} exceeded "
            f"({cas_below} intermediate CAs below it)"
        )
    ku = _extension(ca, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise AuthenticationError(
            f"keyUsage of CA {describe(ca)} does not allow keyCertSign (signing certificates)"
        )


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if isinstance(algorithm, _WEAK_HASHES):
        raise AuthenticationError(
            f"certificate {describe(cert)} is signed with the weak hash {algorithm.name}"
        )
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise AuthenticationError(
            f"signature of {describe(cert)} does not verify with the key of {describe(issuer)}"
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise AuthenticationError(f"cannot check the signature of {describe(cert)}: {e}") from None


# -- trust store and path validation ----------------------------------------------------


def _check_not_revoked(cert: x509.Certificate, revoked: RevokedCheck | None) -> None:
    if revoked is None:
        return
    try:
        listed = revoked(cert)
    except Exception as e:  # fail closed: a broken check must not let a certificate pass
        raise AuthenticationError(
            f"revocation check failed for {describe(cert)}: {type(e).__name__}"
        ) from None
    if listed:
        raise AuthenticationError(
            f"certificate revoked: {describe(cert)} (serial {cert.serial_number:x})"
        )


class TrustStore:
    """The CA certificates we trust (trust anchors), and optionally a revocation check
    applied to every other certificate of a path (end entity and intermediates)."""

    def __init__(
        self, cas: Iterable[x509.Certificate], revoked: RevokedCheck | None = None
    ) -> None:
        self.revoked = revoked
        self._cas: list[x509.Certificate] = []
        seen: set[bytes] = set()
        for ca in cas:
            fingerprint = ca.fingerprint(hashes.SHA256())
            if fingerprint not in seen:
                seen.add(fingerprint)
                self._cas.append(ca)

    @property
    def cas(self) -> list[x509.Certificate]:
        return list(self._cas)

    def certreq_data(self) -> bytes:
        """CERTREQ (X509_SIGNATURE) data: the SHA-1 of each CA's SubjectPublicKeyInfo."""
        return b"".join(spki_sha1(ca) for ca in self._cas)

    def certreq_payload(self) -> CertReqPayload:
        return CertReqPayload(CertEncoding.X509_SIGNATURE, self.certreq_data())

    def validate(
        self,
        end_entity: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime.datetime,
    ) -> list[x509.Certificate]:
        """The path [end entity, intermediates..., trust anchor]; AuthenticationError with
        the reason if there is none. ``now`` must be timezone-aware (the engine's clock)."""
        if now.tzinfo is None:
            raise ValueError("validate() needs a timezone-aware 'now'")
        _check_end_entity(end_entity, now)
        pool: list[x509.Certificate] = []
        for cert in intermediates[:MAX_INTERMEDIATES]:
            if cert != end_entity and cert not in pool:
                pool.append(cert)
        return _PathSearch(self._cas, pool, now, self.revoked).run(end_entity)


class _PathSearch:
    """Depth-first search from the end entity towards any trust anchor.

    Each failure is recorded with the depth it happened at; when no path exists, the
    deepest failure is reported since it is the one closest to success.
    """

    def __init__(
        self,
        anchors: list[x509.Certificate],
        pool: list[x509.Certificate],
        now: datetime.datetime,
        revoked: RevokedCheck | None = None,
    ) -> None:
        self.anchors = anchors
        self.pool = pool
        self.now = now
        self.revoked = revoked
        self.signature_checks = 0
        self.failures: list[tuple[int, str]] = []

    def run(self, end_entity: x509.Certificate) -> list[x509.Certificate]:
        path = self._extend([end_entity])
        if path is not None:
            return path
        depth = max(d for d, _ in self.failures)
        raise AuthenticationError(next(msg for d, msg in self.failures if d == depth))

    def _extend(self, path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cert = path[-1]
        anchors = [a for a in self.anchors if a.subject == cert.issuer]
        for anchor in anchors:
            if self._link(path, anchor, anchor=True):
                return [*path, anchor]
        candidates = [c for c in self.pool if c.subject == cert.issuer and c not in path]
        if not anchors and not candidates:
            self.failures.append(
                (len(path), f"unknown CA: issuer {_issuer_name(cert)} of {describe(cert)}")
            )
            return None
        for candidate in candidates:
            if len(path) + 2 > MAX_CHAIN_LENGTH:  # the candidate, then at least an anchor
                self.failures.append(
                    (len(path), f"certificate chain longer than {MAX_CHAIN_LENGTH}")
                )
                return None
            if self._link(path, candidate, anchor=False):
                found = self._extend([*path, candidate])
                if found is not None:
                    return found
        return None

    def _link(self, path: list[x509.Certificate], issuer: x509.Certificate, anchor: bool) -> bool:
        """Is ``issuer`` a valid issuer of path[-1]? Records why not."""
        try:
            _check_common(issuer, self.now)
            _check_issuer(issuer, cas_below=len(path) - 1, anchor=anchor)
            self.signature_checks += 1
            if self.signature_checks > _MAX_SIGNATURE_CHECKS:
                raise AuthenticationError("certificate path search gave up (too many candidates)")
            _check_signature(path[-1], issuer)
            # Once its signature verifies, so that "revoked" is only said of a genuine
            # certificate. The anchor is never checked: it is trusted by being configured.
            _check_not_revoked(path[-1], self.revoked)
        except AuthenticationError as e:
            self.failures.append((len(path), str(e)))
            return False
        return True


def _issuer_name(cert: x509.Certificate) -> str:
    try:
        return dn_string(cert.issuer)
    except ValueError:
        return "(unreadable issuer name)"


# -- identities -----------------------------------------------------------------------


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """The default identity of a certificate: its subject DN, DER exactly as in the cert."""
    return Identity(IdType.DER_ASN1_DN, cert.subject.public_bytes())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    san = _extension(cert, x509.SubjectAlternativeName)
    return san if isinstance(san, x509.SubjectAlternativeName) else None


def certificate_matches_identity(cert: x509.Certificate, identity: Identity) -> bool:
    """Does the certificate vouch for this identity? FQDN, RFC822 and IP addresses must be
    in the subjectAltName (names case-insensitively); a DN must be the subject or a SAN
    directoryName (compared like Identity.matches). %any matches every certificate."""
    if identity.is_any:
        return True
    try:
        return _matches(cert, identity)
    except ValueError:  # an unparsable name in the certificate vouches for nothing
        return False


def _matches(cert: x509.Certificate, identity: Identity) -> bool:
    san = _sans(cert)
    if identity.id_type == IdType.DER_ASN1_DN:
        names = [cert.subject]
        if san is not None:
            names += san.get_values_for_type(x509.DirectoryName)
        return any(identity.matches(Identity(IdType.DER_ASN1_DN, n.public_bytes())) for n in names)
    if san is None:
        return False
    if identity.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
        values = (
            san.get_values_for_type(x509.DNSName)
            if identity.id_type == IdType.FQDN
            else san.get_values_for_type(x509.RFC822Name)
        )
        wanted = identity.data.lower()
        return any(v.isascii() and v.encode().lower() == wanted for v in values)
    if identity.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        if len(identity.data) not in (4, 16):
            return False
        wanted_ip = ipaddress.ip_address(identity.data)
        return wanted_ip in san.get_values_for_type(x509.IPAddress)
    return False


# -- CERT and CERTREQ payloads ----------------------------------------------------------


def certreq_hashes(payloads: Iterable[CertReqPayload]) -> set[bytes]:
    """The CA key hashes the peer asked for (X509_SIGNATURE CERTREQs only)."""
    out: set[bytes] = set()
    for p in payloads:
        if p.encoding != CertEncoding.X509_SIGNATURE:
            continue
        data = p.data
        for i in range(0, len(data) - _CERTREQ_HASH_LEN + 1, _CERTREQ_HASH_LEN):
            out.add(data[i : i + _CERTREQ_HASH_LEN])
    return out


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def select_chain_for_certreq(
    our_chain: Sequence[x509.Certificate], certreq_hashes: Collection[bytes] | None
) -> list[x509.Certificate]:
    """The certificates to send: our end entity, then the intermediates up to (not
    including) the first CA whose key the peer asked for. With no usable request, every
    intermediate. A self-signed root is never sent: the peer must already have it."""
    if not our_chain:
        raise ValueError("no certificate to send")
    end_entity, *issuers = our_chain
    issuers = [c for c in issuers if not _self_signed(c)]
    if certreq_hashes:
        for i, ca in enumerate(our_chain[1:]):
            if spki_sha1(ca) in certreq_hashes:
                return [end_entity, *[c for c in our_chain[1 : 1 + i] if not _self_signed(c)]]
    return [end_entity, *issuers]


def cert_payloads(chain: Sequence[x509.Certificate]) -> list[CertPayload]:
    """CERT payloads (X509_SIGNATURE, DER), end entity first as RFC 7296 §3.6 requires."""
    return [
        CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(serialization.Encoding.DER))
        for c in chain
    ]


def certs_from_payloads(
    payloads: Sequence[CertPayload],
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """(end entity, intermediates) from the peer's CERT payloads. Payloads of other
    encodings are skipped; AuthenticationError when there are none left, too many, or one
    does not parse."""
    x509_payloads = [p for p in payloads if p.encoding == CertEncoding.X509_SIGNATURE]
    if not x509_payloads:
        raise AuthenticationError("no X.509 certificate in the peer's CERT payloads")
    if len(x509_payloads) > MAX_CERT_PAYLOADS:
        raise AuthenticationError(
            f"too many CERT payloads ({len(x509_payloads)} > {MAX_CERT_PAYLOADS})"
        )
    certs = []
    for n, p in enumerate(x509_payloads, 1):
        try:
            certs.append(x509.load_der_x509_certificate(p.data))
        except ValueError as e:
            raise AuthenticationError(f"CERT payload {n} is not a DER certificate: {e}") from None
    return certs[0], certs[1:]
