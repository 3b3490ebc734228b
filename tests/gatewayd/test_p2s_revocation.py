"""The [p2s] revoked file: serials and SHA-256 fingerprints, comments, bad lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from gatewayd.p2s.revocation import (
    RevocationError,
    load_revocation_list,
    parse_revocation_list,
)
from tests.ike import pki


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("CN=P2S Root, O=Example", key=pki.cached_key("p256"))


@pytest.fixture(scope="module")
def alice(ca: pki.Issued) -> pki.Issued:
    return pki.issue(ca, "CN=alice", key=pki.cached_key("p256", 1))


@pytest.fixture(scope="module")
def bob(ca: pki.Issued) -> pki.Issued:
    return pki.issue(ca, "CN=bob", key=pki.cached_key("p256", 2))


def colons(hexstr: str) -> str:
    return ":".join(hexstr[i : i + 2] for i in range(0, len(hexstr), 2))


def serial_hex(c: pki.Issued) -> str:
    return f"{c.cert.serial_number:x}"


def fp_hex(c: pki.Issued) -> str:
    return c.cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize(
    "entry",
    [
        lambda c: serial_hex(c),
        lambda c: serial_hex(c).upper(),
        lambda c: "0x" + serial_hex(c),
        lambda c: "serial: " + colons(serial_hex(c).zfill(40)),
        lambda c: "00" + serial_hex(c),
        lambda c: fp_hex(c),
        lambda c: colons(fp_hex(c).upper()),
        lambda c: "sha256:" + fp_hex(c),
        lambda c: "SHA256:" + colons(fp_hex(c)) + "   # alice's lost laptop",
    ],
)
def test_each_entry_form_revokes_only_its_certificate(
    entry: object, alice: pki.Issued, bob: pki.Issued
) -> None:
    text = "# revoked P2S clients\n\n" + entry(alice) + "\n"  # type: ignore[operator]
    rl = parse_revocation_list(text)
    assert len(rl) == 1
    assert rl.is_revoked(alice.cert)
    assert rl(alice.cert)
    assert not rl.is_revoked(bob.cert)
    assert rl.reason(bob.cert) is None
    assert "listed" in (rl.reason(alice.cert) or "")


def test_load_from_file_and_counts(tmp_path: Path, alice: pki.Issued, bob: pki.Issued) -> None:
    p = tmp_path / "revoked.txt"
    p.write_text(f"{serial_hex(alice)}\n  # comment\n\nsha256:{fp_hex(bob)}\n{serial_hex(alice)}\n")
    rl = load_revocation_list(p)
    assert len(rl) == 2
    assert rl.is_revoked(alice.cert) and rl.is_revoked(bob.cert)
    assert rl.source == str(p)


def test_empty_list_revokes_nothing(alice: pki.Issued) -> None:
    rl = parse_revocation_list("# nothing\n")
    assert len(rl) == 0
    assert not rl.is_revoked(alice.cert)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("hello", "neither a hex serial"),
        ("0x", "neither a hex serial"),
        ("sha256:abcd", "64 hex digits, not 4"),
        ("serial:" + "1" * 41, "at most 40 hex digits"),
        ("12 34", "neither a hex serial"),
        ("sha256:" + "g" * 64, "neither a hex serial"),
    ],
)
def test_bad_line_names_its_number(tmp_path: Path, line: str, match: str) -> None:
    p = tmp_path / "revoked.txt"
    p.write_text(f"# header\n0a:0b\n{line}\n")
    with pytest.raises(RevocationError, match=match) as info:
        load_revocation_list(p)
    assert f"{p}:3:" in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RevocationError, match="not found"):
        load_revocation_list(tmp_path / "missing.txt")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"0a\n\xff\xfe\n")
    with pytest.raises(RevocationError, match=r":2: not UTF-8"):
        load_revocation_list(p)
