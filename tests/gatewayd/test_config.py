"""Valid configs: defaults, every key, helpers, fingerprints and the shipped examples."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from gatewayd.check import run_check
from gatewayd.config import (
    DEFAULT_CONTROL_SOCKET,
    Config,
    ConfigError,
    Identity,
    load_config,
    parse_config,
    parse_identity,
)
from ike.crypto import proposals

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples"
PSK = "correct-horse-battery-staple"

MINIMAL = f"""\
[gateway]
name = "hub"
address = "192.0.2.1"
networks = ["10.1.0.0/16"]

[[site]]
name = "branch1"
address = "198.51.100.2"
networks = ["10.2.0.0/16"]
psk = "{PSK}"
"""

FULL = """\
[gateway]
name = "hub-1"
address = "2001:db8::1"
id = "CN=hub,O=Example"
networks = ["10.1.0.0/16", "fd00:1::/48"]
interface = "gw0"
mtu = 1380
control_socket = "/run/gw/ctl.sock"
ike_port = 1500
nat_t_port = 14500
certificate = "hub.crt"
private_key = "/etc/gatewayd/hub.key"
ca = ["ca1.crt", "/etc/gatewayd/ca2.crt"]
replay_window = 4096
fragment_size = 1400

[[site]]
name = "dc.1"
address = "2001:db8::2"
id = "dc1@example.net"
networks = ["10.2.0.0/16", "fd00:2::/48"]
auth = "pubkey"
mode = "initiator_only"
policy_based_traffic_selectors = true
ike_proposals = ["aes256gcm16-prfsha384-ecp384"]
esp_proposals = ["aes256gcm16-ecp384", "aes128gcm16"]
dpd_timeout = 60
dpd_interval = 10
ike_lifetime = 3600
child_lifetime = 600
child_lifetime_kb = 1000
replay_window = 64
fragment_size = 1200

