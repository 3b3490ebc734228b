"""A small Python description of swanctl.conf connections and secrets, rendered to text.

Only what the lab needs is modelled; anything else goes through the ``extra`` dicts,
which are written verbatim as ``key = value`` lines in the matching section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Value = str | int | bool | Sequence[str]


def _fmt(value: Value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    return ",".join(_quote(v) for v in value)


def _quote(s: str) -> str:
    # Quote only when the parser would otherwise split or misread the value.
    if s == "" or any(c in s for c in ' \t,{}#"=\\'):
        escaped = s.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return s


def _section(name: str, items: Mapping[str, Value | None], subs: Iterable[str], ind: int) -> str:
    pad = "  " * ind
    lines = [f"{pad}{name} {{"]
    lines += [f"{pad}  {k} = {_fmt(v)}" for k, v in items.items() if v is not None]
    lines += [s for s in subs if s]
    lines.append(f"{pad}}}")
    return "\n".join(lines)


@dataclass
class Auth:
    """One ``local``/``remote`` round: ``psk`` or ``pubkey``."""

    auth: str = "psk"
    id: str | None = None
    certs: list[str] = field(default_factory=list)  # file names in x509/ or absolute paths
    cacerts: list[str] = field(default_factory=list)
    extra: dict[str, Value] = field(default_factory=dict)

    def render(self, name: str, ind: int) -> str:
        items: dict[str, Value | None] = {"auth": self.auth, "id": self.id}
        if self.certs:
            items["certs"] = self.certs
        if self.cacerts:
            items["cacerts"] = self.cacerts
        return _section(name, {**items, **self.extra}, (), ind)


@dataclass
class Child:
    name: str
    local_ts: list[str]
    remote_ts: list[str]
    esp_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16"])
    mode: str = "tunnel"
    start_action: str | None = None  # none | trap | start
    dpd_action: str | None = None  # clear | trap | restart
    close_action: str | None = None
    rekey_time: int | None = None  # seconds
    life_time: int | None = None
    rand_time: int | None = None
    rekey_bytes: int | None = None
    rekey_packets: int | None = None
    extra: dict[str, Value] = field(default_factory=dict)

    def render(self, ind: int) -> str:
        items: dict[str, Value | None] = {
            "local_ts": self.local_ts,
            "remote_ts": self.remote_ts,
            "esp_proposals": self.esp_proposals,
            "mode": self.mode,
            "start_action": self.start_action,
            "dpd_action": self.dpd_action,
            "close_action": self.close_action,
            "rekey_time": _secs(self.rekey_time),
            "life_time": _secs(self.life_time),
            "rand_time": _secs(self.rand_time),
            "rekey_bytes": self.rekey_bytes,
            "rekey_packets": self.rekey_packets,
        }
        return _section(self.name, {**items, **self.extra}, (), ind)


@dataclass
class Connection:
    name: str
    local_addrs: list[str]
    remote_addrs: list[str]
    local: Auth = field(default_factory=Auth)
    remote: Auth = field(default_factory=Auth)
    children: list[Child] = field(default_factory=list)
    proposals: list[str] = field(default_factory=lambda: ["aes256gcm16-prfsha256-ecp256"])
    version: int = 2
    rekey_time: int | None = None  # IKE SA rekey, seconds
    reauth_time: int | None = None
    over_time: int | None = None
    rand_time: int | None = None
    dpd_delay: int | None = None
    dpd_timeout: int | None = None  # IKEv1 only in strongSwan; kept for completeness
    keyingtries: int | None = None
    encap: bool | None = None  # force UDP encapsulation
    mobike: bool | None = False  # off: tests want addresses to stay put
    fragmentation: str | None = None
    unique: str | None = None
    local_port: int | None = None
    remote_port: int | None = None
    extra: dict[str, Value] = field(default_factory=dict)

    def render(self, ind: int = 1) -> str:
        items: dict[str, Value | None] = {
            "version": self.version,
            "local_addrs": self.local_addrs,
            "remote_addrs": self.remote_addrs,
            "local_port": self.local_port,
            "remote_port": self.remote_port,
            "proposals": self.proposals,
            "rekey_time": _secs(self.rekey_time),
            "reauth_time": _secs(self.reauth_time),
            "over_time": _secs(self.over_time),
            "rand_time": _secs(self.rand_time),
            "dpd_delay": _secs(self.dpd_delay),
            "dpd_timeout": _secs(self.dpd_timeout),
            "keyingtries": self.keyingtries,
            "encap": self.encap,
            "mobike": self.mobike,
            "fragmentation": self.fragmentation,
            "unique": self.unique,
        }
        children = _section("children", {}, [c.render(ind + 2) for c in self.children], ind + 1)
        subs = [self.local.render("local", ind + 1), self.remote.render("remote", ind + 1)]
        return _section(self.name, {**items, **self.extra}, [*subs, children], ind)


@dataclass
class Secret:
    """A ``secrets`` entry: ``ike`` (PSK) with its identities, or ``private`` key file."""

    kind: str  # "ike" | "private" | "ecdsa" | "rsa" | ...
    secret: str | None = None  # the PSK
    ids: list[str] = field(default_factory=list)
    file: str | None = None  # key file name (in private/) or absolute path

    def render(self, index: int, ind: int) -> str:
        items: dict[str, Value | None] = {f"id-{i}": v for i, v in enumerate(self.ids, 1)}
        items["secret"] = self.secret
        items["file"] = self.file
        return _section(f"{self.kind}-{index}", items, (), ind)


def render(connections: Sequence[Connection], secrets: Sequence[Secret] = ()) -> str:
    """The whole swanctl.conf text."""
    conns = _section("connections", {}, [c.render(1) for c in connections], 0)
    secs = _section("secrets", {}, [s.render(i, 1) for i, s in enumerate(secrets, 1)], 0)
    return f"# written by tests/lab; edit the Python description instead\n{conns}\n{secs}\n"


def _secs(v: int | None) -> str | None:
    return None if v is None else f"{v}s"
