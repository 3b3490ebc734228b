"""gatewayd.ikeconf: from a validated config to the IKE engine's SessionConfig/ChildConfig.

Expected values are built independently (ipaddress, cryptography's x509, the engine's own
parser) rather than read back from the module under test.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gatewayd.config import Config, parse_config, parse_identity
from gatewayd.ikeconf import (
    REKEY_MARGIN,
    ROUTE_BASED_CHILD,
    Credentials,
    child_configs,
    ike_identity,
    session_config,
    site_source_selectors,
)
from ike.auth.certs import certificate_matches_identity
from ike.auth.identity import Identity
from ike.constants import IdType, ProtocolId, TransformType, TsType
from ike.payloads import TrafficSelector
from tests.ike.pki import issue, make_ca

PSK = "correct horse battery staple, twice over"


def config(site_extra: str = "", gateway_extra: str = "", **kw: str) -> Config:
    gw_nets = kw.get("gw_nets", '["10.1.0.0/16"]')
    site_nets = kw.get("site_nets", '["10.2.0.0/16"]')
    text = f"""
[gateway]
name = "hub"
address = "192.0.2.1"
networks = {gw_nets}
{gateway_extra}

[[site]]
name = "branch"
address = "198.51.100.2"
networks = {site_nets}
psk = "{PSK}"
{site_extra}
"""
    return parse_config(text)


def ts(prefix: str) -> TrafficSelector:
    net = ipaddress.ip_network(prefix)
    kind = TsType.TS_IPV4_ADDR_RANGE if net.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(kind, 0, 0, 65535, net.network_address, net.broadcast_address)


ANY = (ts("0.0.0.0/0"), ts("::/0"))


def transform_ids(proposals: object, ttype: TransformType) -> list[list[int]]:
    return [[t.id for t in p.of_type(ttype)] for p in proposals]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ Child SAs


def test_route_based_site_negotiates_one_any_to_any_child() -> None:
    cfg = config(
        site_extra='esp_proposals = ["aes256gcm16", "aes128-sha256"]',
        site_nets='["10.2.0.0/16", "fd00:2::/48"]',
    )
    (child,) = child_configs(cfg.sites[0], cfg.gateway)
    assert child.name == ROUTE_BASED_CHILD == "net"
    assert (child.local_ts, child.remote_ts) == (ANY, ANY)
    assert [p.protocol for p in child.esp_proposals] == [ProtocolId.ESP] * 2
    assert transform_ids(child.esp_proposals, TransformType.ENCR) == [[20], [12]]  # GCM16, CBC
    assert transform_ids(child.esp_proposals, TransformType.INTEG) == [[], [12]]  # SHA2-256-128


def test_policy_based_site_pairs_only_networks_of_one_family() -> None:
    cfg = config(
        site_extra="policy_based_traffic_selectors = true",
        gw_nets='["10.1.0.0/16", "fd00:1::/48"]',
        site_nets='["10.2.0.0/16", "fd00:2::/48", "10.3.0.0/24"]',
    )
    children = child_configs(cfg.sites[0], cfg.gateway)
    got = {c.name: (c.local_ts, c.remote_ts) for c in children}
    assert got == {
        "10.1.0.0/16=10.2.0.0/16": ((ts("10.1.0.0/16"),), (ts("10.2.0.0/16"),)),
        "10.1.0.0/16=10.3.0.0/24": ((ts("10.1.0.0/16"),), (ts("10.3.0.0/24"),)),
        "fd00:1::/48=fd00:2::/48": ((ts("fd00:1::/48"),), (ts("fd00:2::/48"),)),
    }
    assert all(c.esp_proposals == children[0].esp_proposals for c in children)


def test_policy_based_site_without_a_common_family_has_no_children() -> None:
    cfg = config(site_extra="policy_based_traffic_selectors = true", site_nets='["fd00:2::/48"]')
    assert child_configs(cfg.sites[0], cfg.gateway) == []


def test_esp_proposal_with_a_ke_group_means_pfs() -> None:
    cfg = config(site_extra='esp_proposals = ["aes256gcm16-ecp384", "aes128gcm16"]')
    (child,) = child_configs(cfg.sites[0], cfg.gateway)
    assert transform_ids(child.esp_proposals, TransformType.KE) == [[20], []]  # ECP_384, none


# ------------------------------------------------------------------ credentials


def test_psk_site() -> None:
    cfg = config()
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.psk == PSK.encode()
    assert (sc.private_key, sc.certificates, sc.remote_auth) == (None, [], "psk")


def test_psk_file_site(tmp_path: Path) -> None:
    (tmp_path / "branch.psk").write_bytes(b"\x01\x02 binary secret from a file\xff\n")
    cfg = parse_config(
        """
