"""Broken configs: each is rejected with one line naming the key path, never a traceback."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatewayd.check import run_check
from gatewayd.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = "import sys; from gatewayd.check import run_check; sys.exit(run_check(sys.argv[1]))"
PSK = "Tr0ub4dor-and-3-horses"  # must never show up in any output
SHORT_PSK = "k3y-abc"  # 7 characters: too short, and must not show up either

BASE = f"""\
[gateway]
name = "hub"
address = "192.0.2.1"
networks = ["10.1.0.0/16"]

[[site]]
name = "branch1"
address = "198.51.100.2"
networks = ["10.2.0.0/16"]
psk = "{PSK}"

[[site]]
name = "branch2"
address = "198.51.100.3"
networks = ["10.3.0.0/16"]
psk = "{PSK}"
"""
S0 = 'name = "branch1"\n'  # anchors for edits inside site[0] / site[1] / [gateway]
S1 = 'name = "branch2"\n'
GW = 'name = "hub"\n'
ONE_SITE = BASE[: BASE.index('\n[[site]]\nname = "branch2"')]
CREDS = 'certificate = "hub.crt"\nprivate_key = "hub.key"\nca = ["ca.crt"]\n'


def edit(*pairs: tuple[str, str]) -> str:
    """BASE with each (old, new) replaced once; old must be there."""
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def add(anchor: str, lines: str) -> str:
    return edit((anchor, anchor + lines + "\n"))


@dataclass(frozen=True)
class Case:
    id: str
    toml: str
    key: str  # exact key path; "" for a file-level problem
    fragment: str


CASES = [
    Case("toml-syntax", edit((GW, 'name = "hub\n')), "", "line 2, column"),
    Case("toml-duplicate-key", add(GW, 'name = "hub2"'), "", "TOML syntax error"),
    Case(
        "missing-gateway-table",
        BASE[BASE.index("[[site]]") :],
        "gateway",
        "required table is missing",
    ),
    Case("missing-gateway-name", edit((GW, "")), "gateway.name", "required key is missing"),
    Case(
        "missing-site-networks",
        edit(('networks = ["10.3.0.0/16"]\n', "")),
        "site[1].networks",
        "required key is missing",
    ),
    Case(
        "bad-gateway-address",
        edit(('"192.0.2.1"', '"192.0.2.300"')),
        "gateway.address",
        "'192.0.2.300' is not an IP address",
    ),
    Case(
        "unspecified-gateway-address",
        edit(('"192.0.2.1"', '"0.0.0.0"')),
        "gateway.address",
        "is not a unicast address",
    ),
    Case(
        "site-address-hostname",
        edit(('"198.51.100.2"', '"branch.example.net"')),
        "site[0].address",
        "host names are not supported",
    ),
    Case(
        "prefix-33",
        edit(('"10.3.0.0/16"', '"10.3.0.0/33"')),
        "site[1].networks[0]",
        "'10.3.0.0/33' is not an IP prefix",
    ),
    Case(
        "prefix-garbage",
        edit(('["10.1.0.0/16"]', '["10.1.0.0/16", "ten/8"]')),
        "gateway.networks[1]",
        "'ten/8' is not an IP prefix",
    ),
    Case(
        "host-bits",
        edit(('"10.2.0.0/16"', '"10.2.0.1/16"')),
        "site[0].networks[0]",
        "'10.2.0.1/16' has host bits set",
    ),
    Case(
        "empty-networks", edit(('["10.2.0.0/16"]', "[]")), "site[0].networks", "must not be empty"
    ),
    Case(
        "networks-not-a-list",
        edit(('["10.2.0.0/16"]', '"10.2.0.0/16"')),
        "site[0].networks",
        "must be a list",
    ),
    Case(
        "duplicate-site-name",
        edit((S1, S0)),
        "site[1].name",
        "'branch1' is already the name of site[0]",
    ),
    Case("bad-site-name", edit((S0, 'name = "branch 1"\n')), "site[0].name", "is not a valid name"),
    Case(
        "duplicate-prefix-across-sites",
        edit(('"10.3.0.0/16"', '"10.2.0.0/16"')),
        "site[1].networks[0]",
        "'10.2.0.0/16' is already routed to site[0]",
    ),
    Case(
        "duplicate-prefix-in-site",
        edit(('"10.3.0.0/16"', '"10.3.0.0/16", "10.3.0.0/16"')),
        "site[1].networks[1]",
        "is listed twice",
    ),
    Case(
        "overlaps-gateway-networks",
        edit(('"10.2.0.0/16"', '"10.1.5.0/24"')),
        "site[0].networks[0]",
        "overlaps the gateway's own network '10.1.0.0/16'",
    ),
    Case(
        "typo-site-key",
        add(S0, "dpd_timout = 30"),
        "site[0].dpd_timout",
        "unknown key (did you mean 'dpd_timeout'?)",
    ),
    Case(
        "typo-gateway-key",
        add(GW, 'interfce = "vpn0"'),
        "gateway.interfce",
        "unknown key (did you mean 'interface'?)",
    ),
    Case("unknown-table", BASE + "\n[logging]\nlevel = 1\n", "logging", "unknown table"),
    Case("p2s-as-array", BASE + '\n[[p2s]]\naddress_pool = ["10.9.0.0/24"]\n', "p2s", "[p2s]"),
    Case("site-as-single-table", ONE_SITE.replace("[[site]]", "[site]"), "site", "write [[site]]"),
    Case(
        "bad-mode",
        add(S0, 'mode = "both"'),
        "site[0].mode",
        "must be 'default', 'initiator_only' or 'responder_only' (got 'both')",
    ),
    Case("bad-auth", add(S0, 'auth = "cert"'), "site[0].auth", "must be 'psk' or 'pubkey'"),
    Case(
        "bad-encapsulation",
        add(S0, 'encapsulation = "gre"'),
        "site[0].encapsulation",
        "must be 'auto', 'udp' or 'esp' (got 'gre')",
    ),
    Case(
        "psk-and-psk-file",
        add(S0, 'psk_file = "branch1.psk"'),
        "site[0].psk",
        "either psk or psk_file, not both",
    ),
    Case("no-psk", edit((f'psk = "{PSK}"\n', "")), "site[0].psk", 'required when auth = "psk"'),
    Case(
        "psk-too-short",
        edit((f'psk = "{PSK}"', f'psk = "{SHORT_PSK}"')),
        "site[0].psk",
        "too short: use at least 8 characters",
    ),
    Case(
        "psk-not-a-string",
        edit((f'psk = "{PSK}"', "psk = 123456789")),
        "site[0].psk",
        "must be a valid string",
    ),
    Case(
        "missing-psk-file",
        edit((f'psk = "{PSK}"', 'psk_file = "nowhere.psk"')),
        "site[0].psk_file",
        "cannot read",
    ),
    Case(
        "psk-with-pubkey",
        edit((GW, GW + CREDS), (S0, S0 + 'auth = "pubkey"\n')),
        "site[0].psk",
        'is not used with auth = "pubkey"',
    ),
    Case(
        "pubkey-without-certificate",
        edit(
            (f'psk = "{PSK}"\n', 'auth = "pubkey"\n'),
            ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nca = ["ca.crt"]'),
        ),
        "site[0].auth",
        'auth = "pubkey" needs gateway.certificate, gateway.private_key',
    ),
    Case(
        "certificate-without-key",
        add(GW, 'certificate = "hub.crt"'),
        "gateway.private_key",
        "required when gateway.certificate is set",
    ),
    Case(
        "unknown-proposal-word",
        add(S0, 'ike_proposals = ["aes256-sha256-modp2048", "aes256-sha256-bogus512"]'),
        "site[0].ike_proposals[1]",
        "'aes256-sha256-bogus512'",
    ),
    Case(
        "unsupported-proposal",
        add(S0, 'esp_proposals = ["3des-md5"]'),
        "site[0].esp_proposals[0]",
        "'3des-md5'",
    ),
    Case(
        "ike-proposal-without-ke",
        add(S0, 'ike_proposals = ["aes256-sha256"]'),
        "site[0].ike_proposals[0]",
        "'aes256-sha256'",
    ),
    Case(
        "esp-proposal-with-prf",
        add(S1, 'esp_proposals = ["aes256gcm16", "aes256gcm16-prfsha256"]'),
        "site[1].esp_proposals[1]",
        "'aes256gcm16-prfsha256'",
    ),
    Case(
        "empty-proposals",
        add(S0, "esp_proposals = []"),
        "site[0].esp_proposals",
        "must not be empty",
    ),
    Case(
        "dpd-timeout-negative",
        add(S0, "dpd_timeout = -1"),
        "site[0].dpd_timeout",
        "must be at least 5 (got -1)",
    ),
    Case(
        "dpd-interval-too-long",
        add(S0, "dpd_interval = 45"),
        "site[0].dpd_interval",
        "must be less than dpd_timeout (45)",
    ),
    Case(
        "child-lifetime-short",
        add(S0, "child_lifetime = 30"),
        "site[0].child_lifetime",
        "at least 60",
    ),
    Case(
        "ike-lifetime-short", add(S0, "ike_lifetime = 60"), "site[0].ike_lifetime", "at least 120"
    ),
    Case(
        "replay-window-small", add(S0, "replay_window = 16"), "site[0].replay_window", "at least 32"
    ),
    Case("mtu-too-small", add(GW, "mtu = 500"), "gateway.mtu", "must be at least 576 (got 500)"),
    Case(
        "mtu-too-small-for-ipv6",
        edit((GW, GW + "mtu = 1200\n"), ('"10.3.0.0/16"', '"10.3.0.0/16", "fd00:3::/48"')),
        "gateway.mtu",
        "at least 1280 when a network is IPv6",
    ),
    Case(
        "port-as-string", add(GW, 'ike_port = "500"'), "gateway.ike_port", "must be a valid integer"
    ),
    Case(
        "same-ports", add(GW, "nat_t_port = 500"), "gateway.nat_t_port", "must differ from ike_port"
    ),
    Case(
        "bool-as-string",
        add(S0, 'policy_based_traffic_selectors = "yes"'),
        "site[0].policy_based_traffic_selectors",
        "must be a valid boolean",
    ),
    Case(
        "interface-too-long",
        add(GW, 'interface = "a-very-long-ifname"'),
        "gateway.interface",
        "is not a valid interface name",
    ),
    Case(
        "control-socket-relative",
        add(GW, 'control_socket = "gw.sock"'),
        "gateway.control_socket",
        "must be an absolute path",
    ),
    Case(
        "any-with-default-mode",
        edit(('"198.51.100.2"', '"%any"')).replace(S0, S0 + 'id = "branch1.example.net"\n', 1),
        "site[0].address",
        'cannot initiate to it: set mode = "responder_only"',
    ),
    Case(
        "any-without-id",
        edit(('"198.51.100.2"', '"%any"'), (S0, S0 + 'mode = "responder_only"\n')),
        "site[0].id",
        "required when address = '%any'",
    ),
    Case(
        "site-address-is-gateway",
        edit(('"198.51.100.2"', '"192.0.2.1"')),
        "site[0].address",
        "is the gateway's own address",
    ),
    Case(
        "address-family-mismatch",
        edit(('"198.51.100.2"', '"2001:db8::2"')),
        "site[0].address",
        "is IPv6 but gateway.address is IPv4",
    ),
    Case("bad-id-dn", add(GW, 'id = "CN=hub,O"'), "gateway.id", "is not a distinguished name"),
    Case("bad-id-name", add(S0, 'id = "branch..example"'), "site[0].id", "is not an identity"),
    Case(
        "same-id-with-any",
        edit(
            ('"198.51.100.3"', '"%any"'),
            (S0, S0 + 'id = "b.example.net"\n'),
            (S1, S1 + 'id = "b.example.net"\nmode = "responder_only"\n'),
        ),
        "site[1].id",
        "is also the id of site[0]",
    ),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatewayd.toml"
    path.write_text(text)
    return path


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_base_is_valid(tmp_path: Path) -> None:
    assert run_check(str(_write(tmp_path, BASE))) == 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rejected_with_key_path(case: Case, tmp_path: Path) -> None:
    path = _write(tmp_path, case.toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert len(problems) == 1, problems
    key, message = problems[0]
    assert key == case.key
    assert case.fragment in message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_run_check_prints_one_line(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, case.toml)
    assert run_check(str(path)) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    prefix = f"{case.key}: " if case.key else f"{path}: "
    assert lines[0].startswith(prefix)
    assert case.fragment in lines[0]
    assert err == ""
    for secret in (PSK, SHORT_PSK):
        assert secret not in out


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tables are validated one by one; rules spanning keys run on the well-typed ones.
    text = f"""\
