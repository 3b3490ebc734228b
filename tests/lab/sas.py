"""Parse ``swanctl --list-sas --pretty`` into plain dicts and small typed views.

The pretty form prints one item per line, so values with spaces (DN identities) survive,
unlike ``--raw`` which does not quote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Tree = dict[str, Any]


def parse_vici_pretty(text: str) -> list[tuple[str, Tree]]:
    """Every top-level ``<name> {...}`` block of the output, in order, as nested dicts."""
    blocks: list[tuple[str, Tree]] = []
    stack: list[Tree] = []
    current_list: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if current_list is not None:
            if line == "]":
                current_list = None
            else:
                current_list.append(line)
            continue
        if line.endswith("{"):
            name = line[:-1].strip()
            node: Tree = {}
            if stack:
                stack[-1][name] = node
            else:
                blocks.append((name, node))
            stack.append(node)
        elif line == "}":
            if stack:
                stack.pop()
        elif " = " in line and stack:
            key, value = line.split(" = ", 1)
            if value == "[":
                current_list = []
                stack[-1][key] = current_list
            else:
                stack[-1][key] = value
    return blocks


@dataclass
class ChildSa:
    name: str
    state: str
    spi_in: str
    spi_out: str
    protocol: str
    encap: bool
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    local_ts: list[str]
    remote_ts: list[str]
    uniqueid: str
    raw: Tree = field(repr=False)


@dataclass
class IkeSa:
    name: str
    state: str
    uniqueid: str
    initiator: bool
    spi_i: str
    spi_r: str
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    local_id: str
    remote_id: str
    children: list[ChildSa]
    raw: Tree = field(repr=False)

    def child(self, name: str) -> ChildSa | None:
        """The first installed Child SA with this config name (rekeys leave several)."""
        for c in self.children:
            if c.name == name and c.state == "INSTALLED":
                return c
        return next((c for c in self.children if c.name == name), None)


def _child(key: str, t: Tree) -> ChildSa:
    return ChildSa(
        name=t.get("name", key.rsplit("-", 1)[0]),
        state=t.get("state", ""),
        spi_in=t.get("spi-in", ""),
        spi_out=t.get("spi-out", ""),
        protocol=t.get("protocol", ""),
        encap=t.get("encap") == "yes",
        bytes_in=int(t.get("bytes-in", 0)),
        bytes_out=int(t.get("bytes-out", 0)),
        packets_in=int(t.get("packets-in", 0)),
        packets_out=int(t.get("packets-out", 0)),
        local_ts=list(t.get("local-ts", [])),
        remote_ts=list(t.get("remote-ts", [])),
        uniqueid=t.get("uniqueid", ""),
        raw=t,
    )


def parse_list_sas(text: str) -> list[IkeSa]:
    """IKE SAs (with their Child SAs) from ``swanctl --list-sas --pretty``."""
    sas = []
    for block_name, block in parse_vici_pretty(text):
        if block_name != "list-sa event":
            continue
        for name, t in block.items():
            if not isinstance(t, dict):
                continue
            kids = t.get("child-sas", {})
            sas.append(
                IkeSa(
                    name=name,
                    state=t.get("state", ""),
                    uniqueid=t.get("uniqueid", ""),
                    initiator=t.get("initiator") == "yes",
                    spi_i=t.get("initiator-spi", ""),
                    spi_r=t.get("responder-spi", ""),
                    local_host=t.get("local-host", ""),
                    local_port=int(t.get("local-port", 0)),
                    remote_host=t.get("remote-host", ""),
                    remote_port=int(t.get("remote-port", 0)),
                    local_id=t.get("local-id", ""),
                    remote_id=t.get("remote-id", ""),
                    children=[_child(k, v) for k, v in kids.items() if isinstance(v, dict)],
                    raw=t,
                )
            )
    return sas