[gateway]
name = "hub"
address = "192.0.2.1"
networks = ["10.1.0.0/16"]

[[site]]
name = "branch"
address = "198.51.100.2"
networks = ["10.2.0.0/16"]
psk_file = "branch.psk"
""",
        base_dir=tmp_path,
        check_files=True,
    )
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.psk is not None
    assert sc.psk == cfg.psk("branch")
    assert b"binary secret from a file" in sc.psk


def test_pubkey_site_gets_the_chain_key_and_trust_store(tmp_path: Path) -> None:
    ca = make_ca("CN=Test Root,O=Example")
    hub = issue(ca, "CN=hub,O=Example", sans=["hub.example.net"])
    hub.write(tmp_path, "hub")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    cfg = parse_config(
        f"""
[gateway]
name = "hub"
address = "192.0.2.1"
id = "hub.example.net"
networks = ["10.1.0.0/16"]
certificate = "hub.crt"
private_key = "hub.key"
ca = ["ca.crt"]

[[site]]
name = "dc"
address = "198.51.100.2"
id = "dc.example.net"
networks = ["10.2.0.0/16"]
auth = "pubkey"

[[site]]
name = "branch"
address = "198.51.100.3"
networks = ["10.3.0.0/16"]
psk = "{PSK}"
""",
        base_dir=tmp_path,
        check_files=True,
    )
    creds = Credentials.load(cfg.gateway)
    dc = session_config(cfg, cfg.site("dc"), creds)
    assert dc.psk is None and dc.remote_auth == "pubkey"
    assert dc.certificates == [hub.cert]
    assert dc.private_key.public_key() == hub.key.public_key()
    assert dc.trust is not None and dc.trust.cas == [ca.cert]
    assert dc.remote_id == Identity(IdType.FQDN, b"dc.example.net")
    # The certificate vouches for the identity we send.
    assert certificate_matches_identity(hub.cert, dc.local_id)
    # A PSK site of the same gateway never sends the certificate or uses the key.
    branch = session_config(cfg, cfg.site("branch"), creds)
    assert branch.psk == PSK.encode() and branch.remote_auth == "psk"
    assert (branch.private_key, branch.certificates) == (None, [])


def test_credentials_without_files_are_empty() -> None:
    creds = Credentials.load(config().gateway)
    assert (creds.private_key, creds.certificates, creds.trust) == (None, [], None)


# ------------------------------------------------------------------ timers and transport


def test_lifetimes_dpd_and_encapsulation_mapping() -> None:
    cfg = config(
        site_extra="\n".join(
            [
                "ike_lifetime = 3600",
                "child_lifetime = 600",
                "child_lifetime_kb = 1000",
                "dpd_timeout = 30",
                'encapsulation = "udp"',
                "fragment_size = 1200",
            ]
        ),
        gateway_extra="nat_t_port = 14500",
    )
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert (sc.ike_lifetime, sc.child_lifetime) == (3600.0, 600.0)
    assert sc.child_lifetime_bytes == 1000 * 1024
    assert sc.rekey_margin == REKEY_MARGIN == 0.1
    assert sc.dpd_interval == 10.0  # a third of dpd_timeout when not set
    assert sc.retransmit.give_up == 30.0  # the peer is dead after dpd_timeout
    assert sc.force_udp_encap is True and sc.udp_encap_with_gatewayd is False
    assert sc.nat_t_port == 14500
    assert sc.fragment_size == 1200


def test_encapsulation_esp_is_plain_esp_unless_a_nat() -> None:
    cfg = config(site_extra='encapsulation = "esp"')
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.force_udp_encap is False and sc.udp_encap_with_gatewayd is False


def test_defaults_and_explicit_dpd_interval() -> None:
    cfg = config(site_extra="dpd_interval = 7", gateway_extra="fragment_size = 1400")
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.dpd_interval == 7.0
    assert sc.retransmit.give_up == 45.0  # dpd_timeout's default
    assert (sc.ike_lifetime, sc.child_lifetime) == (28800.0, 27000.0)
    assert sc.child_lifetime_bytes == 102400000 * 1024
    # "auto": ESP in UDP when a NAT is detected or the peer is gatewayd (Vendor ID)
    assert sc.force_udp_encap is False and sc.udp_encap_with_gatewayd is True
    assert sc.fragment_size == 1400  # inherited from [gateway]
    assert sc.nat_t_port == 4500
    assert sc.name == "branch"
    assert len(sc.ike_proposals) == 3  # the documented defaults
    assert all(p.protocol == ProtocolId.IKE for p in sc.ike_proposals)


# ------------------------------------------------------------------ identities


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.9", Identity(IdType.IPV4_ADDR, bytes([192, 0, 2, 9]))),
        ("2001:db8::9", Identity(IdType.IPV6_ADDR, ipaddress.ip_address("2001:db8::9").packed)),
        ("hub.example.net", Identity(IdType.FQDN, b"hub.example.net")),
        ("@hub", Identity(IdType.FQDN, b"hub")),
        ("ops@example.net", Identity(IdType.RFC822_ADDR, b"ops@example.net")),
    ],
)
def test_identities_reach_the_engine_unchanged(text: str, expected: Identity) -> None:
    assert ike_identity(parse_identity(text)) == expected
    assert ike_identity(parse_identity(text)) == Identity.parse(text)  # the engine agrees


def test_local_and_remote_ids_default_to_the_addresses() -> None:
    cfg = config()
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.local_id == Identity(IdType.IPV4_ADDR, bytes([192, 0, 2, 1]))
    assert sc.remote_id == Identity(IdType.IPV4_ADDR, bytes([198, 51, 100, 2]))


def test_explicit_ids_and_a_roaming_site() -> None:
    cfg = parse_config(
        f"""
