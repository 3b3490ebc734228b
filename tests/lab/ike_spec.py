"""What the IKE socket driver runs: a JSON spec -> SessionConfig, and events -> JSON.

Spec keys (all strings unless noted)::

    role            "initiator" | "responder"
    local_addr      our IP (UDP 500 and 4500 are bound on it)
    remote_addr     the peer's IP (needed as initiator)
    local_id, remote_id          identities as ike.auth.identity.Identity.parse reads them
    psk             pre-shared key (UTF-8), or
    cert, key, cacerts (list)    PEM paths for certificate auth (the peer must use one too)
    ike_proposals, esp_proposals lists of strongSwan proposal strings
    local_ts, remote_ts          lists of CIDRs
    child           Child SA name (default "net")
    children        (list of objects) several Child SAs: each may set name, local_ts,
                    remote_ts, esp_proposals (the top-level ones are the defaults)
    ike_lifetime, child_lifetime, dpd_interval   seconds (numbers)
    cookie_threshold  (int) half-open SAs above which the Dispatcher demands a COOKIE
    inbound_delay   (seconds) the driver holds every received message this long: a test
                    knob that makes exchanges of both peers cross on the wire
    drop_in, drop_out  (lists of int) lose the n-th IKE message received / sent (1-based,
                    fragments count singly): a test knob that forces retransmissions
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ike.auth.certs import TrustStore, load_certificates, load_private_key
from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposals
from ike.payloads import TrafficSelector
from ike.session import ChildConfig, SessionConfig
from ike.session import events as ev
from ike.session.ts import describe, from_network


def load_spec(path: str | Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(Path(path).read_text())
    if spec.get("role") not in ("initiator", "responder"):
        raise ValueError("spec 'role' must be 'initiator' or 'responder'")
    return spec


def _child(c: dict[str, Any]) -> ChildConfig:
    return ChildConfig(
        c.get("name", c.get("child", "net")),
        tuple(from_network(n) for n in c["local_ts"]),
        tuple(from_network(n) for n in c["remote_ts"]),
        tuple(parse_proposals(c["esp_proposals"], ProtocolId.ESP)),
    )


def session_config(spec: dict[str, Any]) -> SessionConfig:
    children = [_child({**spec, **c}) for c in spec.get("children", [{}])]
    cfg = SessionConfig(
        name=spec.get("name", "driver"),
        local_id=Identity.parse(spec["local_id"]),
        remote_id=Identity.parse(spec.get("remote_id", "%any")),
        ike_proposals=parse_proposals(spec["ike_proposals"], ProtocolId.IKE),
        children=children,
        ike_lifetime=float(spec.get("ike_lifetime", 28800)),
        child_lifetime=float(spec.get("child_lifetime", 27000)),
        dpd_interval=float(spec.get("dpd_interval", 30)),
    )
    if spec.get("psk") is not None:
        cfg.psk = spec["psk"].encode()
    else:
        cfg.private_key = load_private_key(spec["key"])
        cfg.certificates = load_certificates(spec["cert"])
        cfg.trust = TrustStore(c for path in spec["cacerts"] for c in load_certificates(path))
        cfg.remote_auth = "pubkey"
    return cfg


# ---------------------------------------------------------------- events as JSON

_SPI32 = ("spi_in", "spi_out")  # Child SA SPIs: 8 hex digits, as swanctl prints them
_SECRET = ("encr_key_in", "integ_key_in", "encr_key_out", "integ_key_out")


def _value(name: str, v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if name in _SPI32 and isinstance(v, int):
        return f"{v:08x}"
    if isinstance(v, TrafficSelector):
        return describe([v])[0]
    if isinstance(v, tuple | list):
        return [_value(name, x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _fields(v)
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _fields(obj: Any) -> dict[str, Any]:
    return {
        f.name: _value(f.name, getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if f.name not in _SECRET
    }


def key_digests(child: ev.ChildSaInfo) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of each ESP key: comparable with strongSwan's key dumps
    (tests/lab/keylog.py) without printing keys."""
    return {
        name: hashlib.sha256(getattr(child, name)).hexdigest()[:16]
        for name in _SECRET
        if getattr(child, name)
    }


def event_json(event: ev.Event, session: int) -> dict[str, Any]:
    """An event as a flat-ish dict: ``type``, ``session`` and its fields (no key material;
    a Child SA carries ``key_digests``)."""
    out = {"type": type(event).__name__, "session": session, **_fields(event)}
    child = getattr(event, "child", None)
    if isinstance(child, ev.ChildSaInfo):
        out["child"]["key_digests"] = key_digests(child)
    return out
