"""IKE identities (RFC 7296 §3.5): parsing from config text, ID payloads, matching, display.

Config text forms:
  ``%any``               wildcard (only ever a pattern; never sent, never received)
  ``192.0.2.1``, ``2001:db8::1``   IPV4_ADDR / IPV6_ADDR
  ``CN=hub, O=Example``  DER_ASN1_DN, RDNs encoded in the written order
  ``user@example.org``   RFC822_ADDR
  ``@hub.example.org``   FQDN (a leading '@' is the strongSwan way to force an FQDN)
  ``hub.example.org``    FQDN
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from ike.constants import IdType, PayloadType
from ike.errors import AuthenticationError
from ike.payloads import IdPayload

_KNOWN_ID_TYPES = frozenset(IdType)
ANY_ID_TYPE = 0  # reserved in the IANA registry, so no peer can send our wildcard

# DN attribute keys we accept in config text, and use when printing.
_DN_KEYS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}
_DN_LABELS = {
    NameOID.COMMON_NAME.dotted_string: "CN",
    NameOID.ORGANIZATION_NAME.dotted_string: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string: "OU",
    NameOID.COUNTRY_NAME.dotted_string: "C",
    NameOID.STATE_OR_PROVINCE_NAME.dotted_string: "ST",
    NameOID.LOCALITY_NAME.dotted_string: "L",
    NameOID.EMAIL_ADDRESS.dotted_string: "E",
    NameOID.DOMAIN_COMPONENT.dotted_string: "DC",
    NameOID.SERIAL_NUMBER.dotted_string: "serialNumber",
}
_KNOWN_KEYS = "CN, O, OU, C, ST, L, E (emailAddress), DC, serialNumber or a dotted OID"
# Attributes cryptography encodes as PrintableString or IA5String, and what those allow.
_PRINTABLE_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
_RESTRICTED = {
    NameOID.COUNTRY_NAME: ("PrintableString", _PRINTABLE_CHARS),
    NameOID.SERIAL_NUMBER: ("PrintableString", _PRINTABLE_CHARS),
    NameOID.EMAIL_ADDRESS: ("IA5String", frozenset(chr(c) for c in range(128))),
    NameOID.DOMAIN_COMPONENT: ("IA5String", frozenset(chr(c) for c in range(128))),
}
_DN_SPECIALS = frozenset(',+="\\<>;# ')

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DOTTED_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+\Z")

# DER tags of the string types a Name may use, with the codec that decodes them.
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x12: "ascii",  # NumericString
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # TeletexString: in practice Latin-1
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}

# One attribute of a parsed DN: (dotted OID, DER tag, decoded text or None for non-strings,
# raw value bytes).
_Attr = tuple[str, int, str | None, bytes]


@dataclass(frozen=True)
class Identity:
    """An IKE identity: the ID payload's type and data (DNs held as DER)."""

    id_type: int  # IdType, or ANY_ID_TYPE for the %any wildcard
    data: bytes

    ANY: ClassVar[Identity]

    @property
    def is_any(self) -> bool:
        return self.id_type == ANY_ID_TYPE

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Identity:
        """An identity from config text; ValueError with the reason if it is not valid."""
        original, text = text, text.strip()
        if not text:
            raise ValueError("empty identity")
        if text == "%any":
            return cls.ANY
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
            return cls(kind, addr.packed)
        if "=" in text:
            # Unstripped: a trailing "\ " is an escaped space the DN parser must see.
            return cls(IdType.DER_ASN1_DN, _parse_dn(original).public_bytes())
        if text.startswith("@"):
            return cls(IdType.FQDN, _check_hostname(text[1:], text))
        if "@" in text:
            return cls(IdType.RFC822_ADDR, _check_email(text))
        return cls(IdType.FQDN, _check_hostname(text, text))

    @classmethod
    def expected(cls, payload: IdPayload, wanted: Identity) -> Identity:
        """The peer's identity if it is the one configured; AuthenticationError if not."""
        identity = cls.from_payload(payload)
        if not wanted.matches(identity):
            raise AuthenticationError(
                f"peer identity '{identity}' does not match the configured '{wanted}'"
            )
        return identity

    @classmethod
    def from_payload(cls, payload: IdPayload) -> Identity:
        """The peer's identity; AuthenticationError if its data cannot be of its type."""
        id_type = payload.id_type
        data = bytes(payload.data)
        if id_type == ANY_ID_TYPE:
            raise AuthenticationError("ID payload uses the reserved ID type 0")
        if not data:
            raise AuthenticationError(f"ID payload of type {_type_name(id_type)} is empty")
        if id_type == IdType.IPV4_ADDR and len(data) != 4:
            raise AuthenticationError(f"ID_IPV4_ADDR of {len(data)} bytes, not 4")
        if id_type == IdType.IPV6_ADDR and len(data) != 16:
            raise AuthenticationError(f"ID_IPV6_ADDR of {len(data)} bytes, not 16")
        if id_type == IdType.DER_ASN1_DN:
            try:
                _read_dn(data)
            except ValueError as e:
                raise AuthenticationError(f"malformed ID_DER_ASN1_DN: {e}") from None
        # An ID type we do not know stays a plain int and still compares exactly.
        return cls(IdType(id_type) if id_type in _KNOWN_ID_TYPES else id_type, data)

    def to_payload(self, ptype: PayloadType) -> IdPayload:
        """Our ID payload (IDi or IDr)."""
        if self.is_any:
            raise ValueError("%any is a pattern and cannot be sent as our identity")
        return IdPayload(ptype=ptype, id_type=int(self.id_type), data=self.data)

    # -- comparison -----------------------------------------------------------------------

    def matches(self, other: Identity) -> bool:
        """True if ``other`` (typically the peer's) is acceptable where ``self`` is expected.

        %any matches everything. DNs compare RDN by RDN in order, attribute values
        case-insensitively and regardless of their ASN.1 string type (PrintableString from
        one implementation equals UTF8String from another). FQDN and RFC822 compare
        ASCII case-insensitively; everything else byte for byte.
        """
        if self.is_any:
            return True
        if self.id_type != other.id_type:
            return False
        if self.id_type == IdType.DER_ASN1_DN:
            mine, theirs = _dn_key(self.data), _dn_key(other.data)
            return mine is not None and mine == theirs
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.lower() == other.data.lower()
        return self.data == other.data

    # -- display --------------------------------------------------------------------------

    def __str__(self) -> str:
        """Printable form for logs; peer-supplied bytes are escaped, never printed raw."""
        if self.is_any:
            return "%any"
        if self.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return _printable(self.data.decode("ascii", errors="backslashreplace"))
        if self.id_type == IdType.DER_ASN1_DN:
            try:
                return format_dn(_read_dn(self.data))
            except ValueError:
                return f"dn:#{self.data.hex()}"
        if self.id_type == IdType.KEY_ID:
            return f"keyid:{self.data.hex()}"
        return f"{_type_name(self.id_type)}:{self.data.hex()}"