[gateway]
name = "hub"
address = "192.0.2.1"
id = "ops@example.net"
networks = ["10.1.0.0/16"]

[[site]]
name = "roamer"
address = "%any"
id = "@roamer.example.net"
mode = "responder_only"
networks = ["10.2.0.0/16"]
psk = "{PSK}"
"""
    )
    sc = session_config(cfg, cfg.sites[0], Credentials())
    assert sc.local_id == Identity(IdType.RFC822_ADDR, b"ops@example.net")
    # From anywhere, but it must still prove this identity (never the %any wildcard).
    assert sc.remote_id == Identity(IdType.FQDN, b"roamer.example.net")
    assert not sc.remote_id.is_any


def _dn_written_order() -> bytes:
    """CN=hub,O=Example with RDNs in the order written, as strongSwan encodes it."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "hub"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
        ]
    ).public_bytes()


def test_the_engine_encodes_a_dn_in_written_order() -> None:
    # The engine side of the contract the next test checks across the layers.
    assert Identity.parse("CN=hub,O=Example") == Identity(IdType.DER_ASN1_DN, _dn_written_order())
    ca = make_ca("CN=Test Root,O=Example")
    hub = issue(ca, "CN=hub,O=Example")  # tests.ike.pki: first attribute first in the DER
    assert certificate_matches_identity(hub.cert, Identity.parse("CN=hub,O=Example"))


def test_a_dn_id_reaches_the_engine_in_written_order() -> None:
    local = ike_identity(parse_identity("CN=hub,O=Example"))
    ca = make_ca("CN=Test Root,O=Example")
    hub = issue(ca, "CN=hub,O=Example")
    assert local == Identity.parse("CN=hub,O=Example")
    assert local.data == _dn_written_order()
    assert certificate_matches_identity(hub.cert, local)


# ------------------------------------------------------------------ helpers


def test_site_source_selectors_are_the_site_networks() -> None:
    cfg = config(site_nets='["10.2.0.0/16", "fd00:2::/48"]')
    sels = site_source_selectors(cfg.sites[0])
    inside = [ipaddress.ip_address(a).packed for a in ("10.2.255.1", "fd00:2::1")]
    outside = [ipaddress.ip_address(a).packed for a in ("10.3.0.1", "fd00:3::1", "10.1.0.1")]
    assert all(any(sel.matches(a, 17, 53) for sel in sels) for a in inside)
    assert not any(sel.matches(a, 17, 53) for sel in sels for a in outside)
