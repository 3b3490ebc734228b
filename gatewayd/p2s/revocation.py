"""The list of revoked P2S client certificates (the [p2s] revoked file).

One entry per line; ``#`` starts a comment (whole line or after an entry); blank lines are
ignored. An entry is either

- a SHA-256 fingerprint of the certificate's DER: 64 hex digits, colons allowed, optional
  ``sha256:`` prefix, or
- a serial number in hex: colons allowed, optional ``serial:`` or ``0x`` prefix. RFC 5280
  serials have at most 20 octets (40 hex digits), so a bare 64-digit entry is always a
  fingerprint. A serial revokes every certificate with that serial whatever its issuer;
  use fingerprints when several CAs issue client certificates.

The engine asks ``RevocationList.is_revoked`` for every certificate of a path except the
trust anchor (ike.auth.certs.TrustStore's ``revoked`` hook).
"""

from __future__ import annotations

import os
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gatewayd.p2s.fileio import read_bounded

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_SERIAL_HEX = 40  # 20 octets, RFC 5280 §4.1.2.2
_HEX = re.compile(r"[0-9a-f]+")


class RevocationError(Exception):
    """The revocation list cannot be read or has a bad line; the message says which."""


class RevocationList:
    """Revoked serial numbers and SHA-256 fingerprints."""

    def __init__(
        self,
        serials: frozenset[int] = frozenset(),
        fingerprints: frozenset[bytes] = frozenset(),
        source: str | None = None,
    ) -> None:
        self.serials = serials
        self.fingerprints = fingerprints
        self.source = source

    def __len__(self) -> int:
        return len(self.serials) + len(self.fingerprints)

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return self.reason(cert) is not None

    def reason(self, cert: x509.Certificate) -> str | None:
        """Which entry revokes ``cert`` (for a log line), or None."""
        if cert.serial_number in self.serials:
            return f"serial {cert.serial_number:x} is listed"
        if self.fingerprints:
            fp = cert.fingerprint(hashes.SHA256())
            if fp in self.fingerprints:
                return f"fingerprint sha256:{fp.hex()} is listed"
        return None

    def __call__(self, cert: x509.Certificate) -> bool:
        """So that the list itself can be given as TrustStore(..., revoked=the_list)."""
        return self.is_revoked(cert)


def _parse_entry(text: str) -> int | bytes:
    """A serial (int) or a fingerprint (32 bytes); ValueError with the reason."""
    entry = text.strip().lower()
    kind = None
    for prefix, k in (("sha256:", "fingerprint"), ("serial:", "serial"), ("0x", "serial")):
        if entry.startswith(prefix):
            kind, entry = k, entry[len(prefix) :].strip()
            break
    digits = entry.replace(":", "")
    if not digits or not _HEX.fullmatch(digits):
        raise ValueError(f"{text.strip()!r} is neither a hex serial nor a SHA-256 fingerprint")
    if kind is None:
        kind = "fingerprint" if len(digits) == 64 else "serial"
    if kind == "fingerprint":
        if len(digits) != 64:
            raise ValueError(f"a SHA-256 fingerprint has 64 hex digits, not {len(digits)}")
        return bytes.fromhex(digits)
    if len(digits.lstrip("0")) > MAX_SERIAL_HEX:
        raise ValueError(f"a serial number has at most {MAX_SERIAL_HEX} hex digits (20 octets)")
    return int(digits, 16)


def parse_revocation_list(text: str, where: str = "revocation list") -> RevocationList:
    serials: set[int] = set()
    fingerprints: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            value = _parse_entry(content)
        except ValueError as e:
            raise RevocationError(f"{where}:{number}: {e}") from None
        if isinstance(value, int):
            serials.add(value)
        else:
            fingerprints.add(value)
    return RevocationList(frozenset(serials), frozenset(fingerprints), where)


def load_revocation_list(path: str | os.PathLike[str]) -> RevocationList:
    """Read the list; RevocationError (with the line number for a bad line)."""
    where = os.fspath(path)
    try:
        data = read_bounded(path, MAX_FILE_BYTES, "revocation list")
    except ValueError as e:
        raise RevocationError(str(e)) from None
    if len(data) > MAX_FILE_BYTES:
        raise RevocationError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RevocationError(f"{where}:{line}: not UTF-8 text") from None
    return parse_revocation_list(text, where)
