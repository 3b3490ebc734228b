"""The data-path report: a table (rows = workloads, columns = pairs, then gatewayd's
ratios), the machine, problems and failures, and the drops counted per workload."""

from __future__ import annotations

from typing import Any

from bench.machine import machine_info
from bench.section import Report, Value
from bench.workloads import WORKLOADS, Run, Settings

# (numerator, denominator) column keys of the ratio columns
RATIOS = [
    ("gatewayd", "strongswan"),
    ("gatewayd", "wireguard_go"),
    ("gatewayd_esp", "strongswan"),
    ("gatewayd_esp", "wireguard_go"),
]
CELL_MAX = 44  # a longer note ("failed: ...") is cut here; the whole text is in details


def ratio(a: Value | None, b: Value | None) -> Value:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 3)
    return "n/a"


def add_ratios(rows: dict[str, dict[str, Value]], pairs: list[str]) -> list[str]:
    """Adds the ratio cells of every row; returns the ratio column keys."""
    keys = []
    for num, den in RATIOS:
        if num in pairs and den in pairs:
            key = f"{num}/{den}"
            keys.append(key)
            for cells in rows.values():
                cells[key] = ratio(cells.get(num), cells.get(den))
    return keys


def _fmt(value: Value | None, is_ratio: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value if len(value) <= CELL_MAX else value[: CELL_MAX - 3] + "..."
    if is_ratio:
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def render(
    rows: dict[str, dict[str, Value]],
    labels: dict[str, str],
    columns: list[tuple[str, str]],
) -> str:
    """``labels``: row key -> row label; ``columns``: (key, header) in order."""
    ratio_keys = {k for k, _ in columns if "/" in k}
    header = ["workload", *(h for _, h in columns)]
    body = [
        [labels[row], *(_fmt(rows[row].get(k), k in ratio_keys) for k, _ in columns)]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, body)])


def report(
    runs: dict[str, Run], labels: dict[str, str], settings: Settings, elapsed: float
) -> Report:
    """``runs`` and ``labels`` (column headers) by pair key, in the table's order."""
    rows: dict[str, dict[str, Value]] = {
        key: {pair: run.cells[key] for pair, run in runs.items() if key in run.cells}
        for key, _ in WORKLOADS
    }
    ratio_keys = add_ratios(rows, list(runs))
    columns = [(k, labels[k]) for k in runs]
    columns += [(k, "/".join(labels[p] for p in k.split("/"))) for k in ratio_keys]
    text = render(rows, dict(WORKLOADS), columns)
    problems = [p for r in runs.values() for p in r.details.get("problems", [])]
    counted = [line for r in runs.values() for line in r.counted_lines()]
    errors = [f"{k}: {r.details['error']}" for k, r in runs.items() if "error" in r.details]
    errors += [f"{k} {w}: {e}" for k, r in runs.items()
               for w, e in r.details.get("errors", {}).items()]  # fmt: skip
    m = machine_info()
    text += (
        f"\n\n{m['cpu_model']}, {m['cores']} cores, kernel {m['kernel']}, Python {m['python']};"
        f" TCP runs {settings.seconds} s, UDP steps {settings.udp_seconds} s;"
        f" {elapsed:.0f} s in all"
    )
    text += "".join(f"\nfailure: {e.splitlines()[0] if e else e}" for e in errors)
    text += "".join(f"\nproblem: {p}" for p in problems)
    if counted:
        text += "\n\ndrops and errors counted during each workload (kernel and gateway):"
        text += "".join(f"\n  {line}" for line in counted)
    details: dict[str, Any] = {
        "settings": {**vars(settings), "pairs": list(runs)},
        "elapsed_s": round(elapsed, 1),
        "pairs": {k: r.details for k, r in runs.items()},
    }
    return Report(rows, details, text)