Identity.ANY = Identity(ANY_ID_TYPE, b"")


def _type_name(id_type: int) -> str:
    try:
        return IdType(id_type).name
    except ValueError:
        return f"ID_TYPE_{id_type}"


def _printable(text: str) -> str:
    """Escape control and other non-printable characters so a log line stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


# -- hostnames and e-mail addresses -------------------------------------------------------


def _check_hostname(name: str, original: str) -> bytes:
    if not name or len(name) > 253:
        raise ValueError(f"invalid hostname {original!r}: length must be 1..253")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(
                f"invalid hostname {original!r}: label {label!r} must be 1..63 letters, "
                "digits or '-', not starting or ending with '-'"
            )
    return name.encode("ascii")


def _check_email(text: str) -> bytes:
    local, _, domain = text.rpartition("@")
    if not local or not all(33 <= ord(c) < 127 for c in local):
        raise ValueError(f"invalid e-mail address {text!r}: bad local part {local!r}")
    _check_hostname(domain, text)
    return text.encode("ascii")


# -- DN text -> x509.Name ---------------------------------------------------------------


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where it is not escaped by a backslash."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep and maxsplit != 0:
            parts.append(text[start:i])
            start = i + 1
            maxsplit -= 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(raw: str, dn: str) -> str:
    """An attribute value: RFC 4514 escapes resolved, unescaped outer spaces dropped."""
    raw = raw.lstrip(" ")
    out = bytearray()
    keep = 0  # bytes up to here came from escapes and survive the trailing-space strip
    i = 0
    while i < len(raw):
        if raw[i] != "\\":
            out += raw[i].encode()
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
            out.append(int(pair, 16))
            i += 3
        elif i + 1 < len(raw) and raw[i + 1] in _DN_SPECIALS:
            out += raw[i + 1].encode()
            i += 2
        else:
            raise ValueError(f"invalid DN {dn!r}: bad escape at {raw[i : i + 3]!r}")
        keep = len(out)
    end = len(out)
    while end > keep and out[end - 1] == 0x20:
        end -= 1
    try:
        return out[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"invalid DN {dn!r}: escaped bytes are not UTF-8") from None


def _attribute_oid(key: str, dn: str) -> x509.ObjectIdentifier:
    if _DOTTED_OID.match(key):
        return x509.ObjectIdentifier(key)
    oid = _DN_KEYS.get(key.upper())
    if oid is None:
        raise ValueError(f"invalid DN {dn!r}: unknown attribute {key!r} (use {_KNOWN_KEYS})")
    return oid


def _parse_dn(text: str) -> x509.Name:
    """'CN=hub, O=Example' -> x509.Name with the RDNs in the written order; '+' joins a
    multi-valued RDN. ValueError says what is wrong."""
    rdns = []
    for rdn_text in _split_unescaped(text, ","):
        attrs = []
        for ava in _split_unescaped(rdn_text, "+"):
            key_value = _split_unescaped(ava, "=", maxsplit=1)
            if len(key_value) != 2:
                raise ValueError(f"invalid DN {text!r}: {ava.strip()!r} is not KEY=value")
            key = key_value[0].strip()
            if not key:
                raise ValueError(f"invalid DN {text!r}: attribute without a key")
            value = _unescape(key_value[1], text)
            if not value:
                raise ValueError(f"invalid DN {text!r}: empty value for {key}")
            oid = _attribute_oid(key, text)
            kind, allowed = _RESTRICTED.get(oid, ("", None))
            if allowed is not None and not set(value) <= allowed:
                raise ValueError(f"invalid DN {text!r}: {key}={value!r} is not a valid {kind}")
            try:
                attrs.append(x509.NameAttribute(oid, value))
            except ValueError as e:
                if str(e).startswith("invalid DN"):
                    raise
                raise ValueError(f"invalid DN {text!r}: {key}={value!r}: {e}") from None
        rdns.append(x509.RelativeDistinguishedName(attrs))
    name = x509.Name(rdns)
    try:
        name.public_bytes()
    except ValueError as e:  # e.g. a non-ASCII value for an IA5String attribute
        raise ValueError(f"invalid DN {text!r}: {e}") from None
    return name


# -- DER Name -> attributes (for matching and display) -------------------------------------


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the DER element at ``pos``; ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used in names")
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise ValueError("non-minimal DER length")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER element")
    return tag, data[pos : pos + length], pos + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = _read_tlv(data, pos)
        out.append((tag, value))
    return out


def _decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise ValueError("bad OID")
    arcs, value = [], 0
    for i, byte in enumerate(body):
        if value == 0 and byte == 0x80 and (i == 0 or not body[i - 1] & 0x80):
            raise ValueError("non-minimal OID arc")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _read_dn(der: bytes) -> list[list[_Attr]]:
    """The RDNs of a DER Name, in order; ValueError if it is not a well-formed Name."""
    tag, body, end = _read_tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("a Name is one DER SEQUENCE")
    rdns = []
    for set_tag, rdn in _children(body):
        if set_tag != 0x31:
            raise ValueError("an RDN is a SET")
        attrs: list[_Attr] = []
        for ava_tag, ava in _children(rdn):
            parts = _children(ava)
            if ava_tag != 0x30 or len(parts) != 2 or parts[0][0] != 0x06:
                raise ValueError("an attribute is SEQUENCE { OID, value }")
            (_, oid), (vtag, value) = parts
            codec = _STRING_CODECS.get(vtag)
            try:
                text = value.decode(codec) if codec else None
            except UnicodeDecodeError:
                raise ValueError("attribute value is not valid for its string type") from None
            attrs.append((_decode_oid(oid), vtag, text, value))
        if not attrs:
            raise ValueError("empty RDN")
        rdns.append(attrs)
    return rdns


def _dn_key(der: bytes) -> tuple[frozenset[tuple[str, object]], ...] | None:
    """What DN equality compares: per RDN, its set of (OID, casefolded text or raw value)."""
    try:
        rdns = _read_dn(der)
    except ValueError:
        return None
    return tuple(
        frozenset(
            (oid, text.casefold() if text is not None else (tag, raw))
            for oid, tag, text, raw in rdn
        )
        for rdn in rdns
    )


def _escape_value(text: str) -> str:
    out = []
    for i, c in enumerate(text):
        if c in ',+"\\<>;=' or (c == "#" and i == 0) or (c == " " and i in (0, len(text) - 1)):
            out.append("\\" + c)
        elif not c.isprintable():
            out.append("".join(f"\\{b:02X}" for b in c.encode()))
        else:
            out.append(c)
    return "".join(out)


def format_dn(rdns: list[list[_Attr]]) -> str:
    """'CN=hub, O=Example' in DER order; Identity.parse() reads it back."""
    parts = []
    for rdn in rdns:
        avas = []
        for oid, _tag, text, raw in rdn:
            label = _DN_LABELS.get(oid, oid)
            avas.append(f"{label}={_escape_value(text) if text is not None else '#' + raw.hex()}")
        parts.append("+".join(avas))
    return ", ".join(parts)


def dn_string(name: x509.Name) -> str:
    """An x509.Name as we print DNs ('CN=hub, O=Example', in DER order)."""
    return format_dn(_read_dn(name.public_bytes()))
