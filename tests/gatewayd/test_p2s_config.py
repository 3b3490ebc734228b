"""The [p2s] table: a valid config loads, and each rule broken gives one clear problem line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gatewayd.check import run_check
from gatewayd.config import ConfigError, load_config, parse_config
from tests.lab.certs import make_ca, make_cert

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
"""
P2S = """
[p2s]
address_pool = ["172.16.201.0/24"]
dns = ["10.1.0.53"]
auth = ["certificate", "eap-mschapv2", "eap-radius"]
client_ca = ["p2s-root.crt"]
revoked = "revoked.txt"
users_file = "users.toml"
radius = { server = "10.1.0.5:1812", secret_file = "radius.secret" }
max_clients = 1000
"""
RADIUS = 'radius = { server = "10.1.0.5:1812", secret_file = "radius.secret" }\n'


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with every file the full [p2s] example names."""
    d = tmp_path_factory.mktemp("p2s-config")
    ca = make_ca(d, stem="ca")
    make_cert(d, ca, "hub.example.net", dns=["hub.example.net"], stem="hub")
    make_ca(d, "p2s root", stem="p2s-root")
    (d / "revoked.txt").write_text("# nothing revoked yet\n")
    (d / "users.toml").write_text('[users.alice]\nnt_hash = "8846f7eaee8fb117ad06bdd830b7586c"\n')
    (d / "radius.secret").write_text("testing123\n")
    return d


def write(d: Path, text: str, name: str = "gatewayd.toml") -> Path:
    path = d / name
    path.write_text(text)
    return path


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [(p.key, p.message) for p in info.value.problems]


def test_full_example_loads_with_files(files: Path) -> None:
    config = load_config(write(files, GATEWAY + P2S))
    p2s = config.p2s
    assert p2s is not None
    assert p2s.address_pool == (ipaddress.ip_network("172.16.201.0/24"),)
    assert p2s.dns == (ipaddress.ip_address("10.1.0.53"),)
    assert p2s.auth == ("certificate", "eap-mschapv2", "eap-radius")
    assert p2s.client_ca == (str(files / "p2s-root.crt"),)  # relative to the config file
    assert p2s.radius is not None and (p2s.radius.host, p2s.radius.port) == ("10.1.0.5", 1812)
    assert (p2s.radius.timeout, p2s.radius.retries) == (3.0, 3)
    assert (p2s.max_clients, p2s.lease_hold, p2s.dpd_timeout) == (1000, 3600, 45)
    assert p2s.ike_proposals == config.sites[0].ike_proposals
    assert run_check(str(files / "gatewayd.toml")) == 0


def test_without_p2s_there_is_none() -> None:
    config = parse_config(GATEWAY)
    assert config.p2s is None and config.p2s_routes() == ()


def test_default_routes_are_the_gateway_and_site_networks() -> None:
    config = parse_config(GATEWAY + P2S)
    assert [str(n) for n in config.p2s_routes()] == ["10.1.0.0/16", "10.2.0.0/16"]
    explicit = parse_config(GATEWAY + P2S + 'routes = ["10.1.2.0/24"]\n')
    assert [str(n) for n in explicit.p2s_routes()] == ["10.1.2.0/24"]
    assert parse_config(GATEWAY + P2S + "routes = []\n").p2s_routes() == ()


@pytest.mark.parametrize(
    ("text", "port", "host"),
    [("10.1.0.5", 1812, "10.1.0.5"), ("[fd00::5]:1645", 1645, "fd00::5"),
     ("fd00::5", 1812, "fd00::5"), ("radius.example.net:11812", 11812, "radius.example.net")],
)  # fmt: skip
def test_radius_server_forms(text: str, port: int, host: str) -> None:
    p2s = parse_config(GATEWAY + P2S.replace("10.1.0.5:1812", text)).p2s
    assert p2s is not None and p2s.radius is not None
    assert (p2s.radius.host, p2s.radius.port) == (host, port)


def test_ipv4_and_ipv6_pools() -> None:
    text = GATEWAY + P2S.replace('["172.16.201.0/24"]', '["172.16.201.0/24", "fd00:201::/64"]')
    p2s = parse_config(text).p2s
    assert p2s is not None and [n.version for n in p2s.address_pool] == [4, 6]


BROKEN = [
    ("no-gateway-cert", ("certificate = \"hub.crt\"\nprivate_key = \"hub.key\"\n", ""),
     "gateway.certificate", "required with [p2s]"),
    ("cert-needs-client-ca", ('client_ca = ["p2s-root.crt"]\n', ""),
     "p2s.client_ca", 'required when auth includes "certificate"'),
    ("eap-needs-users-file", ('users_file = "users.toml"\n', ""),
     "p2s.users_file", 'required when auth includes "eap-mschapv2"'),
    ("radius-needs-server", (RADIUS, ""),
     "p2s.radius", 'required when auth includes "eap-radius"'),
    ("pool-overlaps-gateway", ('["172.16.201.0/24"]', '["10.1.5.0/24"]'),
     "p2s.address_pool[0]", "overlaps '10.1.0.0/16' (gateway.networks[0])"),
    ("pool-overlaps-site", ('["172.16.201.0/24"]', '["10.2.0.0/24"]'),
     "p2s.address_pool[0]", "overlaps '10.2.0.0/16' (site[0].networks[0])"),
    ("pools-overlap", ('["172.16.201.0/24"]', '["172.16.0.0/16", "172.16.201.0/24"]'),
     "p2s.address_pool[1]", "overlaps '172.16.0.0/16' (p2s.address_pool[0])"),
    ("pool-missing", ('address_pool = ["172.16.201.0/24"]\n', ""),
     "p2s.address_pool", "required key is missing"),
    ("pool-empty", ('["172.16.201.0/24"]', "[]"), "p2s.address_pool", "must not be empty"),
    ("pool-host-bits", ('["172.16.201.0/24"]', '["172.16.201.1/24"]'),
     "p2s.address_pool[0]", "has host bits set"),
    ("max-clients-zero", ("max_clients = 1000", "max_clients = 0"),
     "p2s.max_clients", "must be at least 1"),
    ("max-clients-huge", ("max_clients = 1000", "max_clients = 100001"),
     "p2s.max_clients", "must be at most 100000"),
    ("unknown-auth", ('"eap-radius"]', '"eap-tls"]'), "p2s.auth[2]", "must be 'certificate'"),
    ("auth-empty", ('auth = ["certificate", "eap-mschapv2", "eap-radius"]', "auth = []"),
     "p2s.auth", "must not be empty"),
    ("auth-twice", ('"eap-radius"]', '"eap-radius", "certificate"]'),
     "p2s.auth[3]", "'certificate' is listed twice"),
    ("bad-dns", ('["10.1.0.53"]', '["dns.example"]'), "p2s.dns[0]", "is not an IP address"),
    ("bad-radius-port", ("10.1.0.5:1812", "10.1.0.5:99999"), "p2s.radius.server", "no valid port"),
    ("radius-waits-too-long", ('.secret" }', '.secret", timeout = 10.0, retries = 2 }'),
     "p2s.radius.timeout", "timeout x (retries + 1) is 30 s: at most 20 s"),
    ("unknown-key", ("max_clients = 1000", "max_client = 10"),
     "p2s.max_client", "did you mean 'max_clients'"),
    ("as-array", ("\n[p2s]\n", "\n[[p2s]]\n"), "p2s", "must be a table ([p2s])"),
    ("bad-proposal", ("max_clients = 1000", 'max_clients = 1000\nike_proposals = ["aes256-nope"]'),
     "p2s.ike_proposals[0]", "aes256-nope"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "key", "fragment"), [c[1] + c[2:] for c in BROKEN],
                         ids=[c[0] for c in BROKEN])  # fmt: skip
def test_each_rule_gives_one_problem(old: str, new: str, key: str, fragment: str) -> None:
    text = GATEWAY + P2S
    assert old in text
    found = problems(text.replace(old, new, 1))
    assert len(found) == 1, found
    assert found[0][0] == key
    assert fragment in found[0][1]


@pytest.mark.parametrize(
    ("name", "content", "key", "fragment"),
    [("p2s-root.crt", "not a certificate\n", "p2s.client_ca[0]", "is not a PEM certificate"),
     ("radius.secret", "\n", "p2s.radius.secret_file", "is empty"),
     ("users.toml", None, "p2s.users_file", "cannot read")],
)  # fmt: skip
def test_file_problems(
    files: Path, tmp_path: Path, name: str, content: str | None, key: str, fragment: str
) -> None:
    for f in files.iterdir():  # a private copy: the module's files stay intact
        if f.name != name:
            (tmp_path / f.name).write_bytes(f.read_bytes())
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GATEWAY + P2S))
    found = [(p.key, p.message) for p in info.value.problems]
    assert len(found) == 1, found
    assert found[0][0] == key and fragment in found[0][1]


def test_check_prints_one_line_per_problem(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (GATEWAY + P2S).replace('client_ca = ["p2s-root.crt"]\n', "")
    text = text.replace('["172.16.201.0/24"]', '["10.1.5.0/24"]')
    assert run_check(str(write(tmp_path, text))) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        'p2s.client_ca: required when auth includes "certificate": the roots client '
        "certificates must chain to",
        "p2s.address_pool[0]: '10.1.5.0/24' overlaps '10.1.0.0/16' (gateway.networks[0]): "
        "clients' addresses must be their own",
    ]


def test_an_ipv6_pool_needs_an_ipv6_mtu() -> None:
    text = (GATEWAY + P2S).replace('["172.16.201.0/24"]', '["fd00:201::/64"]')
    assert parse_config(text.replace('name = "hub"\n', 'name = "hub"\nmtu = 1280\n', 1)).p2s
    found = problems(text.replace('name = "hub"\n', 'name = "hub"\nmtu = 1200\n', 1))
    message = "must be at least 1280 when an address pool is IPv6 (got 1200)"
    assert found == [("gateway.mtu", message)]
