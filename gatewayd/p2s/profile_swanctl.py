"""A strongSwan (swanctl) client profile: swanctl.conf plus its certificate files.

The result is a small swanctl directory: ``swanctl.conf``, ``x509ca/`` (the CA that signs
the gateway's certificate), and for certificate users ``x509/`` and ``private/``. The
certificate references are file names relative to those directories, as swanctl resolves
them, so copying the tree over /etc/swanctl (or pointing SWANCTL_DIR at it) is enough.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from gatewayd.p2s.profile import ProfileInput

CONNECTION = "gatewayd"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ca_file(p: ProfileInput) -> str:
    return f"{p.connection}-ca.crt"


def render_conf(p: ProfileInput) -> str:
    # "Any address" in vips asks the gateway to assign one (a CFG_REQUEST), no binding.
    any4, any6 = "0.0.0.0", "::"  # noqa: S104
    vips = [v for v, on in ((any4, p.ipv4), (any6, p.ipv6)) if on] or [any4]
    remote_ts = ",".join(str(n) for n in p.routes) or "0.0.0.0/0"
    if p.auth == "certificate":
        local = [
            "auth = pubkey",
            f"certs = {p.name}.crt",
            f"id = {_quote(p.name)}",
        ]
    else:
        local = [
            "auth = eap-mschapv2",
            f"id = {_quote(p.name)}",
            f"eap_id = {_quote(p.name)}",
        ]
    lines = [
        f"# gatewayd remote-access profile for {p.name} ({p.connection}).",
        "# Load with: swanctl --load-all ; connect with: swanctl --initiate --child " + CONNECTION,
        "connections {",
        f"    {CONNECTION} {{",
        "        version = 2",
        f"        remote_addrs = {p.server}",
        f"        vips = {','.join(vips)}",
        f"        proposals = {','.join(p.ike_proposals)}",
        "        mobike = yes",
        "        dpd_delay = 30s",
        "        send_certreq = yes",
        # Not only when asked: a gateway that sends no CERTREQ still needs our certificate.
        *(["        send_cert = always"] if p.auth == "certificate" else []),
        "        local {",
        *(f"            {line}" for line in local),
        "        }",
        "        remote {",
        "            auth = pubkey",
        f"            id = {_quote(p.server_id)}",
        f"            cacerts = {ca_file(p)}",
        "        }",
        "        children {",
        f"            {CONNECTION} {{",
        f"                remote_ts = {remote_ts}",
        f"                esp_proposals = {','.join(p.esp_proposals)}",
        "                dpd_action = restart",
        "                close_action = none",
        "            }",
        "        }",
        "    }",
        "}",
    ]
    if p.auth == "eap":
        lines += [
            "secrets {",
            f"    eap-{CONNECTION} {{",
            f"        id = {_quote(p.name)}",
            "        # The password is not in this file: put it here before loading.",
            '        secret = ""',
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render(p: ProfileInput) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, file mode)."""
    pem = serialization.Encoding.PEM
    files: dict[str, tuple[bytes, int]] = {
        "swanctl.conf": (render_conf(p).encode(), 0o600 if p.auth == "eap" else 0o644),
        f"x509ca/{ca_file(p)}": (p.ca.public_bytes(pem), 0o644),
    }
    creds = p.credentials
    if p.auth == "certificate" and creds is not None:
        files[f"x509/{p.name}.crt"] = (creds.cert.public_bytes(pem), 0o644)
        # Intermediates go to x509/ (untrusted, sent along), never to x509ca/ (anchors).
        for n, c in enumerate(creds.chain):
            files[f"x509/{p.name}-chain-{n}.crt"] = (c.public_bytes(pem), 0o644)
        key = creds.key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        files[f"private/{p.name}.key"] = (key, 0o600)
    return files
