"""The swanctl profile of `gatewayctl p2s profile` drives a real strongSwan 5.9.8 client.

``client [charon, the generated profile] -- veth -- gw [charon as a road-warrior server]``

The server is strongSwan configured by hand from the same gatewayd config (certificate,
identity, pool, networks, the default proposals): the test shows that the profile, as
written, is a complete client configuration — charon loads it unchanged (certificate
users) or with only the password filled in (EAP users), authenticates the server through
the CA the profile ships, gets a virtual IP from the pool, and reaches the networks the
profile routes. gatewayd itself as the server is covered by test_p2s_interop.py.
"""

from __future__ import annotations

import io
import ipaddress
import shutil
from pathlib import Path

import pytest

from gatewayd import ctl
from gatewayd.config import load_config
from tests.gatewayd.test_p2s_cli import setup_dir
from tests.ike import pki
from tests.lab import Lab, StrongSwan, ping, require_root_and_strongswan, veth

pytestmark = pytest.mark.netns

GW_ADDR, CLIENT_ADDR = "192.0.2.1", "192.0.2.2"
LAN_HOST = "10.1.0.1"  # on the server's lo, inside gateway.networks
POOL = "172.16.201.0/24"


def server_conf(ike: tuple[str, ...], esp: tuple[str, ...], local_ts: str) -> str:
    common = f"""
    version = 2
    local_addrs = {GW_ADDR}
    pools = p2s
    proposals = {",".join(ike)}
    local {{
      auth = pubkey
      certs = hub.crt
      id = hub.example.net
    }}
    children {{
      rw {{
        local_ts = {local_ts}
        esp_proposals = {",".join(esp)}
      }}
    }}"""
    return f"""connections {{
  rw-cert {{{common}
    remote {{
      auth = pubkey
      cacerts = clients-ca.crt
    }}
  }}
  rw-eap {{{common}
    remote {{
      auth = eap-mschapv2
      eap_id = %any
    }}
  }}
}}
pools {{
  p2s {{
    addrs = {POOL}
  }}
}}
secrets {{
  eap-bob {{
    id = bob
    secret = "b0b-pa55"
  }}
}}
"""


def gatewayctl(conf: Path, *args: str) -> None:
    out = io.StringIO()
    assert ctl.main(["-c", str(conf), "p2s", *args], stdout=out) == 0, out.getvalue()


@pytest.fixture
def setup(lab: Lab, tmp_path: Path) -> tuple[Path, StrongSwan, StrongSwan]:
    require_root_and_strongswan()
    root = pki.make_ca("CN=Hub Root CA, O=Example", key=pki.cached_key("p256", 40))
    hub = pki.issue(
        root, "CN=hub.example.net", key=pki.cached_key("p256", 41), sans=["hub.example.net"]
    )
    clients = pki.make_ca("CN=Clients CA, O=Example", key=pki.cached_key("p256", 42))
    conf = setup_dir(tmp_path, (root, hub, clients), issuer=True)
    config = load_config(conf, check_files=False)
    assert config.p2s is not None

    gw_ns, client_ns = lab.netns("gw"), lab.netns("client")
    veth(
        gw_ns,
        client_ns,
        a_ifname="eth0",
        b_ifname="eth0",
        a_addrs=[f"{GW_ADDR}/24"],
        b_addrs=[f"{CLIENT_ADDR}/24"],
    )
    # An address in each routed network: kernel-libipsec installs its routes with a
    # source address inside the local traffic selector (see tests/lab/README.md).
    gw_ns.add_addr("lo", f"{LAN_HOST}/32")
    gw_ns.add_addr("lo", "10.2.0.1/32")

    server = lab.strongswan(gw_ns, "server")
    server.start(load=False)
    for src, kind in (("hub.crt", "x509"), ("hub.key", "private"), ("clients-ca.crt", "x509ca")):
        server.add_cert(tmp_path / src, kind)
    local_ts = ",".join(str(n) for n in config.p2s_routes())
    server.swanctl_conf.write_text(
        server_conf(config.p2s.ike_proposals, config.p2s.esp_proposals, local_ts)
    )
    server.swanctl("--load-all", "--noprompt", "--file", str(server.swanctl_conf))

    client = lab.strongswan(client_ns, "client")
    client.start(load=False)
    shutil.rmtree(client.swanctl_dir)  # only what the profile brings
    return conf, server, client


def load_profile(client: StrongSwan) -> str:
    return client.swanctl("--load-all", "--noprompt", "--file", str(client.swanctl_conf)).stdout


