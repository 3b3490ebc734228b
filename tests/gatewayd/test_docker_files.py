"""docker/: the compose lab parses, its gatewayd config passes `gatewayd check`, and the
gatewayd and strongSwan sides describe the same tunnel.

There is no Docker engine on the CI machines, so nothing here builds or runs an image;
`docker-compose config` (Debian's docker-compose v1) validates the file when installed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.lab.requires import require_tools

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
GATEWAYD_TOML = DOCKER / "gatewayd.toml"
SWANCTL_CONF = DOCKER / "swanctl.conf"
STRONGSWAN_CONF = DOCKER / "strongswan.conf"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _gatewayd() -> dict[str, Any]:
    return tomllib.loads(GATEWAYD_TOML.read_text())


def _swanctl_value(key: str) -> str:
    """The first ``key = value`` in swanctl.conf (enough for this small file)."""
    m = re.search(rf"^\s*{re.escape(key)}\s*=\s*(.+?)\s*$", SWANCTL_CONF.read_text(), re.M)
    assert m, f"{key} not in {SWANCTL_CONF}"
    return m[1].strip('"')


def test_compose_file_parses_and_has_both_gateways() -> None:
    data = _compose()
    services = data["services"]
    assert {"gatewayd", "strongswan"} <= set(services)
    for name in ("gatewayd", "strongswan"):
        svc = services[name]
        assert {"NET_ADMIN", "NET_RAW"} <= set(svc["cap_add"]), name
        assert any(str(d).startswith("/dev/net/tun") for d in svc["devices"]), name
        assert "wan" in svc["networks"], name
        build = svc["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), build
    # Every mounted file exists next to the compose file.
    for svc in services.values():
        for volume in svc.get("volumes", []):
            src = str(volume).split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).is_file(), volume
    wan = data["networks"]["wan"]["ipam"]["config"][0]["subnet"]
    for name in ("gatewayd", "strongswan"):
        addr = services[name]["networks"]["wan"]["ipv4_address"]
        assert ipaddress.ip_address(addr) in ipaddress.ip_network(wan)


def test_dockerfile_is_debian_12_and_installs_gatewayd_with_pip() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:12", text, re.M)
    assert "pip install" in text
    assert re.search(r'^ENTRYPOINT \["gatewayd"\]', text, re.M)


def test_gatewayd_toml_passes_gatewayd_check() -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", "check", "-c", str(GATEWAYD_TOML)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.strip() == "ok"


def test_both_sides_describe_the_same_tunnel() -> None:
    """Addresses, identities, PSK, networks and proposals agree across gatewayd.toml,
    swanctl.conf and the compose file's static addresses."""
    conf, services = _gatewayd(), _compose()["services"]
    gw, (site,) = conf["gateway"], conf["site"]
    addr = {name: services[name]["networks"]["wan"]["ipv4_address"] for name in services
            if "wan" in services[name].get("networks", {})}  # fmt: skip
    assert gw["address"] == addr["gatewayd"] == _swanctl_value("remote_addrs")
    assert site["address"] == addr["strongswan"] == _swanctl_value("local_addrs")
    swan_text = SWANCTL_CONF.read_text()
    local_id = re.search(r"local \{[^}]*?id = (\S+)", swan_text)
    remote_id = re.search(r"remote \{[^}]*?id = (\S+)", swan_text)
    assert local_id and remote_id
    assert (site["id"], gw["id"]) == (local_id[1], remote_id[1])
    assert site["psk"] == _swanctl_value("secret")
    assert site["networks"] == [_swanctl_value("local_ts")]
    assert gw["networks"] == [_swanctl_value("remote_ts")]
    assert site["ike_proposals"] == [_swanctl_value("proposals")]
    assert site["esp_proposals"] == [_swanctl_value("esp_proposals")]
    # Each LAN client routes the other LAN through its own gateway's LAN address.
    hub_lan = services["gatewayd"]["networks"]["hub-lan"]["ipv4_address"]
    site_lan = services["strongswan"]["networks"]["site-lan"]["ipv4_address"]
    assert f"{site['networks'][0]} via {hub_lan}" in str(services["hub-client"]["command"])
    assert f"{gw['networks'][0]} via {site_lan}" in str(services["site-client"]["command"])


def test_strongswan_conf_uses_the_userspace_data_path() -> None:
    text = STRONGSWAN_CONF.read_text()
    assert re.search(r"kernel-libipsec\s*\{\s*load\s*=\s*yes", text)
    assert re.search(r"resolve\s*\{\s*load\s*=\s*no", text)
    assert text.count("{") == text.count("}")


def test_docker_compose_config_accepts_the_file() -> None:
    require_tools("docker-compose")  # CI installs it (tools/install-deps.sh): a failure there
    exe = shutil.which("docker-compose")
    assert exe is not None
    cp = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
