"""The gatewayd configuration: a TOML file turned into an immutable, validated Config.

Every problem is reported as ``(key_path, message)`` with key paths such as
``gateway.address`` or ``site[1].networks[0]`` (indexes from 0), so that ``gatewayd check``
can list them all at once. Field types and ranges are checked by pydantic, one table at a
time; rules that span fields or tables are plain functions below. Secrets (psk) never
appear in a message, a repr or a fingerprint.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

DEFAULT_CONTROL_SOCKET = "/run/gatewayd/gatewayd.sock"
ANY_ADDRESS: Literal["%any"] = "%any"
RADIUS_MAX_WAIT = 20.0  # seconds a RADIUS request may go unanswered before we give up
MIN_PSK_LEN = 8  # below this a PSK is guessable offline from one captured IKE_AUTH
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ is 16 with the NUL
_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
# Keyed per process: reload compares fingerprints within one daemon, and a plain hash of
# a weak PSK could be brute-forced offline from a fingerprint shown in status or logs.
_FINGERPRINT_KEY = secrets.token_bytes(32)


# ----------------------------------------------------------------------------- errors


class Problem(NamedTuple):
    """One thing wrong with a config: where (``site[0].psk``, "" for the file) and what."""

    key: str
    message: str


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[tuple[str, str]], source: str | None = None) -> None:
        self.problems = [Problem(*p) for p in problems]
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, as ``gatewayd check`` prints them."""
        out = []
        for key, message in self.problems:
            if key:
                out.append(f"{key}: {message}")
            else:
                out.append(f"{self.source}: {message}" if self.source else message)
        return out


# -------------------------------------------------------------------------- identities

IdKind = Literal["ipv4", "ipv6", "fqdn", "rfc822", "dn"]


@dataclass(frozen=True, slots=True)
class Identity:
    """An IKE identity (RFC 7296 §3.5) as written in the config, already validated."""

    kind: IdKind
    value: str

    def __str__(self) -> str:
        return self.value

    def ike_id(self) -> tuple[int, bytes]:
        """(ID Type, identification data) for an IDi/IDr payload."""
        from ike.constants import IdType  # gatewayd -> ike is the allowed direction

        if self.kind == "ipv4" or self.kind == "ipv6":
            addr = ipaddress.ip_address(self.value)
            kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
            return int(kind), addr.packed
        if self.kind == "dn":
            # The written order is the DER order, as in strongSwan and in certificates'
            # usual display ("C=CH, O=Example, CN=hub"); the engine's parser keeps it.
            from ike.auth.identity import Identity as EngineIdentity

            return int(IdType.DER_ASN1_DN), EngineIdentity.parse(self.value).data
        kind = IdType.FQDN if self.kind == "fqdn" else IdType.RFC822_ADDR
        return int(kind), self.value.encode()


