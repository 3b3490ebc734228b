"""What a benchmark ran on: CPU model, cores, kernel, Python, tool versions."""

from __future__ import annotations

import os
import platform
import subprocess


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.partition(":") for line in out.splitlines())
    return {key.strip(): value.strip() for key, _, value in pairs}


def _cpu_model(lscpu: dict[str, str]) -> str:
    if model := lscpu.get("Model name"):
        return model
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return 0.0


def machine_info() -> dict[str, str | int | float]:
    lscpu = _lscpu()
    return {
        "cpu_model": _cpu_model(lscpu),
        "cpu_family_model": f"{lscpu.get('CPU family', '?')}/{lscpu.get('Model', '?')}",
        "hypervisor": lscpu.get("Hypervisor vendor", "none"),
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "os": _os_name(),
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def package_version(name: str) -> str | None:
    """The installed Debian package version, or None."""
    try:
        cp = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return cp.stdout.strip() or None if cp.returncode == 0 else None