def check_connected(
    client: StrongSwan, server: StrongSwan, server_conn: str, local_id: str
) -> None:
    client.initiate("gatewayd")
    sa = client.wait_established("gatewayd", "gatewayd")
    assert sa.remote_id == "hub.example.net"
    assert sa.local_id == local_id
    child = sa.child("gatewayd")
    assert child is not None
    vip = ipaddress.ip_network(child.local_ts[0])
    assert vip.prefixlen == 32 and vip.subnet_of(ipaddress.ip_network(POOL))
    assert child.remote_ts == ["10.1.0.0/16", "10.2.0.0/16"]
    assert server.wait_established(server_conn, "rw").remote_id == local_id
    assert ping(client.ns, LAN_HOST, count=3).received >= 2


def test_certificate_profile_connects_as_written(
    setup: tuple[Path, StrongSwan, StrongSwan],
) -> None:
    conf, server, client = setup
    client_dir = conf.parent / "issued"
    gatewayctl(conf, "issue", "alice@example.org", "--out", str(client_dir))
    gatewayctl(
        conf,
        "profile",
        "alice@example.org",
        "--format",
        "swanctl",
        "--server",
        GW_ADDR,
        "--client-dir",
        str(client_dir),
        "--out",
        str(client.swanctl_dir),
    )
    out = load_profile(client)
    assert "loaded connection 'gatewayd'" in out
    assert "loaded ecdsa key" in out or "loaded private key" in out
    check_connected(client, server, "rw-cert", "alice@example.org")


def test_eap_profile_connects_with_the_password_filled_in(
    setup: tuple[Path, StrongSwan, StrongSwan],
) -> None:
    conf, server, client = setup
    gatewayctl(
        conf,
        "profile",
        "bob",
        "--format",
        "swanctl",
        "--auth",
        "eap",
        "--server",
        GW_ADDR,
        "--out",
        str(client.swanctl_dir / "swanctl.conf"),
    )
    text = client.swanctl_conf.read_text()
    assert 'secret = ""' in text
    client.swanctl_conf.write_text(text.replace('secret = ""', 'secret = "b0b-pa55"'))
    assert "loaded connection 'gatewayd'" in load_profile(client)
    check_connected(client, server, "rw-eap", "bob")


# -- against gatewayd itself -------------------------------------------------------------


def _profile_into(client: StrongSwan, conf: Path, *args: str) -> None:
    """Start the client's charon with nothing loaded, then load the generated profile."""
    if client.running:
        client.stop()
    client.start(load=False)
    shutil.rmtree(client.swanctl_dir)
    gatewayctl(conf, "profile", *args, "--out", str(client.swanctl_dir))


def test_profiles_connect_to_gatewayd(tmp_path: Path) -> None:
    """`p2s issue` + `p2s profile` give a strongSwan client everything it needs to log in
    to gatewayd's [p2s] with a certificate and with EAP-MSCHAPv2; only the EAP password is
    added by hand. The hub's CA is not among the config's CAs here, so `--ca` gives it."""
    require_root_and_strongswan()
    from tests.lab.roadwarrior import p2s_lab, wait_until

    with Lab(tmp_path / "lab") as lab:
        pl = p2s_lab(lab, tmp_path, clients=1, users={"bob": "b0b-Secret-9"})
        # An issuer: the client CA the hub already trusts.
        pl.hub.tables["p2s"]["issuer"] = {
            "certificate": str(pl.pki.client_ca.cert),
            "key": str(pl.pki.client_ca.key),
        }
        conf = pl.hub.write_config()
        server = pl.hub_site.public_v4
        rw = pl.clients[0]
        common = ["--format", "swanctl", "--server", server, "--ca", str(pl.pki.hub_ca.cert)]

        gatewayctl(conf, "issue", "alice@example.org", "--out", str(tmp_path / "alice"))
        _profile_into(
            rw.sw, conf, "alice@example.org", *common, "--client-dir", str(tmp_path / "alice")
        )
        load_profile(rw.sw)
        rw.sw.initiate("gatewayd")
        clients = pl.wait_clients({"alice@example.org"})
        vip = ipaddress.ip_address(clients["alice@example.org"]["virtual_ips"][0])
        assert vip in ipaddress.ip_network(POOL)
        assert ping(rw.ns, pl.hub_site.lan_host_v4, count=3).received >= 2
        assert ping(rw.ns, pl.s1.lan_host_v4, count=3).received >= 2

        _profile_into(rw.sw, conf, "bob", *common, "--auth", "eap")
        wait_until(lambda: not pl.connected(), 20, "alice gone from the hub")
        text = rw.sw.swanctl_conf.read_text()
        rw.sw.swanctl_conf.write_text(text.replace('secret = ""', 'secret = "b0b-Secret-9"'))
        load_profile(rw.sw)
        rw.sw.initiate("gatewayd")
        assert set(pl.wait_clients({"bob"})) == {"bob"}
        assert ping(rw.ns, pl.hub_site.lan_host_v4, count=3).received >= 2