def _is_hostname(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return (
        0 < len(text) <= 253
        and all(_LABEL_RE.fullmatch(label) for label in labels)
        and not all(label.isdigit() for label in labels)  # "10.1.1" is a broken IP
    )


def parse_identity(text: str) -> Identity:
    """IP address, FQDN (``@name`` forces FQDN as in strongSwan), user@fqdn, or a DN."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return Identity("ipv4" if addr.version == 4 else "ipv6", str(addr))
    if "=" in text:
        # The engine's parser, which ike_id() encodes with: it also takes the form
        # strongSwan and openssl print, "O=Example, CN=hub" (RFC 4514's parser does not).
        from ike.auth.identity import Identity as EngineIdentity

        try:
            EngineIdentity.parse(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a distinguished name (expected e.g. 'CN=hub,O=Example')"
            ) from None
        return Identity("dn", text.strip())
    if text.startswith("@") and _is_hostname(text[1:]):
        return Identity("fqdn", text[1:])
    if "@" in text:
        local, _, domain = text.rpartition("@")
        if local and not any(c.isspace() for c in local) and _is_hostname(domain):
            return Identity("rfc822", text)
        raise ValueError(f"{text!r} is not a valid user@fqdn identity")
    if _is_hostname(text):
        return Identity("fqdn", text)
    raise ValueError(
        f"{text!r} is not an identity: use an IP address, a host name, user@host "
        "or a distinguished name like 'CN=hub,O=Example'"
    )


# ------------------------------------------------------------------- field validators


def _need_str(value: object, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string like {example!r}")
    return value


def _name(value: object) -> str:
    text = _need_str(value, "branch1")
    if not _NAME_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid name: use 1 to 64 of A-Z a-z 0-9 _ . -")
    return text


def _host_address(value: object) -> IPAddress:
    text = _need_str(value, "192.0.2.1")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"{text!r} is not a unicast address")
    return addr


def _peer_address(value: object) -> IPAddress | Literal["%any"]:
    if value == ANY_ADDRESS:
        return ANY_ADDRESS
    try:
        return _host_address(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (nor '%any'; host names are not supported)") from None


def _identity(value: object) -> Identity:
    return parse_identity(_need_str(value, "hub.example.net"))


def _prefix(value: object) -> IPNetwork:
    text = _need_str(value, "10.1.0.0/16")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP prefix") from None
    raise ValueError(f"{text!r} has host bits set (did you mean '{loose}'?)")


def _ifname(value: object) -> str:
    text = _need_str(value, "vpngw0")
    if not _IFNAME_RE.fullmatch(text) or text in {".", ".."}:
        raise ValueError(f"{text!r} is not a valid interface name: 1 to 15 of A-Z a-z 0-9 _ . -")
    return text


def _socket_path(value: object) -> str:
    text = _need_str(value, DEFAULT_CONTROL_SOCKET)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path")
    if len(text.encode()) > _SUN_PATH_MAX:
        raise ValueError(f"is longer than {_SUN_PATH_MAX} bytes, the limit of a Unix socket path")
    return text


def _file_path(value: object, info: ValidationInfo) -> str:
    """A path; relative ones are taken from the config file's directory."""
    text = _need_str(value, "/etc/gatewayd/hub.crt")
    if not text or "\0" in text:
        raise ValueError("is not a file path")
    base = (info.context or {}).get("base_dir")
    path = Path(text)
    return str(base / path) if base is not None and not path.is_absolute() else text


def _proposal(protocol: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _need_str(value, "aes256gcm16-prfsha384-ecp384")
        # Imported here: the proposals module belongs to the IKE engine and loads its
        # algorithm tables; config users that never validate proposals skip that cost.
        from ike.constants import ProtocolId
        from ike.crypto import proposals
        from ike.errors import ProposalError

        try:
            proposals.parse_proposal(text, ProtocolId[protocol])
        except ProposalError as exc:
            message = str(exc)  # name the proposal once, whether or not the engine did
            raise ValueError(message if repr(text) in message else f"{text!r}: {message}") from None
        return text

    return check


def _default_proposals(protocol: str) -> Callable[[], tuple[str, ...]]:
    def default() -> tuple[str, ...]:
        from ike.crypto import proposals

        values = (
            proposals.DEFAULT_IKE_PROPOSALS
            if protocol == "IKE"
            else (proposals.DEFAULT_ESP_PROPOSALS)
        )
        return tuple(str(v) for v in values)

    return default


def _split_server(text: str) -> tuple[str, int]:
    """Split "host:port", "[v6]:port" or a bare host or IPv6 address (port 1812)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not host:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r} has no host")
    port = 1812
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r} has no valid port")
        port = int(port_text)
    return host, port


def _radius_server(value: object) -> str:
    text = _need_str(value, "10.1.0.5:1812")
    host, _ = _split_server(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_hostname(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return text


_as_str = PlainSerializer(lambda v: None if v is None else str(v))
Name = Annotated[str, PlainValidator(_name)]
HostAddress = Annotated[IPAddress, PlainValidator(_host_address), _as_str]
PeerAddress = Annotated[IPAddress | Literal["%any"], PlainValidator(_peer_address), _as_str]
OptIdentity = Annotated[Identity | None, PlainValidator(_identity), _as_str]
Prefix = Annotated[IPNetwork, PlainValidator(_prefix), _as_str]
Prefixes = Annotated[tuple[Prefix, ...], Field(min_length=1)]
FilePath = Annotated[str, PlainValidator(_file_path)]
OptFilePath = Annotated[str | None, PlainValidator(_file_path)]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
ReplayWindow = Annotated[int, Strict(), Field(ge=32, le=65536)]
FragmentSize = Annotated[int, Strict(), Field(ge=576, le=9000)]
IkeProposals = Annotated[
    tuple[Annotated[str, PlainValidator(_proposal("IKE"))], ...], Field(min_length=1)
]
EspProposals = Annotated[
    tuple[Annotated[str, PlainValidator(_proposal("ESP"))], ...], Field(min_length=1)
]

_MODEL = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ tables


class Gateway(BaseModel):
    """``[gateway]``: this gateway, its address space and its local credentials."""

    model_config = _MODEL

    name: Name
    address: HostAddress
    id: OptIdentity = None
    networks: Prefixes
    interface: Annotated[str, PlainValidator(_ifname)] = "vpngw0"
    mtu: Annotated[int, Strict(), Field(ge=576, le=9000)] = 1400
    control_socket: Annotated[str, PlainValidator(_socket_path)] = DEFAULT_CONTROL_SOCKET
    ike_port: Port = 500
    nat_t_port: Port = 4500
    certificate: OptFilePath = None
    private_key: OptFilePath = None
    ca: tuple[FilePath, ...] = ()
    # Extras: gateway-wide defaults that a [[site]] may override.
    replay_window: ReplayWindow = 1024
    fragment_size: FragmentSize = 1280

    @property
    def identity(self) -> Identity:
        """The local IKE identity: ``id``, or else ``address``."""
        return self.id if self.id is not None else parse_identity(str(self.address))


class Site(BaseModel):
    """``[[site]]``: one peer gateway and the one connection to it.

    After loading, ``dpd_interval``, ``replay_window`` and ``fragment_size`` are never
    None: the loader fills them from ``dpd_timeout`` and ``[gateway]``.
    """

    model_config = _MODEL

    name: Name
    address: PeerAddress
    id: OptIdentity = None
    networks: Prefixes
    auth: Literal["psk", "pubkey"] = "psk"
    psk: Annotated[SecretStr, Strict()] | None = None
    psk_file: OptFilePath = None
    mode: Literal["default", "initiator_only", "responder_only"] = "default"
    policy_based_traffic_selectors: Annotated[bool, Strict()] = False
    ike_proposals: IkeProposals = Field(default_factory=_default_proposals("IKE"))
    esp_proposals: EspProposals = Field(default_factory=_default_proposals("ESP"))
    dpd_timeout: Annotated[int, Strict(), Field(ge=5)] = 45
    ike_lifetime: Annotated[int, Strict(), Field(ge=120)] = 28800
    child_lifetime: Annotated[int, Strict(), Field(ge=60)] = 27000
    child_lifetime_kb: Annotated[int, Strict(), Field(ge=1)] = 102400000
    # Extras.
    dpd_interval: Annotated[int, Strict(), Field(ge=1)] | None = None
    replay_window: ReplayWindow | None = None
    fragment_size: FragmentSize | None = None
    # "auto": ESP in UDP with a gatewayd peer (Vendor ID) or through a NAT, else plain
    # ESP; "udp": always ESP in UDP; "esp": plain ESP unless a NAT is detected.
    encapsulation: Literal["auto", "udp", "esp"] = "auto"

    @property
    def any_address(self) -> bool:
        """True for ``address = "%any"``: the peer may come from anywhere (responder only)."""
        return self.address == ANY_ADDRESS

    @property
    def identity(self) -> Identity:
        """The identity the peer must prove: ``id``, or else ``address``."""
        if self.id is not None:
            return self.id
        return parse_identity(str(self.address))  # never %any: the loader requires an id


class RadiusServer(BaseModel):
    """``[p2s].radius``: the RADIUS server EAP is passed through to (RFC 3579)."""

    model_config = _MODEL

    server: Annotated[str, PlainValidator(_radius_server)]
    secret_file: FilePath
    timeout: Annotated[float, Field(gt=0, le=60)] = 3.0  # seconds per try
    retries: Annotated[int, Strict(), Field(ge=0, le=10)] = 3
    nas_identifier: str | None = None

    @property
    def host(self) -> str:
        return _split_server(self.server)[0]

    @property
    def port(self) -> int:
        return _split_server(self.server)[1]


class Issuer(BaseModel):
    """``[p2s].issuer``: a CA that ``gatewayctl p2s issue`` signs client certificates with."""

    model_config = _MODEL

    certificate: FilePath
    key: FilePath


P2sAuth = Literal["certificate", "eap-mschapv2", "eap-radius"]


class P2s(BaseModel):
    """``[p2s]``: remote-access clients (point-to-site), their addresses and how they log in."""

    model_config = _MODEL

    address_pool: Prefixes
    dns: tuple[HostAddress, ...] = ()
    routes: tuple[Prefix, ...] | None = None
    auth: Annotated[tuple[P2sAuth, ...], Field(min_length=1)] = ("certificate",)
    client_ca: tuple[FilePath, ...] = ()
    revoked: OptFilePath = None
    users_file: OptFilePath = None
    radius: RadiusServer | None = None
    max_clients: Annotated[int, Strict(), Field(ge=1, le=100000)] = 1000
    server: str | None = None  # the name or address clients dial; default gateway.address
    issuer: Issuer | None = None
    lease_hold: Annotated[int, Strict(), Field(ge=0)] = 3600
    ike_proposals: IkeProposals = Field(default_factory=_default_proposals("IKE"))
    esp_proposals: EspProposals = Field(default_factory=_default_proposals("ESP"))
    dpd_timeout: Annotated[int, Strict(), Field(ge=5)] = 45


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class Config:
    """A validated configuration. ``sites`` keeps the file's order."""

    gateway: Gateway
    sites: tuple[Site, ...]
    source: str | None = None
    _psk_files: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    p2s: P2s | None = None

    def p2s_routes(self) -> tuple[IPNetwork, ...]:
        """The networks pushed to remote clients: [p2s].routes, or by default the gateway's
        networks and every site's (in config order, without repeats)."""
        if self.p2s is None:
            return ()
        if self.p2s.routes is not None:
            return self.p2s.routes
        nets = [*self.gateway.networks, *(n for s in self.sites for n in s.networks)]
        return tuple(dict.fromkeys(nets))

    def site(self, name: str) -> Site:
        """The site called ``name``; KeyError if there is none."""
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)

    def psk(self, site: Site | str) -> bytes:
        """The site's pre-shared key as bytes (``psk`` as UTF-8, or ``psk_file``'s content).

        A psk_file read at load time is served from memory; otherwise it is read now and
        a problem raises ConfigError.
        """
        site = self.site(site) if isinstance(site, str) else site
        if site.psk is not None:
            return site.psk.get_secret_value().encode()
        if site.psk_file is None:
            raise ConfigError([(f"{self._key(site)}.psk", "no psk configured")], self.source)
        cached = self._psk_files.get(site.name)
        if cached is not None:
            return cached
        key, problem = _read_psk_file(site.psk_file)
        if problem:
            raise ConfigError([(f"{self._key(site)}.psk_file", problem)], self.source)
        return key

    def site_fingerprint(self, site: Site | str) -> str:
        """A hash of every setting the site's SAs are built from (hex).

        Equal fingerprints mean ``reload`` can keep the site's tunnels. Stable within one
        process only (the PSK enters through a per-process key); do not store it.
        """
        site = self.site(site) if isinstance(site, str) else site
        gw = self.gateway
        data: dict[str, Any] = {
            "site": site.model_dump(mode="json", exclude={"name", "id", "psk", "psk_file"}),
            "remote_id": str(site.identity),  # an id equal to the default is no change
            "gateway": gw.model_dump(
                mode="json", include={"address", "networks", "ike_port", "nat_t_port"}
            ),
            "local_id": str(gw.identity),
        }
        if site.auth == "psk":
            data["psk"] = hmac.new(_FINGERPRINT_KEY, self.psk(site), hashlib.sha256).hexdigest()
        else:
            data["credentials"] = [gw.certificate, gw.private_key, list(gw.ca)]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def _key(self, site: Site) -> str:
        return f"site[{self.sites.index(site)}]"


# ------------------------------------------------------------------------------ loading

# Top-level tables: name -> (is an array of tables, model). Adding [p2s] is one entry here
# plus its model and cross-checks.
_TABLES: dict[str, tuple[bool, type[BaseModel]]] = {
    "gateway": (False, Gateway),
    "site": (True, Site),
    "p2s": (False, P2s),
}
_OPTIONAL = {"p2s"}  # tables that may be absent
_NOT_YET: dict[str, str] = {}


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate a config file.

    With ``check_files`` (what ``gatewayd check`` and ``run`` do) psk_file, certificate,
    private_key and ca are read and verified too. Raises ConfigError with every problem.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes().decode()
    except OSError as exc:
        raise ConfigError([("", f"cannot read the file: {exc.strerror}")], source) from None
    except UnicodeDecodeError:
        raise ConfigError([("", "is not UTF-8 text")], source) from None
    return parse_config(
        text, source=source, base_dir=Path(path).parent.resolve(), check_files=check_files
    )


def parse_config(
    text: str,
    *,
    source: str | None = None,
    base_dir: Path | None = None,
    check_files: bool = False,
) -> Config:
    """Validate a config given as TOML text (relative paths resolve against base_dir)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages name the line and column and never quote the input.
        raise ConfigError([("", f"TOML syntax error: {exc}")], source) from None
    except RecursionError:  # tomllib recurses per nesting level of arrays and tables
        raise ConfigError([("", "TOML nested too deeply")], source) from None
    problems: list[Problem] = []
    tables = _validate_tables(raw, {"base_dir": base_dir}, problems)
    gateway = tables.get("gateway")
    sites: list[tuple[int, Site]] = tables.get("site", [])
    # Cross-checks run on whatever validated, so one bad table hides nothing else.
    gw = gateway if isinstance(gateway, Gateway) else None
    for index, site in sites:
        problems += _check_site(index, site, gw)
    if gw is not None:
        problems += _check_gateway(gw) + _check_mtu(gw, [s for _, s in sites])
    problems += _check_sites(sites)
    p2s = tables.get("p2s")
    if isinstance(p2s, P2s):
        problems += _check_p2s(p2s, gw, [s for _, s in sites])
    if problems or not isinstance(gateway, Gateway):
        raise ConfigError(_sorted(problems), source)
    resolved = tuple(_resolve(s, gateway) for _, s in sites)
    config = Config(gateway, resolved, source, p2s=p2s)
    if check_files:
        psk_files: dict[str, bytes] = {}
        problems = _check_files(config, psk_files)
        if problems:
            raise ConfigError(problems, source)
        object.__setattr__(config, "_psk_files", psk_files)
    return config


def _validate_tables(
    raw: dict[str, Any], context: dict[str, Any], problems: list[Problem]
) -> dict[str, Any]:
    """Validate each top-level table on its own so that one bad site hides nothing."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NOT_YET:
            problems.append(Problem(key, _NOT_YET[key]))
        elif key not in _TABLES:
            what = "table" if isinstance(value, dict | list) else "key"
            problems.append(Problem(key, _unknown(key, _TABLES, what)))
    for key, (is_array, model) in _TABLES.items():
        if key not in raw:
            if not is_array and key not in _OPTIONAL:
                problems.append(Problem(key, "required table is missing"))
            continue
        value = raw[key]
        if not is_array:
            if not isinstance(value, dict):
                problems.append(Problem(key, f"must be a table ([{key}])"))
                continue
            out[key] = _validate(model, value, key, context, problems)
            continue
        if not isinstance(value, list):
            problems.append(Problem(key, f"must be an array of tables: write [[{key}]]"))
            continue
        items = [
            (i, _validate(model, v, f"{key}[{i}]", context, problems)) for i, v in enumerate(value)
        ]
        out[key] = [(i, m) for i, m in items if m is not None]
    return out


def _validate(
    model: type[BaseModel],
    value: object,
    key: str,
    context: dict[str, Any],
    problems: list[Problem],
) -> Any:
    try:
        return model.model_validate(value, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            loc = err["loc"]
            # A list whose items all failed is also "too short": say only what is wrong.
            if err["type"] == "too_short" and any(
                e["loc"][: len(loc)] == loc and len(e["loc"]) > len(loc) for e in errors
            ):
                continue
            problems.append(Problem(_key_path(key, loc), _message(err, model)))
        return None


def _key_path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else f"{out}.{part}"
    return out


def _unknown(key: str, known: Iterable[str], what: str = "key") -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"unknown {what}" + (f" (did you mean '{close[0]}'?)" if close else "")


def _message(err: Any, model: type[BaseModel]) -> str:
    """An operator's wording of a pydantic error. Never includes the input (psk!)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown(str(err["loc"][-1]), model.model_fields)
    if kind == "model_type":
        return "must be a table"
    if kind in {"tuple_type", "list_type"}:
        return "must be a list"
    if kind == "too_short":
        return "must not be empty"
    got = err.get("input")
    shown = f" (got {got!r})" if isinstance(got, int | str) and not isinstance(got, bool) else ""
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}{shown}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}{shown}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}{shown}"
    return str(err["msg"]).replace("Input should be", "must be")


def _sorted(problems: list[Problem]) -> list[Problem]:
    """Group by table and site (stable: within one site, discovery order)."""
    order = {"": -1, **{k: i for i, k in enumerate(_TABLES)}}

    def rank(p: Problem) -> tuple[int, int]:
        m = re.match(r"([^.\[]*)(?:\[(\d+)\])?", p.key)
        head, index = (m.group(1), m.group(2)) if m else ("", None)
        return order.get(head, len(order)), int(index) if index else -1

    return sorted(problems, key=rank)


def _resolve(site: Site, gw: Gateway) -> Site:
    """Fill the site's inherited settings so that consumers never see None."""
    return site.model_copy(
        update={
            "dpd_interval": site.dpd_interval or max(1, site.dpd_timeout // 3),
            "replay_window": site.replay_window or gw.replay_window,
            "fragment_size": site.fragment_size or gw.fragment_size,
        }
    )


# -------------------------------------------------------------------------- cross checks


def _duplicates(nets: Sequence[IPNetwork], key: str) -> list[Problem]:
    seen: dict[IPNetwork, int] = {}
    out = []
    for j, net in enumerate(nets):
        if net in seen:
            out.append(Problem(f"{key}[{j}]", f"'{net}' is listed twice (also {key}[{seen[net]}])"))
        seen.setdefault(net, j)
    return out


def _check_gateway(gw: Gateway) -> list[Problem]:
    out = _duplicates(gw.networks, "gateway.networks")
    if gw.certificate and not gw.private_key:
        out.append(Problem("gateway.private_key", "required when gateway.certificate is set"))
    if gw.private_key and not gw.certificate:
        out.append(Problem("gateway.certificate", "required when gateway.private_key is set"))
    if gw.ike_port == gw.nat_t_port:
        out.append(Problem("gateway.nat_t_port", f"must differ from ike_port ({gw.ike_port})"))
    return out


def _check_site(i: int, site: Site, gw: Gateway | None) -> list[Problem]:
    """Rules within one site, and against [gateway] when that validated (gw not None)."""
    key = f"site[{i}]"
    out = _duplicates(site.networks, f"{key}.networks")
    if site.any_address and site.mode != "responder_only":
        msg = "'%any' accepts the peer from any address, so gatewayd cannot initiate to it"
        out.append(Problem(f"{key}.address", f'{msg}: set mode = "responder_only"'))
    if site.any_address and site.id is None:
        msg = "required when address = '%any': the identity is how the peer is recognised"
        out.append(Problem(f"{key}.id", msg))
    out += _check_auth(key, site, gw)
    if site.dpd_interval is not None and site.dpd_interval >= site.dpd_timeout:
        msg = f"must be less than dpd_timeout ({site.dpd_timeout})"
        out.append(Problem(f"{key}.dpd_interval", msg))
    if gw is None:
        return out
    peer, own = site.address, gw.address
    if peer == own:
        out.append(Problem(f"{key}.address", f"'{peer}' is the gateway's own address"))
    elif not isinstance(peer, str) and peer.version != own.version:
        msg = f"'{peer}' is IPv{peer.version} but gateway.address is IPv{own.version}"
        out.append(Problem(f"{key}.address", msg))
    for j, net in enumerate(site.networks):
        for g, local in enumerate(gw.networks):
            if net.version == local.version and net.overlaps(local):
                msg = f"'{net}' overlaps the gateway's own network '{local}'"
                out.append(Problem(f"{key}.networks[{j}]", f"{msg} (gateway.networks[{g}])"))
    return out


def _check_auth(key: str, site: Site, gw: Gateway | None) -> list[Problem]:
    if site.auth == "pubkey":
        out = []
        for name in ("psk", "psk_file"):
            if getattr(site, name) is not None:
                out.append(Problem(f"{key}.{name}", 'is not used with auth = "pubkey": remove it'))
        creds = ("certificate", "private_key", "ca")
        missing = [f"gateway.{k}" for k in creds if gw is not None and not getattr(gw, k)]
        if missing:
            out.append(Problem(f"{key}.auth", f'auth = "pubkey" needs {", ".join(missing)}'))
        return out
    if site.psk is not None and site.psk_file is not None:
        return [Problem(f"{key}.psk", "set either psk or psk_file, not both")]
    if site.psk is None and site.psk_file is None:
        return [Problem(f"{key}.psk", 'required when auth = "psk" (or set psk_file)')]
    if site.psk is not None and len(site.psk.get_secret_value()) < MIN_PSK_LEN:
        return [Problem(f"{key}.psk", f"too short: use at least {MIN_PSK_LEN} characters")]
    return []


def _check_mtu(gw: Gateway, sites: Sequence[Site]) -> list[Problem]:
    nets = [*gw.networks, *(n for s in sites for n in s.networks)]
    if gw.mtu < 1280 and any(n.version == 6 for n in nets):
        msg = f"must be at least 1280 when a network is IPv6 (got {gw.mtu})"
        return [Problem("gateway.mtu", msg)]
    return []


def _check_sites(sites: Sequence[tuple[int, Site]]) -> list[Problem]:
    """Rules across sites: unique names, one site per prefix, recognisable peers."""
    out = []
    names: dict[str, int] = {}
    routes: dict[IPNetwork, tuple[int, int]] = {}
    ids: dict[Identity, tuple[int, bool]] = {}
    for i, site in sites:
        if site.name in names:
            msg = f"'{site.name}' is already the name of site[{names[site.name]}]"
            out.append(Problem(f"site[{i}].name", msg))
        names.setdefault(site.name, i)
        for j, net in enumerate(site.networks):
            other, k = routes.setdefault(net, (i, j))
            if other != i:
                msg = f"'{net}' is already routed to site[{other}] (site[{other}].networks[{k}])"
                out.append(Problem(f"site[{i}].networks[{j}]", msg))
        if site.id is None and site.any_address:
            continue  # reported by _check_site
        ident = site.identity
        first, first_any = ids.setdefault(ident, (i, site.any_address))
        if first != i and (site.any_address or first_any):
            msg = f"'{ident}' is also the id of site[{first}]: with address '%any'"
            out.append(Problem(f"site[{i}].id", f"{msg} a responder could not tell them apart"))
    return out


# ------------------------------------------------------------------------------- files


class _FileProblem(Exception):
    """A file that cannot be used; the message is ready for the operator."""


def _read(path: str, limit: int = 1 << 20) -> bytes:
    """The file's bytes; a limit so that a path like /dev/zero cannot hang the check."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise _FileProblem(f"cannot read '{path}': {exc.strerror}") from None
    if len(data) > limit:
        raise _FileProblem(f"'{path}' is larger than {limit} bytes")
    return data


def _read_psk_file(path: str) -> tuple[bytes, str]:
    """(key, "") or (b"", problem). One trailing newline is not part of the key."""
    try:
        data = _read(path, limit=4096)
    except _FileProblem as exc:
        return b"", str(exc)
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(data) < MIN_PSK_LEN:
        return b"", f"the key in '{path}' is too short: use at least {MIN_PSK_LEN} bytes"
    return data, ""


def _check_files(config: Config, psk_files: dict[str, bytes]) -> list[Problem]:
    out: list[Problem] = []
    for i, site in enumerate(config.sites):
        if site.auth == "psk" and site.psk_file is not None:
            key, problem = _read_psk_file(site.psk_file)
            if problem:
                out.append(Problem(f"site[{i}].psk_file", problem))
            else:
                psk_files[site.name] = key
    out += _check_credentials(config.gateway)
    if config.p2s is not None:
        out += _check_p2s_files(config.p2s)
    return out


def _load_certificates(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise _FileProblem(f"'{path}' is not a PEM certificate") from None


def _load_certificate(path: str) -> x509.Certificate:
    """The first certificate of the file (ours; any others are its chain), valid now."""
    cert = _load_certificates(path)[0]
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not start <= datetime.now(UTC) <= end:
        raise _FileProblem(f"'{path}' is valid only from {start:%Y-%m-%d} to {end:%Y-%m-%d}")
    return cert


def _load_private_key(path: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except TypeError:
        raise _FileProblem(f"'{path}' is encrypted: gatewayd needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _FileProblem(f"'{path}' is not a PEM key") from None
    if not isinstance(key, PrivateKey):
        raise _FileProblem(f"'{path}' must hold an RSA, ECDSA or Ed25519 key")
    return key


def _spki(key: PrivateKey | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate_names(cert: x509.Certificate, identity: Identity) -> bool:
    from ike.auth.certs import certificate_matches_identity

    return certificate_matches_identity(cert, _engine_identity(identity))


def _engine_identity(identity: Identity) -> Any:
    from ike.auth.identity import Identity as EngineIdentity

    return EngineIdentity(*identity.ike_id())


def _check_credentials(gw: Gateway) -> list[Problem]:
    out: list[Problem] = []

    def attempt(key: str, load: Callable[[str], Any], path: str) -> Any:
        try:
            return load(path)
        except _FileProblem as exc:
            out.append(Problem(key, str(exc)))
            return None

    cert = (
        attempt("gateway.certificate", _load_certificate, gw.certificate)
        if gw.certificate
        else None
    )
    key = (
        attempt("gateway.private_key", _load_private_key, gw.private_key)
        if gw.private_key
        else None
    )
    if cert is not None and key is not None and _spki(key) != _spki(cert):
        out.append(Problem("gateway.private_key", "does not match gateway.certificate"))
    if cert is not None and not _certificate_names(cert, gw.identity):
        # Peers check our identity against the certificate; fail here, not at their end.
        out.append(
            Problem(
                "gateway.id",
                f"'{gw.identity}' is neither the subject nor a subjectAltName of "
                "gateway.certificate",
            )
        )
    for i, path in enumerate(gw.ca):
        attempt(f"gateway.ca[{i}]", _load_certificates, path)
    return out


# --------------------------------------------------------------------------------- p2s


def _check_p2s(p2s: P2s, gw: Gateway | None, sites: Sequence[Site]) -> list[Problem]:
    """[p2s] rules: credentials for each auth method, pools apart from every network."""
    out: list[Problem] = []
    if gw is not None and not gw.certificate:
        msg = "required with [p2s]: clients authenticate the gateway by its certificate"
        out.append(Problem("gateway.certificate", msg))
    needs = {
        "certificate": ("client_ca", "the roots client certificates must chain to"),
        "eap-mschapv2": ("users_file", "the EAP-MSCHAPv2 users and their NT hashes"),
        "eap-radius": ("radius", "the RADIUS server"),
    }
    for method in dict.fromkeys(p2s.auth):
        name, what = needs[method]
        if not getattr(p2s, name):
            out.append(Problem(f"p2s.{name}", f'required when auth includes "{method}": {what}'))
    seen: dict[str, int] = {}
    for j, method in enumerate(p2s.auth):
        if method in seen:
            out.append(Problem(f"p2s.auth[{j}]", f"'{method}' is listed twice"))
        seen.setdefault(method, j)
    if p2s.radius is not None:
        wait = p2s.radius.timeout * (p2s.radius.retries + 1)
        if wait > RADIUS_MAX_WAIT:
            msg = (
                f"timeout x (retries + 1) is {wait:g} s: at most {RADIUS_MAX_WAIT:g} s, so that a "
                "silent server is reported before IKE_AUTH's 30 s deadline ends the client"
            )
            out.append(Problem("p2s.radius.timeout", msg))
    out += _duplicates(p2s.address_pool, "p2s.address_pool")
    v6_pool = any(n.version == 6 for n in p2s.address_pool)
    # Said once: _check_mtu reports it already when a gateway or site network is IPv6.
    if gw is not None and gw.mtu < 1280 and v6_pool and not _check_mtu(gw, sites):
        msg = f"must be at least 1280 when an address pool is IPv6 (got {gw.mtu})"
        out.append(Problem("gateway.mtu", msg))
    others: list[tuple[IPNetwork, str]] = []
    if gw is not None:
        others += [(n, f"gateway.networks[{g}]") for g, n in enumerate(gw.networks)]
    for i, site in enumerate(sites):
        others += [(n, f"site[{i}].networks[{k}]") for k, n in enumerate(site.networks)]
    for j, pool in enumerate(p2s.address_pool):
        for k, other in enumerate(p2s.address_pool[:j]):
            if pool.version == other.version and pool.overlaps(other) and pool != other:
                msg = f"'{pool}' overlaps '{other}' (p2s.address_pool[{k}])"
                out.append(Problem(f"p2s.address_pool[{j}]", msg))
        for net, where in others:
            if pool.version == net.version and pool.overlaps(net):
                msg = f"'{pool}' overlaps '{net}' ({where}): clients' addresses must be their own"
                out.append(Problem(f"p2s.address_pool[{j}]", msg))
                break
    return out


def _check_p2s_files(p2s: P2s) -> list[Problem]:
    """The files [p2s] names: readable, and in the format their readers expect."""
    out: list[Problem] = []

    def attempt(key: str, load: Callable[[str], Any], path: str) -> None:
        try:
            load(path)
        except _FileProblem as exc:
            out.append(Problem(key, str(exc)))

    for i, path in enumerate(p2s.client_ca):
        attempt(f"p2s.client_ca[{i}]", _load_certificates, path)
    if p2s.users_file is not None:
        attempt("p2s.users_file", _load_users_file, p2s.users_file)
    if p2s.revoked is not None:
        attempt("p2s.revoked", _load_revoked_file, p2s.revoked)
    if p2s.radius is not None:
        attempt("p2s.radius.secret_file", _read_radius_secret, p2s.radius.secret_file)
    if p2s.issuer is not None:
        attempt("p2s.issuer.certificate", _load_certificate, p2s.issuer.certificate)
        attempt("p2s.issuer.key", _load_private_key, p2s.issuer.key)
    return out


def _read_radius_secret(path: str) -> bytes:
    secret = _read(path, limit=4096).strip()
    if not secret:
        raise _FileProblem(f"'{path}' is empty: it must hold the RADIUS shared secret")
    return secret


def _load_users_file(path: str) -> Any:
    _read(path)  # readable and not huge, whatever the parser says below
    try:
        from gatewayd.p2s.users import UsersFileError, load_users
    except ImportError:  # pragma: no cover - the users module ships with gatewayd
        return None
    try:
        return load_users(path)
    except UsersFileError as exc:
        raise _FileProblem(str(exc)) from None


def _load_revoked_file(path: str) -> Any:
    _read(path)
    try:
        from gatewayd.p2s.revocation import RevocationError, load_revocation_list
    except ImportError:  # pragma: no cover - the revocation module ships with gatewayd
        return None
    try:
        return load_revocation_list(path)
    except RevocationError as exc:
        raise _FileProblem(str(exc)) from None
