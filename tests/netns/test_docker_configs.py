"""The compose lab's config files bring up a real tunnel (no Docker engine needed).

docker/docker-compose.yml puts gatewayd (docker/gatewayd.toml) and a strongSwan site
(docker/strongswan.conf + docker/swanctl.conf) on a bridge at 172.30.0.10 / .20, with a
client on each side's LAN. This test rebuilds that network with namespaces and runs the
very same files: gatewayd's config as is (only its control socket moves into the test's
directory), strongSwan's with an overlay that only moves its vici socket and log into
the test's directory and switches off the plugins with machine-wide side effects (a
container has its own /var/run; the namespaces here share one).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.lab import Lab, Netns, ping, require_root_and_strongswan, tcp_transfer, veth
from tests.lab.gatewayd import prepare_gateway_host
from tests.lab.strongswan import DISABLED_PLUGINS, StrongSwan

pytestmark = pytest.mark.netns

DOCKER = Path(__file__).resolve().parents[2] / "docker"
HUB_WAN, SITE_WAN = "172.30.0.10", "172.30.0.20"
HUB_LAN, SITE_LAN = "10.1.0.10", "10.2.0.10"
HUB_CLIENT, SITE_CLIENT = "10.1.0.100", "10.2.0.100"


def _compose_strongswan(sw: StrongSwan) -> StrongSwan:
    """``sw`` running docker/strongswan.conf and docker/swanctl.conf (strongswan.conf
    merges sections of the same name, so the overlay only adds or overrides keys)."""
    disabled = "\n".join(f"    {p} {{ load = no }}" for p in DISABLED_PLUGINS)

    def strongswan_conf() -> str:
        overlay = f"""
# test overlay: sockets and logs of this lab instance only
charon-systemd {{
  plugins {{
{disabled}
    vici {{ socket = {sw.uri} }}
  }}
  filelog {{
    lab {{
      path = {sw.log_path}
      default = 1
      ike = 2
      flush_line = yes
    }}
  }}
}}
swanctl {{ socket = {sw.uri} }}
"""
        return (DOCKER / "strongswan.conf").read_text() + overlay

    original_write = sw.write_config

    def write_config() -> None:
        original_write()
        sw.swanctl_conf.write_text((DOCKER / "swanctl.conf").read_text())

    sw._strongswan_conf = strongswan_conf  # type: ignore[method-assign]
    sw.write_config = write_config  # type: ignore[method-assign]
    return sw


def _lan(lab: Lab, gw: Netns, name: str, gw_addr: str, host_addr: str, other: str) -> Netns:
    host = lab.netns(name)
    veth(gw, host, a_ifname="lan", b_ifname="eth0",
         a_addrs=[f"{gw_addr}/24"], b_addrs=[f"{host_addr}/24"])  # fmt: skip
    host.add_route(other, via=gw_addr)
    return host


def test_compose_lab_configs_bring_up_the_tunnel(lab: Lab) -> None:
    require_root_and_strongswan()
    hub, site = lab.netns("dk-hub"), lab.netns("dk-site")
    veth(hub, site, a_ifname="wan", b_ifname="wan",
         a_addrs=[f"{HUB_WAN}/24"], b_addrs=[f"{SITE_WAN}/24"])  # fmt: skip
    hub_client = _lan(lab, hub, "dk-hubc", HUB_LAN, HUB_CLIENT, "10.2.0.0/16")
    site_client = _lan(lab, site, "dk-sitec", SITE_LAN, SITE_CLIENT, "10.1.0.0/16")
    for ns in (hub, site):
        ns.enable_forwarding(v6=False)
    prepare_gateway_host(hub)

    sw = _compose_strongswan(lab.strongswan(site, "compose-strongswan")).start()
    conf = tomllib.loads((DOCKER / "gatewayd.toml").read_text())
    gw = lab.gatewayd(hub, "compose-gatewayd")
    gw.gateway, gw.sites = conf["gateway"], conf["site"]
    gw.start()

    status = gw.wait_established("site1")
    sa = sw.wait_established("hub", "net")
    assert status["ike_sa"]["remote_id"] == "site1.example.net"
    assert status["ike_sa"]["proposal"].startswith("AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384")
    assert (sa.local_id, sa.remote_id) == ("site1.example.net", "hub.example.net")
    for src, dst in ((hub_client, SITE_CLIENT), (site_client, HUB_CLIENT)):
        r = ping(src, dst, count=5, interval=0.1)
        assert r.loss == 0, f"{src.host} -> {dst}: {r}"
    sent, received = tcp_transfer(site_client, hub_client, HUB_CLIENT, 2 << 20)
    assert sent == received
