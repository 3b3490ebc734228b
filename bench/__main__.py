"""python -m bench [SECTION ...]: run benchmark sections, print one table, save the results.

Each section is a function returning {case: {metric: number}}. Its results replace that
section in bench/results.json; the sections not run keep what they had.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from bench import esp_micro, ike_setup

Rows = dict[str, dict[str, float | int]]
RESULTS = Path(__file__).resolve().parent / "results.json"

# The registry: add a section here (e.g. the namespace data-path benchmark).
SECTIONS: dict[str, Callable[[], Rows]] = {
    "esp_micro": esp_micro.run,
    "ike_setup": ike_setup.run,
}


def save(results: dict[str, Rows]) -> None:
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name, rows in results.items():
        saved[name] = {"measured_at": when, "python": platform.python_version(), "results": rows}
    RESULTS.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def table(results: dict[str, Rows]) -> str:
    lines = [f"{'section':12s} {'case':32s} results", "-" * 96]
    for name, rows in results.items():
        for case, metrics in rows.items():
            values = "  ".join(f"{k} {v:g}" for k, v in metrics.items())
            lines.append(f"{name:12s} {case:32s} {values}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"some of: {', '.join(SECTIONS)} (default: all)")  # fmt: skip
    names = parser.parse_args().sections or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    results: dict[str, Rows] = {}
    for name in names:
        print(f"== {name}", flush=True)
        results[name] = SECTIONS[name]()
    print()
    print(table(results))
    save(results)
    print(f"\nsaved to {RESULTS}")


if __name__ == "__main__":
    main()