[[site]]
name = "roadside"
address = "%any"
id = "@roadside.example.net"
mode = "responder_only"
networks = ["10.3.0.0/24"]
psk_file = "roadside.psk"
"""


def write(tmp_path: Path, text: str, name: str = "gatewayd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    gw = config.gateway
    assert gw.name == "hub"
    assert gw.address == ipaddress.ip_address("192.0.2.1")
    assert gw.networks == (ipaddress.ip_network("10.1.0.0/16"),)
    assert (gw.interface, gw.mtu, gw.control_socket) == ("vpngw0", 1400, DEFAULT_CONTROL_SOCKET)
    assert (gw.ike_port, gw.nat_t_port) == (500, 4500)
    assert (gw.certificate, gw.private_key, gw.ca) == (None, None, ())
    assert (gw.replay_window, gw.fragment_size) == (1024, 1280)
    assert gw.identity == Identity("ipv4", "192.0.2.1")

    (site,) = config.sites
    assert site.name == "branch1"
    assert site.identity == Identity("ipv4", "198.51.100.2")
    assert (site.auth, site.mode, site.policy_based_traffic_selectors) == ("psk", "default", False)
    assert site.ike_proposals == tuple(proposals.DEFAULT_IKE_PROPOSALS)
    assert site.esp_proposals == tuple(proposals.DEFAULT_ESP_PROPOSALS)
    assert (site.dpd_timeout, site.dpd_interval) == (45, 15)
    assert (site.ike_lifetime, site.child_lifetime, site.child_lifetime_kb) == (
        28800,
        27000,
        102400000,
    )
    # Site-level extras inherit the gateway's values.
    assert (site.replay_window, site.fragment_size) == (1024, 1280)
    assert not site.any_address


def test_every_key(tmp_path: Path) -> None:
    (tmp_path / "roadside.psk").write_bytes(b"from-a-file-secret\r\n")
    config = load_config(write(tmp_path, FULL), check_files=False)
    gw = config.gateway
    assert gw.identity == Identity("dn", "CN=hub,O=Example")
    assert gw.networks[1] == ipaddress.ip_network("fd00:1::/48")
    assert (gw.interface, gw.mtu, gw.control_socket) == ("gw0", 1380, "/run/gw/ctl.sock")
    assert (gw.ike_port, gw.nat_t_port, gw.replay_window, gw.fragment_size) == (
        1500,
        14500,
        4096,
        1400,
    )
    # Relative paths are taken from the config file's directory.
    assert gw.certificate == str(tmp_path / "hub.crt")
    assert gw.private_key == "/etc/gatewayd/hub.key"
    assert gw.ca == (str(tmp_path / "ca1.crt"), "/etc/gatewayd/ca2.crt")

    dc = config.site("dc.1")
    assert dc.identity == Identity("rfc822", "dc1@example.net")
    assert (dc.auth, dc.mode, dc.policy_based_traffic_selectors) == (
        "pubkey",
        "initiator_only",
        True,
    )
    assert dc.esp_proposals == ("aes256gcm16-ecp384", "aes128gcm16")
    assert (dc.dpd_timeout, dc.dpd_interval, dc.ike_lifetime, dc.child_lifetime) == (
        60,
        10,
        3600,
        600,
    )
    assert (dc.child_lifetime_kb, dc.replay_window, dc.fragment_size) == (1000, 64, 1200)

    road = config.site("roadside")
    assert road.any_address and road.address == "%any"
    assert road.identity == Identity("fqdn", "roadside.example.net")  # "@" forces FQDN
    assert road.replay_window == 4096  # inherited from [gateway]
    assert config.psk("roadside") == b"from-a-file-secret"  # read lazily, CRLF stripped
    with pytest.raises(KeyError):
        config.site("nope")


def test_psk_bytes_and_file_cache(tmp_path: Path) -> None:
    assert parse_config(MINIMAL).psk("branch1") == PSK.encode()
    psk_file = tmp_path / "b1.psk"
    psk_file.write_bytes("sécret-in-a-file\n".encode())
    path = write(tmp_path, MINIMAL.replace(f'psk = "{PSK}"', 'psk_file = "b1.psk"'))
    config = load_config(path)
    psk_file.unlink()  # read once at load time: later use needs no file access
    assert config.psk(config.sites[0]) == "sécret-in-a-file".encode()
    assert config.site("branch1").psk_file == str(psk_file)


def test_psk_never_in_repr_or_dump() -> None:
    config = parse_config(MINIMAL)
    site = config.sites[0]
    for text in (repr(config), str(config), repr(site), site.model_dump_json()):
        assert PSK not in text
    assert PSK not in str(site.model_dump(mode="json"))


@pytest.mark.parametrize(
    "text, kind, value, id_type, data",
    [
        ("192.0.2.7", "ipv4", "192.0.2.7", 1, bytes([192, 0, 2, 7])),
        ("2001:db8::7", "ipv6", "2001:db8::7", 5, ipaddress.ip_address("2001:db8::7").packed),
        ("hub.example.net", "fqdn", "hub.example.net", 2, b"hub.example.net"),
        ("@hub", "fqdn", "hub", 2, b"hub"),
        ("ops@example.net", "rfc822", "ops@example.net", 3, b"ops@example.net"),
    ],
)
def test_identities(text: str, kind: str, value: str, id_type: int, data: bytes) -> None:
    ident = parse_identity(text)
    assert (ident.kind, ident.value, str(ident)) == (kind, value, value)
    assert ident.ike_id() == (id_type, data)


def test_dn_identity_is_der_in_written_order() -> None:
    ident = parse_identity("CN=hub,O=Example")
    id_type, der = ident.ike_id()
    assert id_type == 9
    # DER order = written order (the strongSwan convention), CN first here.
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "hub")
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")
    written = x509.Name([x509.RelativeDistinguishedName([a]) for a in (cn, org)])
    assert der == written.public_bytes()
    assert der != x509.Name.from_rfc4514_string("CN=hub,O=Example").public_bytes()


def test_dn_identity_as_strongswan_prints_it() -> None:
    """Found in tests/netns/test_interop_s2s.py: the DN strongSwan shows (``O=x, CN=y``,
    a space after each comma) was refused as "not a distinguished name"; it is the same
    identity as ``O=x,CN=y``."""
    spaced = parse_identity("O=gatewayd lab, CN=a-gw")
    assert spaced.kind == "dn"
    assert spaced.ike_id() == parse_identity("O=gatewayd lab,CN=a-gw").ike_id()


def test_ipv6_and_site_overrides() -> None:
    text = MINIMAL.replace('"10.2.0.0/16"', '"10.2.0.0/16", "fd00:2::/48"').replace(
        f'psk = "{PSK}"', f'psk = "{PSK}"\nreplay_window = 32\nfragment_size = 576\ndpd_timeout = 5'
    )
    site = parse_config(text).sites[0]
    assert site.networks[1].version == 6
    assert (site.replay_window, site.fragment_size, site.dpd_interval) == (32, 576, 1)


# -- fingerprints: change iff something the site's SAs depend on changes

TWO_SITES = (
    MINIMAL
    + f"""
