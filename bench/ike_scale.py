"""Sections "ike_scale" and "p2s_scale": many sites, or many remote-access clients, on
one gatewayd over real sockets (root).

    python -m bench ike_scale        (BENCH_SITES=1000, BENCH_WINDOW=64)
    python -m bench p2s_scale        (BENCH_CLIENTS=1000, BENCH_WINDOW=64)

Two namespaces joined by a veth pair: ``gw`` runs gatewayd with BENCH_SITES route-based
sites (PSK, responder_only, each its own peer address and a /24), ``load`` runs
bench/ike_load.py: one simulated peer per site, each with its own address and port-500
socket, our own IKE engine as initiator, at most BENCH_WINDOW negotiating at once.

p2s_scale: the same two namespaces, the gateway with a [p2s] pool and an EAP-MSCHAPv2
users file, each simulated client with its own user, asking for a virtual IP.

Stages: 1 peer, then up to 100, then up to all. After each stage the daemon's
RSS (VmRSS) is read, so the growth per site can be reported; set-ups per second over
real sockets are those of the last (largest) stage, and "time for all" is the sum of the
stages' wall times. The daemon's own CPU time over the stages is reported beside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.section import Report, Value
from tests.lab import Lab, Netns, require_root
from tests.lab.gatewayd import Gatewayd, prepare_gateway_host
from tests.lab.netns import veth

GW_ADDR = "172.30.0.1"  # the gateway's end of a /30; the peers sit behind the other end
LOAD_ADDR = "172.30.0.2"
PSK_PREFIX = "bench-scale-psk-"
GATEWAY_ID = "scale-gw.example.net"
IKE_PROPOSAL = "aes256gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes256gcm16"
STAGES = (1, 100)  # then the total
STATUS_TIMEOUT = 120.0


def _peer_addr(i: int) -> str:
    return f"172.31.{i // 250}.{1 + i % 250}"  # 172.31.0.1 .. : up to 64,000 peers


def _site_net(i: int) -> str:
    return f"10.{100 + i // 256}.{i % 256}.0/24"


def _site(i: int) -> dict[str, object]:
    return {
        "name": f"s{i:05d}",
        "address": _peer_addr(i),
        "id": f"s{i:05d}.example.net",
        "networks": [_site_net(i)],
        "psk": f"{PSK_PREFIX}{i:05d}",
        "mode": "responder_only",
        "ike_proposals": [IKE_PROPOSAL],
        "esp_proposals": [ESP_PROPOSAL],
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profile(pid: int) -> subprocess.Popen[bytes] | None:
    """BENCH_PYSPY=FILE: py-spy samples the daemon during the last stage (flame graph)."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    argv = ["py-spy", "record", "-p", str(pid), "-o", out, "-r", "200", "--nonblocking"]
    if out.endswith(".txt"):
        argv += ["-f", "raw"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stages(total: int) -> list[int]:
    marks = sorted({m for m in (*STAGES, total) if m <= total})
    return [b - a for a, b in zip([0, *marks], marks, strict=False)]


def _lab(lab: Lab, peers: int) -> tuple[Netns, Netns]:
    """The peers' addresses sit on the load host's loopback, routed through one next hop:
    as behind a real router, the gateway keeps one neighbour entry, not one per peer (the
    kernel's neighbour table is shared by all namespaces and holds 1,024 by default)."""
    gw_ns, load_ns = lab.netns("scale-gw"), lab.netns("scale-load")
    veth(gw_ns, load_ns, a_ifname="wan0", b_ifname="load0",
         a_addrs=[f"{GW_ADDR}/30"], b_addrs=[f"{LOAD_ADDR}/30"])  # fmt: skip
    gw_ns.ip("route", "add", "172.31.0.0/16", "via", LOAD_ADDR)
    load_ns.ip("link", "set", "lo", "up")
    load_ns.ip("route", "add", "default", "via", GW_ADDR)
    batch = "".join(f"addr add {_peer_addr(i)}/32 dev lo\n" for i in range(peers))
    load_ns.run(["ip", "-batch", "-"], input=batch, timeout=120)
    prepare_gateway_host(gw_ns)
    return gw_ns, load_ns


def _measure(gw: Gatewayd, load_ns: Netns, spec: dict[str, Any], what: str) -> Report:
    """Start the daemon, bring the peers up in stages, read RSS and CPU after each."""
    total = len(spec["peers"])
    started = time.monotonic()
    gw.start(ready_timeout=120)
    ready_s = time.monotonic() - started
    pid = gw.pid
    rss = {"0": _rss_kib(pid)}
    spec_file = Path(tempfile.mkdtemp(prefix="gwd-scale-")) / "load.json"
    spec_file.write_text(json.dumps(spec))
    root = str(Path(__file__).resolve().parent.parent)
    load = load_ns.popen(
        [sys.executable, "-m", "bench.ike_load", str(spec_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root,
        env={"PYTHONPATH": root},
    )  # fmt: skip
    assert load.stdin is not None and load.stdout is not None
    json.loads(load.stdout.readline())  # {"ready": n}
    stages, cpu0, up = [], _cpu_s(pid), 0
    plan = _stages(total)
    for k, count in enumerate(plan):
        spy = _profile(pid) if k == len(plan) - 1 else None
        load.stdin.write(f"up {count}\n")
        load.stdin.flush()
        result = json.loads(load.stdout.readline())
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            spy.wait(30)
        up += count
        time.sleep(1.0)  # let the daemon finish installing routes before RSS is read
        rss[str(up)] = _rss_kib(pid)
        stages.append(result)
    cpu = _cpu_s(pid) - cpu0
    status = gw.request("status", timeout=STATUS_TIMEOUT)  # 10,000 clients: a big answer
    time.sleep(float(os.environ.get("BENCH_HOLD") or 5))  # holding: still all there?
    held = gw.request("status", timeout=STATUS_TIMEOUT)
    load.stdin.write("quit\n")
    load.stdin.flush()
    load.wait(30)
    last = stages[-1]
    per_peer = (rss[str(total)] - rss["0"]) / total if total else 0.0
    row: dict[str, Value] = {
        "up at the gateway": _count_up(status, what),
        f"still up after {os.environ.get('BENCH_HOLD') or 5} s": _count_up(held, what),
        "failed (load)": sum(s["failed"] for s in stages),
        "time for all, s": round(sum(s["seconds"] for s in stages), 2),
        "set-ups/s (last stage)": round(last["up"] / last["seconds"], 1),
        "gateway CPU ms/set-up": round(cpu * 1e3 / total, 2),
        "RSS 0 up, MiB": round(rss["0"] / 1024, 1),
        **{f"RSS {k} up, MiB": round(v / 1024, 1) for k, v in rss.items() if k != "0"},
        f"RSS per {what[:-1]}, KiB": round(per_peer, 1),
        "daemon start, s": round(ready_s, 2),
    }
    details = {"stages": stages, "rss_kib": rss, "window": spec["window"], what: total}
    return Report({f"{total} {what}": row}, details)


def _count_up(status: dict[str, Any], what: str) -> int:
    if what == "sites":
        return sum(1 for s in status["sites"] if s.get("state") == "established")
    return len((status.get("p2s") or {}).get("clients") or [])


def _spec(peers: list[dict[str, str]], window: int, **extra: Any) -> dict[str, Any]:
    return {
        "gateway": GW_ADDR, "gateway_id": GATEWAY_ID, "window": window,
        "ike_proposal": IKE_PROPOSAL, "esp_proposal": ESP_PROPOSAL, "peers": peers, **extra,
    }  # fmt: skip


def run() -> Report:
    """BENCH_SITES route-based sites (PSK), each its own simulated peer."""
    require_root()
    sites = int(os.environ.get("BENCH_SITES") or 1000)
    window = int(os.environ.get("BENCH_WINDOW") or 64)
    with Lab() as lab:
        gw_ns, load_ns = _lab(lab, sites)
        gw = lab.gatewayd(gw_ns, "scale-gatewayd")
        gw.gateway = {"name": "scale", "address": GW_ADDR, "id": GATEWAY_ID,
                      "networks": ["10.250.0.0/24"]}  # fmt: skip
        gw.sites = [_site(i) for i in range(sites)]
        peers = [{"addr": _peer_addr(i), "id": f"s{i:05d}.example.net",
                  "psk": f"{PSK_PREFIX}{i:05d}"} for i in range(sites)]  # fmt: skip
        return _measure(gw, load_ns, _spec(peers, window), "sites")


def run_p2s() -> Report:
    """BENCH_CLIENTS remote-access clients: EAP-MSCHAPv2, a virtual IP each, the gateway
    authenticated by its certificate (ECDSA P-256)."""
    from gatewayd.p2s.users import nt_hash_of, render_users
    from tests.lab.certs import make_ca, make_cert

    require_root()
    clients = int(os.environ.get("BENCH_CLIENTS") or 1000)
    window = int(os.environ.get("BENCH_WINDOW") or 64)
    with Lab() as lab:
        gw_ns, load_ns = _lab(lab, clients)
        files = Path(tempfile.mkdtemp(prefix="gwd-p2s-scale-"))
        ca = make_ca(files, "p2s scale CA")
        cert = make_cert(files, ca, GATEWAY_ID, dns=[GATEWAY_ID])
        users = {f"user{i:05d}": f"password-{i:05d}" for i in range(clients)}
        hashes = {u: nt_hash_of(pw) for u, pw in users.items()}
        (files / "users.toml").write_bytes(render_users(hashes))
        gw = lab.gatewayd(gw_ns, "p2s-scale-gatewayd")
        gw.gateway = {"name": "p2s-scale", "address": GW_ADDR, "id": GATEWAY_ID,
                      "networks": ["10.250.0.0/24"], "certificate": str(cert.cert),
                      "private_key": str(cert.key)}  # fmt: skip
        gw.tables["p2s"] = {
            "address_pool": ["10.240.0.0/16"],
            "dns": ["10.250.0.53"],
            "auth": ["eap-mschapv2"],
            "users_file": str(files / "users.toml"),
            "max_clients": max(clients, 1),
            "ike_proposals": [IKE_PROPOSAL],
            "esp_proposals": [ESP_PROPOSAL],
        }
        peers = [{"addr": _peer_addr(i), "id": user, "eap_password": pw}
                 for i, (user, pw) in enumerate(users.items())]  # fmt: skip
        spec = _spec(peers, window, gateway_ca=str(ca.cert))
        return _measure(gw, load_ns, spec, "clients")


def main() -> None:
    print(json.dumps(run().rows, indent=2))


if __name__ == "__main__":
    main()
