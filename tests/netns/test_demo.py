"""`make demo` is the README's first command: it must keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.requires import require_root_and_strongswan

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.netns


def test_demo_runs_and_moves_traffic_through_every_tunnel() -> None:
    require_root_and_strongswan()
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert out.count("3/3 replies") == 4, out
    assert out.count("match,") == 2 and "MISMATCH" not in out, out
    # The WAN capture shows ESP in UDP (to the gatewayd site, agreed by Vendor ID, and to
    # strongSwan, whose libipsec always encapsulates), and nothing else.
    assert "ESP(spi=" in out and "UDP-encap: ESP(spi=" in out, out
    assert "hub exit code 0, s1 exit code 0" in out, out