[[site]]
name = "branch2"
address = "198.51.100.3"
networks = ["10.3.0.0/16"]
psk = "{PSK}"
"""
)


def fingerprints(text: str) -> dict[str, str]:
    config = parse_config(text)
    return {s.name: config.site_fingerprint(s) for s in config.sites}


def test_fingerprint_is_stable() -> None:
    first = fingerprints(TWO_SITES)
    assert first == fingerprints(TWO_SITES)
    assert first["branch1"] != first["branch2"]
    assert parse_config(TWO_SITES).site_fingerprint("branch1") == first["branch1"]


@pytest.mark.parametrize(
    "old, new",
    [
        ('"10.2.0.0/16"', '"10.2.0.0/16", "10.20.0.0/16"'),
        ('"198.51.100.2"', '"198.51.100.9"'),
        (f'psk = "{PSK}"', f'psk = "{PSK}!"'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nmode = "initiator_only"'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nesp_proposals = ["aes128gcm16"]'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nike_proposals = ["aes256-sha256-modp2048"]'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nchild_lifetime = 3600'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\npolicy_based_traffic_selectors = true'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nid = "branch1.example.net"'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nreplay_window = 64'),
    ],
)
def test_fingerprint_changes_with_the_site(old: str, new: str) -> None:
    before = fingerprints(TWO_SITES)
    after = fingerprints(TWO_SITES.replace(old, new, 1))  # first occurrence: branch1
    assert after["branch1"] != before["branch1"]
    assert after["branch2"] == before["branch2"]


@pytest.mark.parametrize(
    "old, new",
    [
        ('"10.1.0.0/16"', '"10.1.0.0/16", "10.100.0.0/16"'),  # local traffic selectors
        ('"192.0.2.1"', '"192.0.2.2"'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nid = "hub.example.net"'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nnat_t_port = 4501'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nreplay_window = 2048'),
    ],
)
def test_fingerprint_changes_with_gateway_settings_sas_use(old: str, new: str) -> None:
    before, after = fingerprints(TWO_SITES), fingerprints(TWO_SITES.replace(old, new, 1))
    assert after["branch1"] != before["branch1"]
    assert after["branch2"] != before["branch2"]


@pytest.mark.parametrize(
    "old, new",
    [
        ('name = "hub"', 'name = "hub2"'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nmtu = 1300'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\ninterface = "tun7"'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\ncontrol_socket = "/run/x.s"'),
        ('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16"]\nreplay_window = 1024'),
        ('networks = ["10.1.0.0/16"]\n', 'networks = [ "10.1.0.0/16" ]  # same\n'),
        (f'psk = "{PSK}"', f'psk = "{PSK}"\nid = "198.51.100.2"'),  # the default, spelled out
        (f'psk = "{PSK}"', f'psk = "{PSK}"\ndpd_interval = 15'),
    ],
)
def test_fingerprint_ignores_what_sas_do_not_use(old: str, new: str) -> None:
    assert fingerprints(TWO_SITES) == fingerprints(TWO_SITES.replace(old, new, 1))


def test_fingerprint_ignores_site_order_and_psk_source(tmp_path: Path) -> None:
    before = fingerprints(TWO_SITES)
    site1, site2 = TWO_SITES.split("[[site]]")[1:]
    swapped = TWO_SITES.split("[[site]]")[0] + "[[site]]" + site2 + "\n[[site]]" + site1
    assert fingerprints(swapped) == before
    # The same key from a file is the same key.
    (tmp_path / "b1.psk").write_text(PSK + "\n")
    path = write(tmp_path, TWO_SITES.replace(f'psk = "{PSK}"', 'psk_file = "b1.psk"', 1))
    config = load_config(path)
    assert config.site_fingerprint("branch1") == before["branch1"]


def test_fingerprint_does_not_reveal_the_psk() -> None:
    fp = parse_config(MINIMAL).site_fingerprint("branch1")
    assert PSK not in fp
    assert hashlib.sha256(PSK.encode()).hexdigest() != fp


# -- examples and the check entry points


@pytest.mark.parametrize(
    "name", ["site-to-site.toml", "vnet-to-vnet-a.toml", "vnet-to-vnet-b.toml"]
)
def test_psk_examples_pass_check(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(str(EXAMPLES / name)) == 0
    assert capsys.readouterr().out == "ok\n"


def test_point_to_site_example(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "point-to-site.toml"
    config = load_config(path, check_files=False)  # its files are placeholders
    p2s = config.p2s
    assert p2s is not None and p2s.auth == ("certificate", "eap-mschapv2", "eap-radius")
    assert [str(n) for n in config.p2s_routes()] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert run_check(str(path), check_files=False) == 0
    capsys.readouterr()
    if not Path("/etc/gatewayd/hub.crt").exists():  # the full check names every file
        assert run_check(str(path)) == 1
        keys = {line.split(": ")[0] for line in capsys.readouterr().out.splitlines()}
        assert {"gateway.certificate", "p2s.client_ca[0]", "p2s.users_file"} <= keys


def test_multi_site_example(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "multi-site.toml"
    # Its certificates are placeholders under /etc/gatewayd: the model is valid ...
    config = load_config(path, check_files=False)
    assert [s.name for s in config.sites] == ["branch1", "branch2", "dc1"]
    assert config.site("dc1").auth == "pubkey"
    assert run_check(str(path), check_files=False) == 0
    capsys.readouterr()
    # ... and the full check reports exactly the missing credential files.
    if not Path("/etc/gatewayd/hub.crt").exists():
        assert run_check(str(path)) == 1
        keys = [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()]
        assert keys == ["gateway.certificate", "gateway.private_key", "gateway.ca[0]"]


def test_vnet_examples_mirror_each_other() -> None:
    a = load_config(EXAMPLES / "vnet-to-vnet-a.toml")
    b = load_config(EXAMPLES / "vnet-to-vnet-b.toml")
    (site_b,), (site_a,) = a.sites, b.sites
    assert site_b.address == b.gateway.address and site_a.address == a.gateway.address
    assert site_b.networks == b.gateway.networks and site_a.networks == a.gateway.networks
    assert a.psk(site_b) == b.psk(site_a)
    assert site_b.ike_proposals == site_a.ike_proposals
    assert site_b.esp_proposals == site_a.esp_proposals


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_run_check_in_a_fresh_interpreter() -> None:
    script = "import sys; from gatewayd.check import run_check; sys.exit(run_check(sys.argv[1]))"
    proc = _run(["-c", script, str(EXAMPLES / "site-to-site.toml")])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")


@pytest.mark.skipif(not (REPO / "gatewayd" / "cli.py").exists(), reason="no gatewayd/cli.py yet")
def test_gatewayd_check_cli(tmp_path: Path) -> None:
    ok = _run(["-m", "gatewayd.cli", "check", "-c", str(EXAMPLES / "site-to-site.toml")])
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
    bad = write(tmp_path, MINIMAL.replace('"10.2.0.0/16"', '"10.2.0.0/33"'))
    proc = _run(["-m", "gatewayd.cli", "check", "-c", str(bad)])
    assert proc.returncode == 1
    assert "site[0].networks[0]: '10.2.0.0/33' is not an IP prefix" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and PSK not in proc.stdout + proc.stderr


def test_config_error_renders_lines() -> None:
    error = ConfigError([("site[1].networks[0]", "'10.2.0.0/33' is not an IP prefix")])
    assert str(error) == "site[1].networks[0]: '10.2.0.0/33' is not an IP prefix"
    assert error.problems == [("site[1].networks[0]", "'10.2.0.0/33' is not an IP prefix")]
    assert ConfigError([("", "TOML syntax error")], "f.toml").lines() == [
        "f.toml: TOML syntax error"
    ]


def test_config_is_immutable() -> None:
    config: Config = parse_config(MINIMAL)
    with pytest.raises(ValidationError):
        config.gateway.mtu = 9000
    with pytest.raises(FrozenInstanceError):
        config.sites = ()  # type: ignore[misc]
