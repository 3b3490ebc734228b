"""`gatewayctl p2s ...`: users, client certificates and client profiles, end to end
through gatewayctl's own argument parsing, checked by parsing what it writes."""

from __future__ import annotations

import configparser
import io
import plistlib
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from gatewayd import ctl
from gatewayd.p2s import cli as p2s_cli
from gatewayd.p2s.profile import ProfileError
from gatewayd.p2s.profile_apple import apple_child_sa, apple_ike_sa
from gatewayd.p2s.revocation import parse_revocation_list
from gatewayd.p2s.users import load_users, nt_hash_of
from ike.auth.certs import TrustStore, load_certificates
from ike.errors import AuthenticationError
from tests.ike import pki

GATEWAY = """\
[gateway]
name = "hub"
address = "192.0.2.1"
id = "hub.example.net"
networks = ["10.1.0.0/16"]
certificate = "hub.crt"
private_key = "hub.key"

[[site]]
name = "branch1"
address = "198.51.100.2"
networks = ["10.2.0.0/16"]
psk = "Tr0ub4dor-and-3-horses"

[p2s]
address_pool = ["172.16.201.0/24"]
auth = ["certificate", "eap-mschapv2"]
client_ca = ["clients-ca.crt"]
users_file = "users.toml"
server = "vpn.example.net"
"""
ISSUER = 'issuer = { certificate = "clients-ca.crt", key = "clients-ca.key" }\n'


@pytest.fixture(scope="module")
def pkis() -> tuple[pki.Issued, pki.Issued, pki.Issued]:
    root = pki.make_ca("CN=Hub Root CA, O=Example", key=pki.cached_key("p256", 40))
    hub = pki.issue(
        root, "CN=hub.example.net", key=pki.cached_key("p256", 41), sans=["hub.example.net"]
    )
    clients = pki.make_ca("CN=Clients CA, O=Example", key=pki.cached_key("p256", 42))
    return root, hub, clients


def setup_dir(d: Path, pkis: tuple[pki.Issued, pki.Issued, pki.Issued], issuer: bool) -> Path:
    root, hub, clients = pkis
    hub.write(d, "hub")
    clients.write(d, "clients-ca")
    (d / "root.crt").write_bytes(root.cert_pem())
    text = GATEWAY.replace(
        'networks = ["10.1.0.0/16"]\n', 'networks = ["10.1.0.0/16"]\nca = ["root.crt"]\n', 1
    )
    conf = d / "gatewayd.toml"
    conf.write_text(text + (ISSUER if issuer else ""))
    return conf


@pytest.fixture
def conf(tmp_path: Path, pkis: tuple[pki.Issued, pki.Issued, pki.Issued]) -> Path:
    return setup_dir(tmp_path, pkis, issuer=True)


def gatewayctl(
    monkeypatch: pytest.MonkeyPatch, conf: Path, *args: str, stdin: str = ""
) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out = io.StringIO()
    code = ctl.main(["-c", str(conf), "p2s", *args], stdout=out)
    return code, out.getvalue()


# -- users ------------------------------------------------------------------------------


