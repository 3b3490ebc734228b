"""`make demo`: gatewayd carrying real traffic, on its built-in defaults.

Builds a small internet of network namespaces (tests/lab): a hub site running gatewayd,
site s1 running another gatewayd (VNet-to-VNet) and site s2 running strongSwan 5.9.8
(site-to-site), each with a LAN host behind it, joined by a WAN router that has no route
to any LAN, so a LAN-to-LAN packet can only cross through a tunnel. Then it shows the
tunnels, pings across them, captures the WAN to show that only ESP crosses it, moves
20 MB over TCP with matching SHA-256, and tears everything down.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab import Lab, psk_site_to_site
from tests.lab.gatewayd import gateway_table, site_table
from tests.lab.topology import hub_and_spokes
from tests.lab.traffic import ping, tcp_transfer, wait_ping

PSK = "demo-only-secret-change-me-0123456789"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(result: subprocess.CompletedProcess[str]) -> None:
    print(result.stdout.rstrip() or result.stderr.rstrip(), flush=True)


def main() -> int:
    with Lab() as lab:
        step("building the lab: hub (gatewayd), s1 (gatewayd), s2 (strongSwan), a WAN router")
        topo = hub_and_spokes(2)
        hub, s1, s2 = topo["hub"], topo["s1"], topo["s2"]
        for site in (hub, s1, s2):
            print(f"  {site.name:4} WAN {site.public_v4:15} LAN {', '.join(site.lan_nets)}")

        # Built-in defaults everywhere: proposals, lifetimes, DPD, interface, MTU.
        gw_hub = lab.gatewayd(hub.gw, "hub")
        gw_hub.gateway = gateway_table(hub)
        gw_hub.sites = [site_table(s1, PSK), site_table(s2, PSK)]
        gw_s1 = lab.gatewayd(s1.gw, "s1")
        gw_s1.gateway = gateway_table(s1)
        gw_s1.sites = [site_table(hub, PSK)]
        sw = lab.strongswan(s2.gw, "s2")
        conn, secret = psk_site_to_site(s2, hub, PSK, name="s2-hub")
        sw.connections.append(conn)
        sw.secrets.append(secret)

        step("starting strongSwan on s2 and gatewayd on hub and s1")
        sw.start()
        gw_s1.start()
        gw_hub.start()
        gw_hub.wait_established("s1")
        gw_hub.wait_established("s2")
        wait_ping(hub.lan, s1.lan_host_v4)
        wait_ping(hub.lan, s2.lan_host_v4)

        step("gatewayctl status on the hub")
        show(gw_hub.ctl("status"))
        step("gatewayctl routes on the hub")
        show(gw_hub.ctl("routes"))

        step("ping across the tunnels (LAN host to LAN host)")
        for src, dst_site, dst in (
            (hub, s1, s1.lan_host_v4),
            (hub, s2, s2.lan_host_v4),
            (s1, hub, hub.lan_host_v4),
            (s2, hub, hub.lan_host_v6 or hub.lan_host_v4),
        ):
            result = ping(src.lan, dst, count=3)
            print(f"  {src.name}-lan -> {dst_site.name}-lan {dst:12}  {result.received}/3 replies")

        step("what the WAN sees while the hub LAN pings s1 and s2: ESP only")
        capture = topo.wan.popen(
            ["timeout", "8", "tcpdump", "-l", "-n", "-c", "6", "-i", "hub", "esp or udp port 4500"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(1)
        ping(hub.lan, s1.lan_host_v4, count=2)
        ping(hub.lan, s2.lan_host_v4, count=2)
        out, _ = capture.communicate(timeout=15)
        print("\n".join("  " + line for line in out.splitlines()))

        step("20 MB over TCP from the hub LAN to each site's LAN")
        for site in (s1, s2):
            t0 = time.monotonic()
            sent, received = tcp_transfer(hub.lan, site.lan, site.lan_host_v4, 20 << 20)
            mbps = 20 * 8 * 1.048576 / (time.monotonic() - t0)
            verdict = "match" if sent == received else "MISMATCH"
            print(f"  hub -> {site.name}: sha256 {sent[:16]}... {verdict}, {mbps:.0f} Mbit/s")
            if sent != received:
                return 1

        step("counters after the traffic")
        show(gw_hub.ctl("status"))
        step("stopping: gatewayd sends DELETE to its peers, removes routes and its TUN device")
        print(f"  hub exit code {gw_hub.stop()}, s1 exit code {gw_s1.stop()}")
    print("\ndone: every namespace is gone.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
