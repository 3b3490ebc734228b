"""What every client profile needs, gathered from the gateway's config (`gatewayctl p2s
profile`): where to connect, whom to expect, which CA vouches for the gateway, the
proposals, the routes and the user's credentials. The format modules
(profile_swanctl, profile_apple, profile_nm) only render a ProfileInput.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ike.auth.certs import PrivateKey, TrustStore, load_certificates, load_private_key
from ike.errors import AuthenticationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ClientAuth = Literal["certificate", "eap"]


class ProfileError(Exception):
    """The profile cannot be made; the message says what is missing."""


@dataclass
class ClientCredentials:
    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates, no root


@dataclass
class ProfileInput:
    name: str  # the user: IKE identity, EAP identity, file stem
    connection: str  # a label for the connection (the gateway's name)
    server: str  # the address or DNS name clients dial
    server_id: str  # the gateway's IKE identity, as text
    ca: x509.Certificate  # trust anchor for the gateway's certificate
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    routes: tuple[IPNetwork, ...]
    ipv4: bool  # the pool has IPv4 addresses
    ipv6: bool  # the pool has IPv6 addresses
    auth: ClientAuth
    credentials: ClientCredentials | None = None  # set when auth == "certificate"

    def ca_common_name(self) -> str | None:
        names = self.ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        value = names[0].value if names else None
        return value if isinstance(value, str) else None


# -- the gateway's CA -----------------------------------------------------------------


def certs_of(paths: list[str]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for path in paths:
        try:
            out += load_certificates(path)
        except (OSError, ValueError):
            continue  # `gatewayd check` reports unreadable files; try the others
    return out


def find_server_ca(
    gateway_chain: list[x509.Certificate],
    candidates: list[x509.Certificate],
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """The CA among ``candidates`` that the gateway's certificate chains to (a
    self-signed root preferred). ProfileError when none does."""
    if not gateway_chain:
        raise ProfileError("gateway.certificate is not set: clients could not authenticate it")
    now = now or datetime.datetime.now(datetime.UTC)
    leaf, intermediates = gateway_chain[0], gateway_chain[1:]
    anchors: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for ca in candidates + intermediates:
        fp = ca.fingerprint(hashes.SHA256())
        if fp in seen or ca == leaf:
            continue
        seen.add(fp)
        try:
            path = TrustStore([ca]).validate(leaf, intermediates, now)
        except AuthenticationError:
            continue
        anchors.append(path[-1])
    if not anchors:
        raise ProfileError(
            "no CA certificate among gateway.ca, [p2s].client_ca and [p2s].issuer signs "
            "the gateway's certificate; pass it with --ca FILE"
        )
    roots = [a for a in anchors if a.subject == a.issuer]
    return (roots or anchors)[0]


# -- the user's certificate -------------------------------------------------------------


def load_client_credentials(cert_path: Path, key_path: Path) -> ClientCredentials:
    try:
        certs = load_certificates(cert_path)
        key = load_private_key(key_path)
    except FileNotFoundError as e:
        raise ProfileError(
            f"{e.filename}: not found (issue one with `gatewayctl p2s issue`, or pass --cert/--key)"
        ) from None
    except (OSError, ValueError) as e:
        raise ProfileError(str(e)) from None
    cert = certs[0]
    if cert.public_key() != key.public_key():
        raise ProfileError(f"the key in {key_path} does not belong to {cert_path}")
    chain = [c for c in certs[1:] if c.subject != c.issuer]
    return ClientCredentials(cert, key, chain)


def networks_of(pool: tuple[IPNetwork, ...]) -> tuple[bool, bool]:
    return any(n.version == 4 for n in pool), any(n.version == 6 for n in pool)
