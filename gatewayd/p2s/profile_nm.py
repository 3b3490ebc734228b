"""A NetworkManager keyfile for the strongSwan VPN plugin (NetworkManager-strongswan).

Data keys are the ones charon-nm reads (strongSwan's src/charon-nm/nm/nm_service.c):
address, certificate, remote-identity, method (key: certificate + key file; eap: user
name and a password NetworkManager asks for), usercert, userkey, user, local-identity,
virtual, proposal, ike / esp and remote-ts (each ';'-separated). The certificate files
are referenced by absolute path: ``files_dir`` is where they are on the client.
"""

from __future__ import annotations

import configparser
import io
import uuid
from pathlib import PurePosixPath

from cryptography.hazmat.primitives import serialization

from gatewayd.p2s.profile import ProfileInput

SERVICE_TYPE = "org.freedesktop.NetworkManager.strongswan"


def _files(p: ProfileInput) -> dict[str, tuple[bytes, int]]:
    pem = serialization.Encoding.PEM
    out = {f"{p.connection}-ca.crt": (p.ca.public_bytes(pem), 0o644)}
    creds = p.credentials
    if p.auth == "certificate" and creds is not None:
        chain = b"".join(c.public_bytes(pem) for c in [creds.cert, *creds.chain])
        out[f"{p.name}.crt"] = (chain, 0o644)
        key = creds.key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        out[f"{p.name}.key"] = (key, 0o600)
    return out


def render(p: ProfileInput, files_dir: str) -> tuple[str, dict[str, tuple[bytes, int]]]:
    """(keyfile text, {file name: (content, mode)}) with the files living in files_dir."""
    base = PurePosixPath(files_dir)
    files = _files(p)
    vpn = {
        "service-type": SERVICE_TYPE,
        "address": p.server,
        "certificate": str(base / f"{p.connection}-ca.crt"),
        "remote-identity": p.server_id,
        "local-identity": p.name,
        "virtual": "yes",
        "encap": "no",
        "ipcomp": "no",
        "proposal": "yes",
        "ike": ";".join(p.ike_proposals),
        "esp": ";".join(p.esp_proposals),
        "remote-ts": ";".join(str(n) for n in p.routes),
    }
    if p.auth == "certificate":
        vpn |= {
            "method": "key",
            "usercert": str(base / f"{p.name}.crt"),
            "userkey": str(base / f"{p.name}.key"),
        }
    else:
        # password-flags=2: the secret is not saved; NetworkManager asks for it.
        vpn |= {"method": "eap", "user": p.name, "password-flags": "2"}
    doc = configparser.ConfigParser(interpolation=None)
    doc.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    doc["connection"] = {
        "id": f"{p.connection} VPN",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"gatewayd:{p.connection}:{p.name}:nm")),
        "type": "vpn",
        "autoconnect": "false",
    }
    doc["vpn"] = vpn
    doc["ipv4"] = {"method": "auto"}
    doc["ipv6"] = {"method": "auto" if p.ipv6 else "ignore"}
    text = io.StringIO()
    doc.write(text, space_around_delimiters=False)
    return text.getvalue(), files
