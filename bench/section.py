"""What a benchmark section returns to ``python -m bench``.

A section is a function returning either bare rows ``{case: {metric: value}}`` or a
``Report``: the same rows plus details saved beside them in bench/results.json and its
own table, printed instead of the generic one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Value = float | int | str  # a str is a note instead of a number ("failed: ...", "n/a")
Rows = Mapping[str, Mapping[str, Value]]


@dataclass
class Report:
    rows: Rows
    details: dict[str, Any] = field(default_factory=dict)
    text: str = ""