[gateway]
name = "hub"
address = "192.0.2.1"
networks = ["10.1.0.0/16"]
mtu = 100

[[site]]
name = "branch1"
address = "198.51.100.2"
networks = ["10.2.0.1/16"]

[[site]]
name = "branch2"
address = "198.51.100.3"
networks = ["10.3.0.0/16"]
psk = "{SHORT_PSK}"

[[site]]
name = "branch2"
address = "198.51.100.4"
networks = ["10.4.0.0/16"]
"""
    assert run_check(str(_write(tmp_path, text))) == 1
    keys = [line.split(": ", 1)[0] for line in capsys.readouterr().out.splitlines()]
    assert keys == [
        "gateway.mtu",
        "site[0].networks[0]",
        "site[1].psk",
        "site[2].psk",
        "site[2].name",
    ]


def test_no_traceback_in_a_fresh_interpreter(tmp_path: Path) -> None:
    broken = {c.id: c for c in CASES}
    for name in ("toml-syntax", "prefix-33", "psk-too-short", "unknown-proposal-word"):
        path = _write(tmp_path, broken[name].toml)
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHECK_SCRIPT,
                str(path),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 1
        assert proc.stderr == ""
        assert broken[name].fragment in proc.stdout
        assert PSK not in proc.stdout and SHORT_PSK not in proc.stdout


def test_unreadable_and_non_utf8_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert run_check(str(missing)) == 1
    assert (
        capsys.readouterr().out == f"{missing}: cannot read the file: No such file or directory\n"
    )
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[gateway]\n")
    assert run_check(str(binary)) == 1
    assert "is not UTF-8 text" in capsys.readouterr().out


# -- files that exist but are wrong: psk_file content, certificates and keys


def test_psk_file_too_short_does_not_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "b1.psk").write_text(SHORT_PSK + "\n")
    path = _write(tmp_path, edit((f'psk = "{PSK}"', 'psk_file = "b1.psk"')))
    assert run_check(str(path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("site[0].psk_file: the key in ")
    assert "too short" in out and SHORT_PSK not in out and PSK not in out
    # Without file checks the same config loads; the key is read (and fails) when used.
    config = load_config(path, check_files=False)
    with pytest.raises(ConfigError) as info:
        config.psk("branch1")
    assert info.value.problems[0].key == "site[0].psk_file"


def _cert(
    tmp_path: Path, name: str, key: ec.EllipticCurvePrivateKey, *, days: tuple[int, int] = (-1, 365)
) -> Path:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(  # the gateway's default id is its address
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _key(
    tmp_path: Path, name: str, key: ec.EllipticCurvePrivateKey, password: bytes | None = None
) -> Path:
    algo = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path = tmp_path / f"{name}.key"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algo)
    )
    return path


def _pubkey_config() -> str:
    return edit((GW, GW + CREDS), (f'psk = "{PSK}"', 'auth = "pubkey"'))


@pytest.fixture
def pki(tmp_path: Path) -> ec.EllipticCurvePrivateKey:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _cert(tmp_path, "ca", ca_key)
    hub_key = ec.generate_private_key(ec.SECP256R1())
    _cert(tmp_path, "hub", hub_key)
    _key(tmp_path, "hub", hub_key)
    return hub_key


def test_pubkey_credentials_ok(tmp_path: Path, pki: ec.EllipticCurvePrivateKey) -> None:
    assert run_check(str(_write(tmp_path, _pubkey_config()))) == 0


@pytest.mark.parametrize(
    "breakage, key, fragment",
    [
        ("wrong-key", "gateway.private_key", "does not match gateway.certificate"),
        ("encrypted-key", "gateway.private_key", "is encrypted"),
        ("garbage-key", "gateway.private_key", "is not a PEM key"),
        ("garbage-cert", "gateway.certificate", "is not a PEM certificate"),
        ("expired-cert", "gateway.certificate", "is valid only from"),
        ("missing-ca", "gateway.ca[0]", "cannot read"),
        ("id-not-in-cert", "gateway.id", "is neither the subject nor a subjectAltName"),
    ],
)
def test_pubkey_credentials_broken(
    tmp_path: Path,
    pki: ec.EllipticCurvePrivateKey,
    breakage: str,
    key: str,
    fragment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if breakage == "wrong-key":
        _key(tmp_path, "hub", ec.generate_private_key(ec.SECP256R1()))
    elif breakage == "encrypted-key":
        _key(tmp_path, "hub", pki, password=b"hunter2-hunter2")
    elif breakage == "garbage-key":
        (tmp_path / "hub.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    elif breakage == "garbage-cert":
        (tmp_path / "hub.crt").write_text("not a certificate\n")
    elif breakage == "expired-cert":
        _cert(tmp_path, "hub", pki, days=(-30, -1))
    elif breakage == "missing-ca":
        (tmp_path / "ca.crt").unlink()
    config = _pubkey_config()
    if breakage == "id-not-in-cert":
        config = config.replace("[gateway]\n", '[gateway]\nid = "other.example.net"\n', 1)
    assert run_check(str(_write(tmp_path, config))) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith(key + ": ")]
    assert len(out.splitlines()) == 1 and fragment in out
    assert "PRIVATE KEY" not in out
