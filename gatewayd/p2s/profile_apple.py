"""An Apple configuration profile (.mobileconfig) for macOS and iOS's built-in IKEv2 client.

Apple's client offers exactly one proposal for the IKE SA and one for the Child SAs, set
by IKESecurityAssociationParameters and ChildSecurityAssociationParameters; the PRF is
inferred from IntegrityAlgorithm (also for AES-GCM). So we pick the first of the
gateway's proposals that Apple can express, and refuse when there is none.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatewayd.p2s.profile import ProfileError, ProfileInput
from gatewayd.p2s.profile_issue import pkcs12_bytes
from ike.constants import EncrId, IntegId, KeId, PrfId, ProtocolId, TransformType
from ike.crypto.proposals import parse_proposal
from ike.payloads import Transform

# Apple's names for what our proposals can hold (Apple VPN.IKEv2 payload keys).
_ENCR: dict[tuple[int, int | None], str] = {
    (EncrId.AES_CBC, 128): "AES-128",
    (EncrId.AES_CBC, 256): "AES-256",
    (EncrId.AES_GCM_16, 128): "AES-128-GCM",
    (EncrId.AES_GCM_16, 256): "AES-256-GCM",
    (EncrId.CHACHA20_POLY1305, None): "ChaCha20Poly1305",
}
_AEAD = {EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305}
_INTEG = {
    IntegId.HMAC_SHA1_96: "SHA1-96",
    IntegId.HMAC_SHA2_256_128: "SHA2-256",
    IntegId.HMAC_SHA2_384_192: "SHA2-384",
    IntegId.HMAC_SHA2_512_256: "SHA2-512",
}
# The PRF Apple derives from each IntegrityAlgorithm.
_PRF_OF = {
    "SHA1-96": PrfId.HMAC_SHA1,
    "SHA2-256": PrfId.HMAC_SHA2_256,
    "SHA2-384": PrfId.HMAC_SHA2_384,
    "SHA2-512": PrfId.HMAC_SHA2_512,
}
_PRF_NAME = {prf: name for name, prf in _PRF_OF.items() if name != "SHA1-96"}
_GROUPS: dict[int, int] = {
    KeId.MODP_2048: 14,
    KeId.MODP_3072: 15,
    KeId.MODP_4096: 16,
    KeId.MODP_6144: 17,
    KeId.MODP_8192: 18,
    KeId.ECP_256: 19,
    KeId.ECP_384: 20,
    KeId.ECP_521: 21,
    KeId.CURVE25519: 31,
    KeId.CURVE448: 32,
}


@dataclass(frozen=True)
class AppleSa:
    encryption: str
    integrity: str | None  # None: AEAD Child SA (no integrity transform)
    dh_group: int | None  # None: a Child SA without PFS

    def plist(self, fallback_group: int) -> dict[str, Any]:
        out: dict[str, Any] = {"EncryptionAlgorithm": self.encryption}
        if self.integrity is not None:
            out["IntegrityAlgorithm"] = self.integrity
        out["DiffieHellmanGroup"] = self.dh_group or fallback_group
        return out


def _encr_name(t: Transform) -> str | None:
    key_bits = None if t.id == EncrId.CHACHA20_POLY1305 else t.key_length
    return _ENCR.get((t.id, key_bits))


def _first(names: list[str | None]) -> str | None:
    return next((n for n in names if n is not None), None)


def apple_ike_sa(proposals: tuple[str, ...]) -> AppleSa:
    for text in proposals:
        p = parse_proposal(text, ProtocolId.IKE)
        encrs = p.of_type(TransformType.ENCR)
        groups = [_GROUPS.get(t.id) for t in p.of_type(TransformType.KE)]
        group = next((g for g in groups if g is not None), None)
        prfs = {t.id for t in p.of_type(TransformType.PRF)}
        for encr in encrs:
            name = _encr_name(encr)
            if name is None or group is None:
                continue
            if encr.id in _AEAD:
                integ = _first([_PRF_NAME.get(PrfId(i)) for i in prfs if i in _PRF_NAME])
            else:
                integ = _first(
                    [
                        _INTEG.get(IntegId(t.id))
                        for t in p.of_type(TransformType.INTEG)
                        if t.id in _INTEG and _PRF_OF[_INTEG[IntegId(t.id)]] in prfs
                    ]
                )
            if integ is not None:
                return AppleSa(name, integ, group)
    raise ProfileError(
        "none of [p2s].ike_proposals can be offered by Apple clients (they need AES-CBC, "
        "AES-GCM or ChaCha20 with a SHA-1/SHA-2 PRF and DH group 14-21, 31 or 32), e.g. "
        "add aes256-sha256-modp2048 or aes256gcm16-prfsha256-ecp256"
    )


def apple_child_sa(proposals: tuple[str, ...]) -> AppleSa:
    for text in proposals:
        p = parse_proposal(text, ProtocolId.ESP)
        kes = [t for t in p.of_type(TransformType.KE) if t.id != KeId.NONE]
        if kes and all(t.id not in _GROUPS for t in kes):
            continue
        group = _GROUPS.get(KeId(kes[0].id)) if kes else None
        for encr in p.of_type(TransformType.ENCR):
            name = _encr_name(encr)
            if name is None:
                continue
            if encr.id in _AEAD:
                return AppleSa(name, None, group)
            integs = p.of_type(TransformType.INTEG)
            integ = _first([_INTEG.get(IntegId(t.id)) for t in integs if t.id in _INTEG])
            if integ is not None:
                return AppleSa(name, integ, group)
    raise ProfileError(
        "none of [p2s].esp_proposals can be offered by Apple clients (AES-CBC with "
        "SHA-1/SHA-2, AES-GCM or ChaCha20), e.g. add aes256gcm16"
    )


def _certificate_type(p: ProfileInput) -> str:
    key = p.credentials.key if p.credentials else None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sizes = {256: "ECDSA256", 384: "ECDSA384", 521: "ECDSA521"}
        if key.curve.key_size in sizes:
            return sizes[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    raise ProfileError("Apple clients take RSA or ECDSA (P-256/384/521) client keys only")


def _uuid(p: ProfileInput, part: str) -> str:
    # Stable: installing a newer profile for the same user replaces the old one.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gatewayd:{p.connection}:{p.name}:{part}")).upper()


def _identifier(p: ProfileInput, part: str) -> str:
    safe = "".join(c if c.isalnum() or c in ".-" else "-" for c in f"{p.connection}.{p.name}")
    return f"org.gatewayd.p2s.{safe}.{part}"


def render(p: ProfileInput, p12_password: bytes | None = None) -> bytes:
    """The .mobileconfig (XML plist). Certificate users need ``p12_password``: the
    identity goes in as PKCS#12 and the device asks for that password on install."""
    ike = apple_ike_sa(p.ike_proposals)
    child = apple_child_sa(p.esp_proposals)
    assert ike.dh_group is not None  # apple_ike_sa() always finds a group
    ikev2: dict[str, Any] = {
        "RemoteAddress": p.server,
        "RemoteIdentifier": p.server_id,
        "LocalIdentifier": p.name,
        "IKESecurityAssociationParameters": ike.plist(ike.dh_group),
        "ChildSecurityAssociationParameters": child.plist(ike.dh_group),
        "EnablePFS": child.dh_group is not None,
        "DeadPeerDetectionRate": "Medium",
        "DisableMOBIKE": False,
        "DisableRedirect": True,
        "EnableCertificateRevocationCheck": False,
    }
    ca_name = p.ca_common_name()
    if ca_name:
        ikev2["ServerCertificateIssuerCommonName"] = ca_name
    payloads: list[dict[str, Any]] = []
    if p.auth == "certificate":
        if p.credentials is None or p12_password is None:
            raise ProfileError("a certificate profile needs the user's certificate and key")
        ikev2["AuthenticationMethod"] = "Certificate"
        ikev2["CertificateType"] = _certificate_type(p)
        ikev2["PayloadCertificateUUID"] = _uuid(p, "identity")
        ikev2["ExtendedAuthEnabled"] = False
        p12 = pkcs12_bytes(
            p.name, p.credentials.key, p.credentials.cert, p.credentials.chain, p12_password
        )
        payloads.append(
            {
                "PayloadType": "com.apple.security.pkcs12",
                "PayloadVersion": 1,
                "PayloadIdentifier": _identifier(p, "identity"),
                "PayloadUUID": _uuid(p, "identity"),
                "PayloadDisplayName": f"{p.name} (VPN identity)",
                "PayloadContent": p12,
            }
        )
    else:
        # EAP (MSCHAPv2 here): the device asks for the password when connecting.
        ikev2["AuthenticationMethod"] = "None"
        ikev2["ExtendedAuthEnabled"] = True
        ikev2["AuthName"] = p.name
    vpn = {
        "PayloadType": "com.apple.vpn.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": _identifier(p, "vpn"),
        "PayloadUUID": _uuid(p, "vpn"),
        "PayloadDisplayName": f"{p.connection} VPN",
        "UserDefinedName": f"{p.connection} VPN",
        "VPNType": "IKEv2",
        "IKEv2": ikev2,
    }
    root = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": _identifier(p, "ca"),
        "PayloadUUID": _uuid(p, "ca"),
        "PayloadDisplayName": ca_name or "VPN CA",
        "PayloadContent": p.ca.public_bytes(serialization.Encoding.DER),
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": _identifier(p, "profile"),
        "PayloadUUID": _uuid(p, "profile"),
        "PayloadDisplayName": f"{p.connection} VPN ({p.name})",
        "PayloadContent": [vpn, root, *payloads],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
