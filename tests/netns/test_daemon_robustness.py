"""gatewayd under hostile input from the WAN while its tunnel carries traffic.

Thousands of datagrams (tests/lab/flood.py) hit gateway a from the WAN router: random
bytes to UDP 500, to UDP 4500 with and without the non-ESP marker, and as IP protocol
50; ESP with the live inbound SPI and wrong ICVs; IKE with the live IKE SPIs and a
garbage SK payload; damaged and replayed copies of the IKE and ESP packets captured
while the pair came up (spoofed as from the peer); truncated and oversized datagrams.

The daemons must stay up, the tunnel must keep its SAs and carry traffic, and the drops
must be counted in ``status``.

(The ``gatewayd check`` broken-config table lives in tests/gatewayd/test_config_broken.py.)
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.lab import Capture, Lab, Netns, ping, require_root, require_tools, tcp_transfer
from tests.lab.flood import Target, WirePacket, dump_plan, hostile_plan, read_ipsec, summary
from tests.lab.gatewayd import (
    REPO,
    Gatewayd,
    VnetPair,
    drops_total,
    site_status,
    spis,
    start_vnet_pair,
)

pytestmark = pytest.mark.netns

SEED = 20240503  # the plan is reproducible; change it to explore
RATE = 2000  # datagrams per second: a flood, but not one that only measures buffer sizes
# Share of each kind of hostile datagram that must show up in the drop counters: at this
# rate the sockets' buffers hold a whole plan, so nothing should go uncounted.
COUNTED = 0.9
ESP_RANDOM = ("esp-random", "nat-t-esp-random")
ESP_FORGED = ("esp-forged", "nat-t-esp-forged")
IKE_GARBAGE = ("ike-random", "nat-t-ike-random", "ike-forged")


class Robust(NamedTuple):
    lab: Lab
    pair: VnetPair
    captured: list[WirePacket]


@pytest.fixture(scope="module")
def robust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Robust]:
    """A running pair, and the IKE/ESP packets of its start captured on the WAN."""
    require_root()
    require_tools("tcpdump")
    with Lab(tmp_path_factory.mktemp("robust") / "lab") as lab:
        topo = lab.site_to_site(ipv6=False)
        assert topo.wan is not None
        pcap = lab.workdir / "setup.pcap"
        with Capture(topo.wan, "a", pcap, "udp port 500 or udp port 4500 or esp"):
            pair = start_vnet_pair(lab.gatewayd, topo)  # settled: pings use the live SAs
            assert ping(pair.a.lan, pair.b.lan_host_v4, count=10, interval=0.05).loss == 0
            assert ping(pair.b.lan, pair.a.lan_host_v4, count=10, interval=0.05).loss == 0
        yield Robust(lab, pair, read_ipsec(pcap))


def _target(pair: VnetPair) -> Target:
    site = site_status(pair.gw["a"].status(), "b")
    ike, child = site["ike_sa"], site["child_sas"][0]
    return Target(
        address=pair.a.gw_wan_v4,
        peer=pair.b.public_v4,
        esp_spi=int(child["spi_in"], 16),
        ike_spis=(bytes.fromhex(ike["spi_i"]), bytes.fromhex(ike["spi_r"])),
    )


def _send(wan: Netns, plan_path: Path, seconds: float) -> dict[str, Any]:
    """Run the flood sender inside the WAN router; its report of what went out."""
    cp = wan.run(
        [sys.executable, "-m", "tests.lab.flood", str(plan_path), str(RATE)],
        timeout=seconds * 4 + 60,
        env={"PYTHONPATH": str(REPO)},
    )
    report: dict[str, Any] = json.loads(cp.stdout)
    return report


def _quiet_status(gw: Gatewayd, quiet: float = 1.0, timeout: float = 20) -> dict[str, Any]:
    """Status once the drop counters have stopped moving for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    status = gw.status()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        new = gw.status()
        counts = (drops_total(new), new["datapath"]["ike_drops"])
        if counts == (drops_total(status), status["datapath"]["ike_drops"]):
            return new
        status = new
    return status


def _flood(robust: Robust, plan_path: Path, seconds: float) -> tuple[dict[str, Any], Any]:
    """Send the plan from the WAN router while a-lan pings b-lan every 50 ms."""
    pair, wan = robust.pair, robust.pair.topo.wan
    assert wan is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pinger = pool.submit(
            ping, pair.a.lan, pair.b.lan_host_v4, int((seconds + 2) / 0.05), 0.05, wait=2
        )
        time.sleep(0.5)
        report = _send(wan, plan_path, seconds)
        return report, pinger.result()


