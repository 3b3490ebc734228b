"""Pull the hex dumps out of a strongSwan log (``LABEL => N bytes @ 0x...`` + dump lines).

At ``ike = 4`` charon dumps the DH secret, SKEYSEED and SK_*; at ``chd = 4`` the Child
SA seed and ESP keys. A dump looks like::

    12:00:00.123 04[IKE] <conn|1> SKEYSEED => 32 bytes @ 0x7f...
    12:00:00.123 04[IKE] <conn|1>    0: 8C DE 08 CA ...  ....
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEAD = re.compile(r"\[(?P<sub>[A-Z]{3})\] (?:<[^>]*> )?(?P<label>.+?) => (?P<n>\d+) bytes @ ")
_ROW = re.compile(r"\[[A-Z]{3}\] (?:<[^>]*> )?\s+(?P<off>\d+): (?P<hex>(?:[0-9A-F]{2} ){1,16})")


@dataclass(frozen=True)
class Dump:
    subsystem: str  # "IKE", "CHD", ...
    label: str  # e.g. "SKEYSEED", "Sk_ei secret", "encryption initiator key"
    data: bytes
    line: int  # 0-based line number of the header in the log


def dumps(log: str) -> list[Dump]:
    """Every complete hex dump in the log, in order."""
    lines = log.splitlines()
    out: list[Dump] = []
    i = 0
    while i < len(lines):
        head = _HEAD.search(lines[i])
        if not head:
            i += 1
            continue
        want, buf, j = int(head["n"]), bytearray(), i + 1
        while len(buf) < want and j < len(lines):
            row = _ROW.search(lines[j])
            if not row or int(row["off"]) != len(buf):
                break
            buf += bytes.fromhex(row["hex"])
            j += 1
        if len(buf) == want:
            out.append(Dump(head["sub"], head["label"], bytes(buf), i))
        i = j if j > i + 1 else i + 1
    return out


def first(log_dumps: list[Dump], label: str) -> bytes | None:
    return next((d.data for d in log_dumps if d.label == label), None)
