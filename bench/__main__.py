"""python -m bench [SECTION ...]: run benchmark sections, print one table, save the results.

Each section is a function returning {case: {metric: number}} or a ``bench.section.Report``
(rows, details, its own table). Its results replace that section in bench/results.json
(``BENCH_RESULTS`` names another file); the sections not run keep what they had. Every
saved section records the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import datapath, esp_micro, ike_scale, ike_setup
from bench.machine import machine_info
from bench.section import Report, Rows

RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results.json")

# The registry: add a section here.
SECTIONS: dict[str, Callable[[], Rows | Report]] = {
    "esp_micro": esp_micro.run,
    "ike_setup": ike_setup.run,
    "ike_scale": ike_scale.run,
    "p2s_scale": ike_scale.run_p2s,
    "datapath": datapath.run,
}


def save(results: dict[str, Report]) -> None:
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = machine_info()
    for name, report in results.items():
        entry: dict[str, Any] = {"measured_at": when, "python": platform.python_version()}
        entry |= {"machine": machine, **report.details, "results": report.rows}
        saved[name] = entry
    RESULTS.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def _fmt(value: float | int | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def table(results: dict[str, Report]) -> str:
    lines = [f"{'section':12s} {'case':32s} results", "-" * 96]
    for name, report in results.items():
        if report.text:
            continue
        for case, metrics in report.rows.items():
            values = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            lines.append(f"{name:12s} {case:32s} {values}")
    own = [f"{name}:\n{report.text}" for name, report in results.items() if report.text]
    generic = "\n".join(lines) if len(lines) > 2 else ""
    return "\n\n".join(part for part in (generic, *own) if part)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"some of: {', '.join(SECTIONS)} (default: all)")  # fmt: skip
    names = parser.parse_args().sections or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    results: dict[str, Report] = {}
    for name in names:
        print(f"== {name}", flush=True)
        out = SECTIONS[name]()
        results[name] = out if isinstance(out, Report) else Report(out)
    print()
    print(table(results))
    save(results)
    print(f"\nsaved to {RESULTS}")


if __name__ == "__main__":
    main()