def test_user_add_list_del(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    users = conf.parent / "users.toml"
    code, out = gatewayctl(
        monkeypatch, conf, "user", "add", "alice", "--password-stdin", stdin="S3cret pw\n"
    )
    assert code == 0, capsys.readouterr().err
    assert "added alice" in out and "S3cret" not in out
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert load_users(users).nt_hash("alice") == nt_hash_of("S3cret pw")
    assert "S3cret" not in users.read_text()

    gatewayctl(
        monkeypatch, conf, "user", "add", "bob@example.org", "--password-stdin", stdin="b\r\n"
    )
    assert load_users(users).nt_hash("bob@example.org") == nt_hash_of("b")  # CRLF stripped
    code, out = gatewayctl(
        monkeypatch, conf, "user", "add", "alice", "--password-stdin", stdin="other\n"
    )
    assert code == 0 and "new password for alice" in out
    assert load_users(users).nt_hash("alice") == nt_hash_of("other")

    code, out = gatewayctl(monkeypatch, conf, "user", "list")
    assert code == 0 and out.splitlines() == ["alice", "bob@example.org"]
    code, out = gatewayctl(monkeypatch, conf, "user", "del", "alice")
    assert code == 0 and set(load_users(users)) == {"bob@example.org"}
    code, _ = gatewayctl(monkeypatch, conf, "user", "del", "alice")
    assert code == 1 and "no user 'alice'" in capsys.readouterr().err
    assert "S3cret" not in capsys.readouterr().err


def test_user_file_option_needs_no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "u.toml"
    code, _ = gatewayctl(
        monkeypatch,
        tmp_path / "missing.toml",
        "user",
        "add",
        "carol",
        "--users-file",
        str(f),
        "--password-stdin",
        stdin="pw\n",
    )
    assert code == 0 and set(load_users(f)) == {"carol"}


def test_user_add_refusals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    # Not a terminal and no --password-stdin: refuse rather than read a secret blindly.
    code, _ = gatewayctl(monkeypatch, conf, "user", "add", "alice", stdin="pw\n")
    assert code == 2 and "--password-stdin" in capsys.readouterr().err
    code, _ = gatewayctl(monkeypatch, conf, "user", "add", "alice", "--password-stdin")
    assert code == 2 and "no password" in capsys.readouterr().err
    code, _ = gatewayctl(monkeypatch, conf, "user", "add", "alice", "--password-stdin", stdin="\n")
    assert code == 1 and "password is empty" in capsys.readouterr().err
    code, _ = gatewayctl(monkeypatch, conf, "user", "add", " bad", "--password-stdin", stdin="x\n")
    assert code == 1 and "white space" in capsys.readouterr().err
    assert not (conf.parent / "users.toml").exists()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_prompt_twice() -> None:
    answers = iter(["pw1", "pw1"])
    assert p2s_cli.read_new_password(Tty(), False, lambda _: next(answers)) == "pw1"
    answers = iter(["pw1", "pw2"])
    with pytest.raises(p2s_cli.CliError, match="do not match") as info:
        p2s_cli.read_new_password(Tty(), False, lambda _: next(answers))
    assert "pw1" not in str(info.value) and "pw2" not in str(info.value)


def test_config_without_p2s_or_users_file(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    conf = setup_dir(tmp_path, pkis, issuer=False)
    conf.write_text(conf.read_text().split("[p2s]")[0])
    code, _ = gatewayctl(monkeypatch, conf, "user", "list")
    assert code == 2 and "no [p2s] table" in capsys.readouterr().err
    code, _ = gatewayctl(monkeypatch, tmp_path / "nope.toml", "user", "list")
    assert code == 2 and "cannot read" in capsys.readouterr().err


# -- issue ------------------------------------------------------------------------------


def test_issue_refused_without_issuer(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    conf = setup_dir(tmp_path, pkis, issuer=False)
    code, _ = gatewayctl(monkeypatch, conf, "issue", "alice", "--out", str(tmp_path / "a"))
    assert code == 1
    assert "[p2s].issuer is not set" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def issue(monkeypatch: pytest.MonkeyPatch, conf: Path, name: str, *extra: str) -> tuple[Path, str]:
    out_dir = conf.parent / "clients" / name
    code, out = gatewayctl(monkeypatch, conf, "issue", name, "--out", str(out_dir), *extra)
    assert code == 0
    return out_dir, out


@pytest.mark.parametrize(
    ("name", "san_type"),
    [("alice@example.org", x509.RFC822Name), ("laptop-7.example.org", x509.DNSName)],
)
def test_issue_writes_a_usable_client_certificate(
    monkeypatch: pytest.MonkeyPatch,
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
    name: str,
    san_type: type,
) -> None:
    _, _, clients = pkis
    out_dir, out = issue(monkeypatch, conf, name, "--days", "30")
    key_path, crt_path, p12_path = (out_dir / f"{name}{e}" for e in (".key", ".crt", ".p12"))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(p12_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700

    cert = load_certificates(crt_path)[0]
    assert cert.subject.rfc4514_string() == f"CN={name}"
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(san_type) == [name]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 <= lifetime.days <= 31
    # The gateway's trust store (client_ca = the issuer) accepts it...
    now = pki.NOW.now(pki.NOW.tzinfo)
    path = TrustStore([clients.cert]).validate(cert, [], now)
    assert path[-1] == clients.cert
    # ... and refuses it once its serial is listed.
    listed = parse_revocation_list(re.search(r"serial\s+(\w+)", out).group(1) + "\n")
    with pytest.raises(AuthenticationError, match="certificate revoked"):
        TrustStore([clients.cert], revoked=listed).validate(cert, [], now)

    password = re.search(r"PKCS#12 password: (\S+)", out).group(1)
    key, p12_cert, extra = pkcs12.load_key_and_certificates(
        p12_path.read_bytes(), password.encode()
    )
    assert p12_cert == cert and extra == [clients.cert]
    assert key is not None and key.public_key() == cert.public_key()


def test_issue_with_stdin_password_and_force(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    out_dir = conf.parent / "clients" / "dave"
    code, out = gatewayctl(
        monkeypatch,
        conf,
        "issue",
        "dave",
        "--out",
        str(out_dir),
        "--p12-password-stdin",
        stdin="p12-pass\n",
    )
    assert code == 0 and "p12-pass" not in out and "PKCS#12 password" not in out
    pkcs12.load_key_and_certificates((out_dir / "dave.p12").read_bytes(), b"p12-pass")
    first = (out_dir / "dave.crt").read_bytes()
    code, _ = gatewayctl(monkeypatch, conf, "issue", "dave", "--out", str(out_dir))
    assert code == 1 and "--force" in capsys.readouterr().err
    assert (out_dir / "dave.crt").read_bytes() == first
    code, _ = gatewayctl(monkeypatch, conf, "issue", "dave", "--out", str(out_dir), "--force")
    assert code == 0 and (out_dir / "dave.crt").read_bytes() != first


@pytest.mark.parametrize("bad", ["../etc", "a b", "", "x" * 65, "a@b@c"])
def test_issue_refuses_bad_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path, bad: str
) -> None:
    code, _ = gatewayctl(monkeypatch, conf, "issue", bad, "--out", str(conf.parent / "x"))
    assert code == 1 and "cannot be a client certificate name" in capsys.readouterr().err
    assert not (conf.parent / "x").exists()


# -- profiles ---------------------------------------------------------------------------


def swanctl_tree(text: str) -> dict:
    """A small parser for the swanctl.conf subset we write: sections and key = value."""
    root: dict = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            child: dict = {}
            stack[-1][line[:-1].strip()] = child
            stack.append(child)
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.partition("=")
            stack[-1][key.strip()] = value.strip().strip('"')
    assert len(stack) == 1, "unbalanced braces"
    return root


def test_swanctl_profile_with_certificate(
    monkeypatch: pytest.MonkeyPatch,
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    root, _, _ = pkis
    client_dir, _ = issue(monkeypatch, conf, "alice@example.org")
    out = conf.parent / "swanctl"
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "alice@example.org",
        "--format",
        "swanctl",
        "--client-dir",
        str(client_dir),
        "--out",
        str(out),
    )
    assert code == 0
    tree = swanctl_tree((out / "swanctl.conf").read_text())
    c = tree["connections"]["gatewayd"]
    assert c["remote_addrs"] == "vpn.example.net"
    assert c["vips"] == "0.0.0.0"
    assert c["send_cert"] == "always"
    assert (
        c["proposals"]
        == "aes256gcm16-prfsha384-ecp384,aes256gcm16-prfsha256-x25519-ecp256,aes256-sha256-modp2048"
    )
    assert c["local"] == {
        "auth": "pubkey",
        "certs": "alice@example.org.crt",
        "id": "alice@example.org",
    }
    assert c["remote"] == {"auth": "pubkey", "id": "hub.example.net", "cacerts": "hub-ca.crt"}
    child = c["children"]["gatewayd"]
    assert child["remote_ts"] == "10.1.0.0/16,10.2.0.0/16"  # default: gateway's and sites' networks
    assert child["esp_proposals"] == "aes256gcm16,aes128gcm16,aes256-sha256"
    assert load_certificates(out / "x509ca" / "hub-ca.crt") == [root.cert]
    issued = load_certificates(client_dir / "alice@example.org.crt")
    assert load_certificates(out / "x509" / "alice@example.org.crt") == issued
    assert (out / "private" / "alice@example.org.key").read_bytes() == (
        client_dir / "alice@example.org.key"
    ).read_bytes()
    assert stat.S_IMODE((out / "private" / "alice@example.org.key").stat().st_mode) == 0o600


def test_swanctl_profile_eap_when_no_certificate(
    monkeypatch: pytest.MonkeyPatch, conf: Path
) -> None:
    out = conf.parent / "sw" / "swanctl.conf"
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "bob",
        "--format",
        "swanctl",
        "--client-dir",
        str(conf.parent / "none"),
        "--out",
        str(out),
    )
    assert code == 0
    tree = swanctl_tree(out.read_text())
    local = tree["connections"]["gatewayd"]["local"]
    assert local == {"auth": "eap-mschapv2", "id": "bob", "eap_id": "bob"}
    assert tree["secrets"]["eap-gatewayd"] == {"id": "bob", "secret": ""}
    assert not (out.parent / "private").exists()


def test_profile_refusals(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "bob",
        "--format",
        "swanctl",
        "--auth",
        "certificate",
        "--client-dir",
        str(conf.parent / "none"),
        "--out",
        str(conf.parent / "o"),
    )
    assert code == 1 and "not found" in capsys.readouterr().err
    code, _ = gatewayctl(monkeypatch, conf, "profile", "bob", "--format", "nm")
    assert code == 2 and "--out" in capsys.readouterr().err
    # The name becomes file names and profile text: ../ and quotes are refused.
    for bad in ("../../etc/x", 'bob"\nx = 1'):
        code, _ = gatewayctl(monkeypatch, conf, "profile", bad, "--format", "swanctl")
        assert code == 2 and "cannot be a client certificate name" in capsys.readouterr().err
    # A CA that does not sign the gateway's certificate.
    other = conf.parent / "other.crt"
    other.write_bytes(pki.make_ca("CN=Other", key=pki.cached_key("p256", 43)).cert_pem())
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "bob",
        "--format",
        "mobileconfig",
        "--ca",
        str(other),
        "--auth",
        "eap",
    )
    assert code == 1 and "signs the gateway's certificate" in capsys.readouterr().err


def test_mobileconfig_with_certificate(
    monkeypatch: pytest.MonkeyPatch,
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    root, _, clients = pkis
    client_dir, _ = issue(monkeypatch, conf, "alice@example.org")
    target = conf.parent / "alice.mobileconfig"
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "alice@example.org",
        "--format",
        "mobileconfig",
        "--client-dir",
        str(client_dir),
        "--out",
        str(target),
        "--p12-password-stdin",
        stdin="install-me\n",
    )
    assert code == 0
    doc = plistlib.loads(target.read_bytes())
    assert doc["PayloadType"] == "Configuration"
    by_type = {p["PayloadType"]: p for p in doc["PayloadContent"]}
    vpn = by_type["com.apple.vpn.managed"]
    assert vpn["VPNType"] == "IKEv2"
    ike = vpn["IKEv2"]
    assert ike["RemoteAddress"] == "vpn.example.net"
    assert ike["RemoteIdentifier"] == "hub.example.net"
    assert ike["LocalIdentifier"] == "alice@example.org"
    assert ike["AuthenticationMethod"] == "Certificate"
    assert ike["CertificateType"] == "ECDSA256"
    assert ike["ExtendedAuthEnabled"] is False
    assert ike["ServerCertificateIssuerCommonName"] == "Hub Root CA"
    # The first default IKE proposal, aes256gcm16-prfsha384-ecp384, and ESP aes256gcm16.
    assert ike["IKESecurityAssociationParameters"] == {
        "EncryptionAlgorithm": "AES-256-GCM",
        "IntegrityAlgorithm": "SHA2-384",
        "DiffieHellmanGroup": 20,
    }
    assert ike["ChildSecurityAssociationParameters"]["EncryptionAlgorithm"] == "AES-256-GCM"
    assert ike["EnablePFS"] is False
    p12 = by_type["com.apple.security.pkcs12"]
    assert ike["PayloadCertificateUUID"] == p12["PayloadUUID"]
    key, cert, chain = pkcs12.load_key_and_certificates(p12["PayloadContent"], b"install-me")
    assert cert == load_certificates(client_dir / "alice@example.org.crt")[0]
    assert key is not None and key.public_key() == cert.public_key()
    assert chain == [] or chain == [clients.cert]
    assert "Password" not in p12  # the device asks for it
    ca = x509.load_der_x509_certificate(by_type["com.apple.security.root"]["PayloadContent"])
    assert ca == root.cert
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    uuids = [p["PayloadUUID"] for p in doc["PayloadContent"]] + [doc["PayloadUUID"]]
    assert len(set(uuids)) == len(uuids)


def test_mobileconfig_eap_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    code, out = gatewayctl(
        monkeypatch, conf, "profile", "bob", "--format", "mobileconfig", "--auth", "eap"
    )
    assert code == 0
    doc = plistlib.loads(out.encode())
    types = [p["PayloadType"] for p in doc["PayloadContent"]]
    assert types == ["com.apple.vpn.managed", "com.apple.security.root"]
    ike = doc["PayloadContent"][0]["IKEv2"]
    assert ike["AuthenticationMethod"] == "None"
    assert ike["ExtendedAuthEnabled"] is True
    assert ike["AuthName"] == "bob"
    assert "PKCS#12" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ike", "expected"),
    [
        (("aes256-sha256-modp2048",), ("AES-256", "SHA2-256", 14)),
        (("aes128-sha1-modp2048",), ("AES-128", "SHA1-96", 14)),
        (("aes128gcm16-prfsha256-ecp256",), ("AES-128-GCM", "SHA2-256", 19)),
        (("chacha20poly1305-prfsha512-x25519",), ("ChaCha20Poly1305", "SHA2-512", 31)),
        (("aes192-sha256-modp2048", "aes256-sha384-ecp384"), ("AES-256", "SHA2-384", 20)),
    ],
)
def test_apple_ike_mapping(ike: tuple[str, ...], expected: tuple[str, str, int]) -> None:
    sa = apple_ike_sa(ike)
    assert (sa.encryption, sa.integrity, sa.dh_group) == expected


def test_apple_mapping_refusals_and_pfs() -> None:
    with pytest.raises(ProfileError, match="ike_proposals"):
        apple_ike_sa(("aes192-sha256-modp2048",))
    with pytest.raises(ProfileError, match="esp_proposals"):
        apple_child_sa(("aes192gcm16",))
    sa = apple_child_sa(("aes256-sha256-ecp384",))
    assert (sa.encryption, sa.integrity, sa.dh_group) == ("AES-256", "SHA2-256", 20)


def test_nm_keyfile_with_certificate(
    monkeypatch: pytest.MonkeyPatch,
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    root, _, _ = pkis
    client_dir, _ = issue(monkeypatch, conf, "carol")
    target = conf.parent / "nm" / "hub.nmconnection"
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "profile",
        "carol",
        "--format",
        "nm",
        "--client-dir",
        str(client_dir),
        "--out",
        str(target),
        "--files-dir",
        "/etc/vpn-certs",
    )
    assert code == 0
    doc = configparser.ConfigParser(interpolation=None)
    doc.optionxform = str  # type: ignore[assignment,method-assign]
    doc.read_string(target.read_text())
    assert doc["connection"]["type"] == "vpn"
    vpn = doc["vpn"]
    assert vpn["service-type"] == "org.freedesktop.NetworkManager.strongswan"
    assert vpn["address"] == "vpn.example.net"
    assert vpn["remote-identity"] == "hub.example.net"
    assert vpn["method"] == "key"
    assert vpn["usercert"] == "/etc/vpn-certs/carol.crt"
    assert vpn["userkey"] == "/etc/vpn-certs/carol.key"
    assert vpn["certificate"] == "/etc/vpn-certs/hub-ca.crt"
    assert vpn["virtual"] == "yes" and vpn["proposal"] == "yes"
    assert vpn["ike"].split(";")[0] == "aes256gcm16-prfsha384-ecp384"
    assert vpn["esp"] == "aes256gcm16;aes128gcm16;aes256-sha256"
    assert vpn["remote-ts"] == "10.1.0.0/16;10.2.0.0/16"
    assert doc["ipv4"]["method"] == "auto"
    assert load_certificates(target.parent / "hub-ca.crt") == [root.cert]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # NetworkManager ignores others
    assert stat.S_IMODE((target.parent / "carol.key").stat().st_mode) == 0o600


def test_nm_keyfile_eap(monkeypatch: pytest.MonkeyPatch, conf: Path) -> None:
    target = conf.parent / "bob.nmconnection"
    code, _ = gatewayctl(
        monkeypatch, conf, "profile", "bob", "--format", "nm", "--auth", "eap", "--out", str(target)
    )
    assert code == 0
    doc = configparser.ConfigParser(interpolation=None)
    doc.read_string(target.read_text())
    vpn = doc["vpn"]
    assert (vpn["method"], vpn["user"], vpn["password-flags"]) == ("eap", "bob", "2")
    assert "usercert" not in vpn and "password" not in vpn
    assert vpn["certificate"] == str((conf.parent / "hub-ca.crt").resolve())


def test_issue_days_and_issuer_warnings(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    conf: Path,
    pkis: tuple[pki.Issued, pki.Issued, pki.Issued],
) -> None:
    code, _ = gatewayctl(
        monkeypatch, conf, "issue", "eve", "--days", "0", "--out", str(conf.parent / "e")
    )
    assert code == 1 and "--days must be between 1 and 3650" in capsys.readouterr().err
    # An issuer the gateway does not trust: issued, with a warning.
    conf.write_text(
        conf.read_text().replace('client_ca = ["clients-ca.crt"]', 'client_ca = ["root.crt"]')
    )
    code, _ = gatewayctl(monkeypatch, conf, "issue", "eve", "--out", str(conf.parent / "e"))
    assert code == 0 and "not in [p2s].client_ca" in capsys.readouterr().err
    # An issuer key that does not belong to the certificate.
    root, _, _ = pkis
    (conf.parent / "clients-ca.key").write_bytes(root.key_pem())
    code, _ = gatewayctl(monkeypatch, conf, "issue", "eve", "--out", str(conf.parent / "f"))
    assert code == 1 and "does not belong to" in capsys.readouterr().err


def test_empty_p12_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], conf: Path
) -> None:
    code, _ = gatewayctl(
        monkeypatch,
        conf,
        "issue",
        "eve",
        "--out",
        str(conf.parent / "e"),
        "--p12-password-stdin",
        stdin="\n",
    )
    assert code == 2 and "PKCS#12 password is empty" in capsys.readouterr().err
    assert not (conf.parent / "e").exists()
