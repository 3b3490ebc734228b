"""Identity parsing, ID payload round trips, matching and display."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from ike.auth.identity import Identity
from ike.constants import IdType, PayloadType
from ike.errors import AuthenticationError
from ike.payloads import IdPayload


def name_der(*rdns: tuple[x509.ObjectIdentifier, str]) -> bytes:
    """An independent DER Name, one attribute per RDN, first RDN first."""
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(oid, v)]) for oid, v in rdns]
    ).public_bytes()


def printable_name_der(*rdns: tuple[str, str]) -> bytes:
    """A Name with PrintableString values, hand-encoded (what strongSwan sends)."""
    oids = {"CN": b"\x55\x04\x03", "O": b"\x55\x04\x0a"}

    def tlv(tag: int, body: bytes) -> bytes:
        assert len(body) < 128
        return bytes([tag, len(body)]) + body

    body = b"".join(
        tlv(0x31, tlv(0x30, tlv(0x06, oids[k]) + tlv(0x13, v.encode()))) for k, v in rdns
    )
    return tlv(0x30, body)


# -- parse ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "id_type", "data"),
    [
        ("192.0.2.1", IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
        ("2001:db8::1", IdType.IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed),
        ("hub.example.org", IdType.FQDN, b"hub.example.org"),
        ("@hub.example.org", IdType.FQDN, b"hub.example.org"),
        ("  hub  ", IdType.FQDN, b"hub"),
        ("alice@example.org", IdType.RFC822_ADDR, b"alice@example.org"),
    ],
)
def test_parse_simple_types(text: str, id_type: IdType, data: bytes) -> None:
    ident = Identity.parse(text)
    assert ident.id_type == id_type
    assert ident.data == data


def test_parse_any_is_wildcard() -> None:
    ident = Identity.parse("%any")
    assert ident.is_any
    assert ident == Identity.ANY
    assert str(ident) == "%any"


@pytest.mark.parametrize(
    "text", ["CN=hub,O=Example", "CN=hub, O=Example", " CN = hub ,  O=Example "]
)
def test_parse_dn_in_written_order(text: str) -> None:
    ident = Identity.parse(text)
    assert ident.id_type == IdType.DER_ASN1_DN
    assert ident.data == name_der(
        (NameOID.COMMON_NAME, "hub"), (NameOID.ORGANIZATION_NAME, "Example")
    )


def test_parse_dn_all_keys() -> None:
    text = (
        "C=CH, ST=Zurich, L=Zurich, O=Example, OU=VPN, CN=hub, E=ops@example.org, "
        "emailAddress=x@example.org, DC=example, serialNumber=1234"
    )
    ident = Identity.parse(text)
    assert ident.data == name_der(
        (NameOID.COUNTRY_NAME, "CH"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Zurich"),
        (NameOID.LOCALITY_NAME, "Zurich"),
        (NameOID.ORGANIZATION_NAME, "Example"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "VPN"),
        (NameOID.COMMON_NAME, "hub"),
        (NameOID.EMAIL_ADDRESS, "ops@example.org"),
        (NameOID.EMAIL_ADDRESS, "x@example.org"),
        (NameOID.DOMAIN_COMPONENT, "example"),
        (NameOID.SERIAL_NUMBER, "1234"),
    )


def test_parse_dn_keys_case_insensitive_and_escapes() -> None:
    ident = Identity.parse(r"cn=Smith\, John, o=A\+B, ou=\41x")
    assert ident.data == name_der(
        (NameOID.COMMON_NAME, "Smith, John"),
        (NameOID.ORGANIZATION_NAME, "A+B"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Ax"),
    )


def test_parse_dn_multi_valued_rdn() -> None:
    ident = Identity.parse("CN=hub+OU=VPN, O=Example")
    expected = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "hub"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "VPN"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")]
            ),
        ]
    )
    assert ident.data == expected.public_bytes()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("CN=hub,,O=x", "is not KEY=value"),
        ("CN=hub,O", "is not KEY=value"),
        ("XX=hub", "unknown attribute 'XX'"),
        ("CN=", "empty value for CN"),
        ("=hub", "attribute without a key"),
        ("C=CHE,CN=x", "C='CHE'"),
        (r"CN=a\qb", "bad escape"),
        ("DC=\u00e9", "not a valid IA5String"),
        ("serialNumber=a@b", "not a valid PrintableString"),
    ],
)
def test_parse_bad_dn(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid DN") as info:
        Identity.parse(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "text", ["", "   ", "-hub.example", "hub..example", "hub_1.example", "a" * 64 + ".x", "x@", "@"]
)
def test_parse_bad_other(text: str) -> None:
    with pytest.raises(ValueError):
        Identity.parse(text)


# -- payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["192.0.2.1", "2001:db8::1", "hub.example.org", "a@b.example", "CN=hub, O=Example"]
)
def test_payload_round_trip(text: str) -> None:
    ident = Identity.parse(text)
    payload = ident.to_payload(PayloadType.IDi)
    assert payload.ptype == PayloadType.IDi
    assert payload.body() == bytes([ident.id_type, 0, 0, 0]) + ident.data
    assert Identity.from_payload(payload) == ident


def test_any_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        Identity.ANY.to_payload(PayloadType.IDr)


@pytest.mark.parametrize(
    ("id_type", "data", "reason"),
    [
        (0, b"", "reserved"),
        (0, b"x", "reserved"),
        (IdType.IPV4_ADDR, b"\x01\x02\x03", "not 4"),
        (IdType.IPV6_ADDR, b"\x00" * 4, "not 16"),
        (IdType.FQDN, b"", "empty"),
        (IdType.DER_ASN1_DN, b"\x30\x05\x31\x03", "malformed"),
        (IdType.DER_ASN1_DN, b"\x31\x00", "malformed"),
        (IdType.DER_ASN1_DN, b"\x30\x00\x00", "malformed"),
    ],
)
def test_from_payload_rejects(id_type: int, data: bytes, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        Identity.from_payload(IdPayload(PayloadType.IDi, id_type, data))


def test_from_payload_unknown_type_kept_exact() -> None:
    ident = Identity.from_payload(IdPayload(PayloadType.IDr, 200, b"\x01\x02"))
    assert ident.id_type == 200
    assert not ident.is_any
    assert ident.matches(Identity(200, b"\x01\x02"))
    assert not ident.matches(Identity(200, b"\x01\x03"))
    assert str(ident) == "ID_TYPE_200:0102"


@given(st.binary(max_size=64))
def test_from_payload_dn_never_crashes(data: bytes) -> None:
    try:
        ident = Identity.from_payload(IdPayload(PayloadType.IDi, IdType.DER_ASN1_DN, data))
    except AuthenticationError:
        return
    str(ident)
    assert ident.matches(ident)


# -- matching -------------------------------------------------------------------------


def test_any_matches_everything_but_nothing_matches_any() -> None:
    for text in ["192.0.2.1", "hub.example", "a@b.example", "CN=x"]:
        assert Identity.ANY.matches(Identity.parse(text))
        assert not Identity.parse(text).matches(Identity.ANY)


def test_fqdn_and_email_case_insensitive() -> None:
    assert Identity.parse("Hub.Example.ORG").matches(Identity.parse("hub.example.org"))
    assert Identity.parse("Alice@Example.org").matches(Identity.parse("alice@example.ORG"))
    assert not Identity.parse("hub.example.org").matches(Identity.parse("hub2.example.org"))


def test_types_must_agree() -> None:
    assert not Identity.parse("hub.example.org").matches(
        Identity(IdType.RFC822_ADDR, b"hub.example.org")
    )
    assert not Identity.parse("192.0.2.1").matches(Identity(IdType.FQDN, b"192.0.2.1"))


def test_ip_exact() -> None:
    assert Identity.parse("192.0.2.1").matches(Identity.parse("192.0.2.1"))
    assert not Identity.parse("192.0.2.1").matches(Identity.parse("192.0.2.2"))
    assert Identity.parse("2001:DB8::1").matches(Identity.parse("2001:db8:0::1"))


def test_dn_case_insensitive_values_exact_order() -> None:
    ident = Identity.parse("CN=hub, O=Example")
    assert ident.matches(Identity.parse("cn=HUB,o=example"))
    assert not ident.matches(Identity.parse("O=Example, CN=hub"))
    assert not ident.matches(Identity.parse("CN=hub"))
    assert not ident.matches(Identity.parse("CN=hub, O=Example, OU=x"))
    assert not ident.matches(Identity.parse("CN=hub, OU=Example"))


def test_dn_ignores_string_type() -> None:
    # strongSwan encodes "CN=hub, O=Example" with PrintableString, cryptography with UTF8String.
    theirs = Identity.from_payload(
        IdPayload(
            PayloadType.IDr, IdType.DER_ASN1_DN, printable_name_der(("CN", "HUB"), ("O", "Example"))
        )
    )
    assert Identity.parse("CN=hub, O=Example").matches(theirs)
    assert theirs.data != Identity.parse("CN=hub, O=Example").data


def test_multi_valued_rdn_order_inside_rdn_irrelevant() -> None:
    assert Identity.parse("CN=a+OU=b, O=c").matches(Identity.parse("OU=b+CN=a, O=c"))
    assert not Identity.parse("CN=a+OU=b, O=c").matches(Identity.parse("CN=a, OU=b, O=c"))


# -- display --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("CN=hub,O=Example", "CN=hub, O=Example"),
        ("emailAddress=a@b.c, dc=example, serialnumber=7", "E=a@b.c, DC=example, serialNumber=7"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("hub.example.org", "hub.example.org"),
        ("a@b.example", "a@b.example"),
    ],
)
def test_str(text: str, shown: str) -> None:
    assert str(Identity.parse(text)) == shown


def test_str_dn_round_trips_with_escapes() -> None:
    ident = Identity.parse(r"CN=Smith\, John, O=A\+B\=C, OU=\ lead")
    assert str(ident) == r"CN=Smith\, John, O=A\+B\=C, OU=\ lead"
    assert Identity.parse(str(ident)) == ident


def test_str_escapes_peer_control_characters() -> None:
    ident = Identity.from_payload(IdPayload(PayloadType.IDi, IdType.FQDN, b"evil\nINFO fake\xff"))
    shown = str(ident)
    assert "\n" not in shown
    assert "\\n" in shown
    assert "\\xff" in shown
    dn = Identity(IdType.DER_ASN1_DN, name_der((NameOID.COMMON_NAME, "a\nb")))
    assert str(dn) == "CN=a\\0Ab"


def test_str_key_id_and_unknown_oid() -> None:
    assert str(Identity(IdType.KEY_ID, b"\xab\xcd")) == "keyid:abcd"
    ident = Identity.parse("2.5.4.12=Boss, CN=x")  # title, by dotted OID
    assert str(ident) == "2.5.4.12=Boss, CN=x"


@given(
    # At most 16 characters: a CN may hold 64 UTF-8 bytes.
    cn=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=16),
    org=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
)
def test_str_parse_round_trip_any_values(cn: str, org: str) -> None:
    ident = Identity(
        IdType.DER_ASN1_DN,
        name_der((NameOID.COMMON_NAME, cn), (NameOID.ORGANIZATION_NAME, org)),
    )
    assert Identity.parse(str(ident)).data == ident.data


DN_PIECES = st.sampled_from([*'CNOU=,+\\ #@.:%a1-_"\u00e9\x00', "CN=", "O=", "DC=", "C=", "\\2C"])


@given(st.one_of(st.text(max_size=40), st.lists(DN_PIECES, max_size=20).map("".join)))
def test_parse_arbitrary_text_only_raises_value_error(text: str) -> None:
    try:
        ident = Identity.parse(text)
    except ValueError:
        return
    str(ident)
    assert ident.matches(ident)
