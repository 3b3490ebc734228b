"""`python -m bench datapath`, cut short: 2-second runs, the bare path and gatewayd only.

Checks that the section builds its lab, measures, prints its table, saves its rows (to a
temporary results file, never bench/results.json) and leaves no namespace behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import list_namespaces, require_root, require_tools

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def test_datapath_section_smoke(tmp_path: Path) -> None:
    require_root()
    require_tools("iperf3", "ping")
    results = tmp_path / "results.json"
    env = {
        **os.environ,
        "BENCH_SECONDS": "2",
        "BENCH_PAIRS": "bare,gatewayd",
        "BENCH_UDP_STEPS": "3",
        "BENCH_RESULTS": str(results),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "datapath"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the section tears its lab down
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not [n for n in list_namespaces() if n.startswith(f"gwd-{proc.pid}-")], out

    for label in ("TCP 1 stream a->b, Mbit/s", "bare", "gatewayd", "CPU s/GB, both gateways"):
        assert label in out, out
    saved = json.loads(results.read_text())["datapath"]
    assert saved["machine"]["cores"] >= 1
    assert saved["settings"]["pairs"] == ["bare", "gatewayd"]
    rows = saved["results"]
    for key in ("tcp1_ab_mbps", "tcp1_ba_mbps", "tcp4_ab_mbps"):
        for pair in ("bare", "gatewayd"):
            value = rows[key][pair]
            assert isinstance(value, float) and value > 0, (key, pair, value, out)
    assert rows["cpu_s_per_gb"]["bare"] == "n/a"
    assert rows["cpu_s_per_gb"]["gatewayd"] > 0
    assert rows["ping_idle_p50_ms"]["gatewayd"] > 0


def test_scale_sections_smoke(tmp_path: Path) -> None:
    """`python -m bench ike_scale p2s_scale` with 20 peers each: every simulated site and
    client comes up over real sockets, is still there after the hold, and RSS is read."""
    require_root()
    results = tmp_path / "results.json"
    env = {
        **os.environ,
        "BENCH_SITES": "20",
        "BENCH_CLIENTS": "20",
        "BENCH_HOLD": "1",
        "BENCH_RESULTS": str(results),
    }
    cp = subprocess.run(
        [sys.executable, "-m", "bench", "ike_scale", "p2s_scale"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    saved = json.loads(results.read_text())
    for section, case in (("ike_scale", "20 sites"), ("p2s_scale", "20 clients")):
        row = saved[section]["results"][case]
        assert row["up at the gateway"] == 20 and row["still up after 1 s"] == 20, row
        assert row["failed (load)"] == 0, row
        assert row["RSS 20 up, MiB"] >= row["RSS 0 up, MiB"] > 0, row
        assert [s["up"] for s in saved[section]["stages"]] == [1, 19], saved[section]