def test_malformed_flood_keeps_daemon_and_tunnel_up(robust: Robust, tmp_path: Path) -> None:
    pair = robust.pair
    gw_a, gw_b = pair.gw["a"], pair.gw["b"]
    pair.wait_up()
    kinds = {p.kind for p in robust.captured}
    # Two gatewayd carry ESP in UDP by default (encapsulation "auto"); either kind seeds.
    assert "ike" in kinds and kinds & {"esp", "esp-udp"}, f"no IKE or ESP seeds: {kinds}"

    target = _target(pair)
    plan = hostile_plan(random.Random(SEED), target, robust.captured)
    planned = summary(plan)
    dump_plan(plan, tmp_path / "plan.json")
    spi = target.esp_spi.to_bytes(4, "big")
    live_replays = sum(
        1 for s in plan if s.tag == "esp-replayed" and s.payload[:4] == spi
    )  # exact copies of packets the gateway already accepted on the live SA

    before = {"a": gw_a.status(), "b": gw_b.status()}
    spis_before = spis(before["a"], "b")
    marks = {"a": gw_a.mark(), "b": gw_b.mark()}
    report, during = _flood(robust, tmp_path / "plan.json", len(plan) / RATE)
    sent = report["sent"]
    assert sum(sent.values()) >= 0.99 * len(plan), report  # the flood itself went out

    # The daemons survived and still answer.
    for gw in (gw_a, gw_b):
        assert gw.alive, f"{gw.name} died under the flood\n{gw.tail()}"
    after = _quiet_status(gw_a)  # the daemon has worked through its socket buffers

    # Drops are counted: the data path's for ESP, IKE's for IKE.
    d0, d1 = before["a"]["datapath"], after["datapath"]
    esp_path = sum(sent.get(t, 0) for t in (*ESP_RANDOM, *ESP_FORGED))
    assert drops_total(after) - drops_total(before["a"]) >= COUNTED * esp_path, (planned, d0, d1)
    forged = sum(sent.get(t, 0) for t in ESP_FORGED)
    assert d1["drops"]["bad_icv"] - d0["drops"]["bad_icv"] >= COUNTED * forged, (d0, d1)
    unknown = sum(sent.get(t, 0) for t in ESP_RANDOM)
    assert d1["drops"]["unknown_spi"] - d0["drops"]["unknown_spi"] >= COUNTED * unknown, (d0, d1)
    if live_replays:
        assert d1["drops"]["replay"] - d0["drops"]["replay"] >= COUNTED * live_replays, (d0, d1)
    garbage = sum(sent.get(t, 0) for t in IKE_GARBAGE)
    assert d1["ike_drops"] - d0["ike_drops"] >= COUNTED * garbage, (garbage, d0, d1)

    # The tunnel is the same tunnel (unless a scheduled rekey happened) and works.
    rekeyed = any(
        gw.find_events(e, since=marks[side])
        for side, gw in (("a", gw_a), ("b", gw_b))
        for e in ("child_sa_rekeyed", "ike_sa_rekeyed")
    )
    if not rekeyed:
        assert spis(after, "b") == spis_before
    for side, gw in (("a", gw_a), ("b", gw_b)):
        for event in ("ike_sa_down", "child_sa_down", "peer_dead"):
            assert not gw.find_events(event, since=marks[side]), f"{gw.name}: {event}"
    assert site_status(after, "b")["state"] == "established"
    assert during.loss <= 10, f"tunnel barely usable during the flood: {during}"
    assert ping(pair.a.lan, pair.b.lan_host_v4, count=20, interval=0.05).loss == 0
    sent_sha, received_sha = tcp_transfer(pair.a.lan, pair.b.lan, pair.b.lan_host_v4, 5 << 20)
    assert sent_sha == received_sha


def test_flood_during_tcp_transfer(robust: Robust, tmp_path: Path) -> None:
    """A second, differently seeded flood while 20 MB cross the tunnel: the bytes
    arrive intact and the daemons stay up."""
    pair = robust.pair
    pair.wait_up()
    plan = hostile_plan(random.Random(SEED + 1), _target(pair), robust.captured)
    dump_plan(plan, tmp_path / "plan.json")
    wan = pair.topo.wan
    assert wan is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        transfer = pool.submit(
            tcp_transfer, pair.a.lan, pair.b.lan, pair.b.lan_host_v4, 20 << 20, timeout=300
        )
        time.sleep(0.3)
        report = _send(wan, tmp_path / "plan.json", len(plan) / RATE)
        sent_sha, received_sha = transfer.result()
    assert sum(report["sent"].values()) >= 0.99 * len(plan), report
    assert sent_sha == received_sha
    for gw in pair.daemons():
        assert gw.alive, f"{gw.name} died under the flood\n{gw.tail()}"
    assert pair.gw["a"].site("b")["state"] == "established"
    assert ping(pair.a.lan, pair.b.lan_host_v4, count=10, interval=0.05).loss == 0
