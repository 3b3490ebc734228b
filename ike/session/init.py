"""IKE_SA_INIT in both roles (RFC 7296 §1.2, §2.6 cookies, §2.23 NAT detection)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ike.codec import Header, decode, encode, unsupported_critical
from ike.constants import (
    CertEncoding,
    ExchangeType,
    HeaderFlag,
    NotifyType,
    TransformType,
)
from ike.crypto.keymat import derive_ike_keys
from ike.crypto.proposals import check_choice, describe, select_proposal
from ike.crypto.suite import IkeSuite
from ike.errors import CryptoError, DecodeError, ProposalError
from ike.payloads import (
    CertReqPayload,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    VendorPayload,
)
from ike.session import events as ev
from ike.session.session import NONCE_LEN, Datagram, State, Task, error_notify
from ike.session.state import IkeSa, IkeSaKeys, ResponseCache

if TYPE_CHECKING:
    from ike.session.session import IkeSession

ZERO_SPI = bytes(8)


@dataclass
class InitState:
    """What IKE_SA_INIT leaves for IKE_AUTH: both raw messages and the nonces."""

    nonce: bytes
    ke: Any = None
    group: int = 0
    cookie: bytes | None = None
    rounds: int = 0
    request: bytes = b""  # the IKE_SA_INIT request as sent (AUTH signs it)
    response: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


def numbered(proposals: list[Proposal], spi: bytes = b"") -> list[Proposal]:
    return [Proposal(i + 1, p.protocol, spi, list(p.transforms)) for i, p in enumerate(proposals)]


def offers(proposals: list[Proposal]) -> str:
    return ", ".join(describe(p) for p in proposals) or "none"


@functools.lru_cache(maxsize=1024)  # parsing the text address costs more than the hash
def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def nat_hash(spi_i: bytes, spi_r: bytes, addr: tuple[str, int]) -> bytes:
    ip = _packed(addr[0])
    return hashlib.sha1(spi_i + spi_r + ip + addr[1].to_bytes(2, "big")).digest()  # noqa: S324 - RFC 7296 mandates SHA-1 here


def nat_notifies(
    spi_i: bytes, spi_r: bytes, src: tuple[str, int], dst: tuple[str, int]
) -> list[Payload]:
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, nat_hash(spi_i, spi_r, src)),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(spi_i, spi_r, dst)),
    ]


def detect_nat(
    s: IkeSession, msg: Message, spi_i: bytes, spi_r: bytes, peer: tuple[str, int]
) -> None:
    """Compare the peer's NAT_DETECTION hashes with what we see (RFC 7296 §2.23)."""
    src = [n.data for n in msg.notifies() if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    dst = [
        n.data for n in msg.notifies() if n.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP
    ]
    if src:
        s.nat_remote = nat_hash(spi_i, spi_r, peer) not in src
    if dst:
        s.nat_local = nat_hash(spi_i, spi_r, s.local_addr) not in dst
    if s.force_udp_encap:
        s.nat_local = True


def our_nat_notifies(
    s: IkeSession, spi_i: bytes, spi_r: bytes, src: tuple[str, int], dst: tuple[str, int]
) -> list[Payload]:
    """NAT detection notifies; with force_udp_encap the source hash is random, so both
    sides see a NAT in front of us and carry ESP in UDP (RFC 7296 §2.23 allows this)."""
    notes = nat_notifies(spi_i, spi_r, src, dst)
    if s.force_udp_encap:
        notes[0] = NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, s.rng(20))
    return notes


# Our Vendor ID: "gatewayd, and ESP in UDP preferred" (see SessionConfig).
GATEWAYD_VENDOR_ID = hashlib.sha256(b"gatewayd: ESP in UDP preferred").digest()[:16]


def vendor_ids(s: IkeSession) -> list[Payload]:
    return [VendorPayload(GATEWAYD_VENDOR_ID)] if s.config.udp_encap_with_gatewayd else []


def agree_udp_encap(s: IkeSession, msg: Message) -> None:
    """Responder: a gatewayd initiator that prefers ESP in UDP gets it, when we do too."""
    if s.config.udp_encap_with_gatewayd and any(
        isinstance(p, VendorPayload) and p.vid == GATEWAYD_VENDOR_ID for p in msg.payloads
    ):
        s.udp_encap_agreed = True


def capability_notifies(s: IkeSession) -> list[Payload]:
    from ike.auth.signature import our_hash_algorithms

    algs = b"".join(a.to_bytes(2, "big") for a in our_hash_algorithms())
    return [
        NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, algs),
    ]


def note_capabilities(s: IkeSession, msg: Message) -> None:
    s.peer_fragmentation = msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    sha = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if sha is not None:
        data = sha.data[: 2 * 32]  # bounded: at most 32 algorithms are looked at
        s.peer_hash_algorithms = {
            int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)
        }
    certreqs = [p for p in msg.payloads if isinstance(p, CertReqPayload)]
    s.peer_certreq = b"".join(
        c.data for c in certreqs if c.encoding == CertEncoding.X509_SIGNATURE
    )[:4096]


def certreq_payloads(s: IkeSession) -> list[Payload]:
    trust = s.config.trust
    if s.config.remote_auth != "pubkey" or trust is None:
        return []
    return [CertReqPayload(CertEncoding.X509_SIGNATURE, trust.certreq_data())]


def install_ike_keys(
    s: IkeSession, sa: IkeSa, chosen: Proposal, shared: bytes, we_initiated: bool
) -> None:
    suite = IkeSuite.from_proposal(chosen)
    encr_len, integ_len = suite.key_lengths
    _, keys = derive_ike_keys(
        suite.prf, encr_len, integ_len, shared, sa.ni, sa.nr, sa.spi_i, sa.spi_r
    )
    sa.keys = IkeSaKeys(suite, keys, we_initiated, s.rng)
    sa.proposal = chosen


# ---------------------------------------------------------------- initiator


def start_initiator(s: IkeSession, now: float) -> None:
    s.sa = IkeSa(spi_i=s.rng(8), spi_r=ZERO_SPI, initiator=True)
    first_group = _ke_groups(s.config.ike_proposals)
    s.init = InitState(nonce=s.rng(NONCE_LEN), group=first_group[0] if first_group else 0)
    s.sa.ni = s.init.nonce
    s.state = State.CONNECTING
    s.start_task(s.sa, InitTask(), now)


def _ke_groups(proposals: list[Proposal]) -> list[int]:
    groups: list[int] = []
    for p in proposals:
        for t in p.of_type(TransformType.KE):
            if t.id not in groups:
                groups.append(t.id)
    return groups


class InitTask(Task):
    exchange = ExchangeType.IKE_SA_INIT
    name = "IKE_SA_INIT"

    def make_datagrams(self, s: IkeSession, sa: IkeSa, now: float) -> list[bytes] | None:
        st: InitState = s.init
        if st.ke is None or st.ke.group != st.group:
            st.ke = s.ke_factory(st.group)
        payloads: list[Payload] = []
        if st.cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, st.cookie))  # must come first
        payloads += [
            SaPayload(numbered(s.config.ike_proposals)),
            KePayload(st.group, st.ke.public_bytes()),
            NoncePayload(st.nonce),
            *our_nat_notifies(s, sa.spi_i, ZERO_SPI, s.local_addr, s.remote_addr),
            *capability_notifies(s),
            *vendor_ids(s),
        ]
        sa.next_request_id = 0
        st.request = encode(
            Message(sa.spi_i, ZERO_SPI, self.exchange, HeaderFlag.INITIATOR, 0, payloads)
        )
        return [st.request]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        st: InitState = s.init
        cookie = msg.notify(NotifyType.COOKIE)
        if cookie is not None:
            self._retry(s, sa, now, "cookie", cookie=cookie.data[:64])
            return
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            group = int.from_bytes(invalid_ke.data[:2], "big")
            if group not in _ke_groups(s.config.ike_proposals) or group == st.group:
                fail(s, f"peer asks for KE group {group}, which we did not offer", now)
                return
            self._retry(s, sa, now, "INVALID_KE_PAYLOAD", group=group)
            return
        error = error_notify(msg)
        if error is not None:
            fail(s, f"peer answered {error}; our offers: {offers(s.config.ike_proposals)}", now)
            return
        sa_p = msg.get(SaPayload)
        ke_p = msg.get(KePayload)
        nonce_p = msg.get(NoncePayload)
        if sa_p is None or ke_p is None or nonce_p is None or msg.spi_r == ZERO_SPI:
            fail(s, "IKE_SA_INIT response lacks SA, KE or Nonce", now)
            return
        if len(sa_p.proposals) != 1 or not check_choice(
            sa_p.proposals[0], numbered(s.config.ike_proposals)
        ):
            fail(s, "peer chose a proposal we did not offer", now)
            return
        chosen = sa_p.proposals[0]
        suite = IkeSuite.from_proposal(chosen)
        if ke_p.group != suite.ke_group or ke_p.group != st.group:
            fail(s, f"KE group {ke_p.group} does not match the chosen proposal", now)
            return
        try:
            shared = st.ke.finish(ke_p.data)
        except CryptoError as e:
            fail(s, f"bad KE value from peer: {e}", now)
            return
        sa.spi_r = msg.spi_r
        sa.nr = nonce_p.nonce
        install_ike_keys(s, sa, chosen, shared, we_initiated=True)
        st.response = raw
        st.ke = None  # the private value is not needed any more
        detect_nat(s, msg, sa.spi_i, sa.spi_r, s.remote_addr)
        if s.nat_local or s.nat_remote:
            s.remote_addr = (s.remote_addr[0], s.config.nat_t_port)
        note_capabilities(s, msg)
        from ike.session.auth import AuthTask

        s.start_task(sa, AuthTask(), now)

    def _retry(self, s: IkeSession, sa: IkeSa, now: float, why: str, **change: Any) -> None:
        st: InitState = s.init
        st.rounds += 1
        if st.rounds > s.config.max_init_retries:
            fail(s, f"too many IKE_SA_INIT retries ({why})", now)
            return
        if "cookie" in change:
            st.cookie = change["cookie"]
        if "group" in change:
            st.group = change["group"]
        s.start_task(sa, InitTask(), now)

    def on_give_up(self, s: IkeSession, sa: IkeSa, now: float) -> None:
        s.peer_dead("no response to IKE_SA_INIT", now)


def fail(s: IkeSession, reason: str, now: float) -> None:
    s.emit(ev.NegotiationFailed(reason))
    s.close(reason, now)


# ---------------------------------------------------------------- responder


def receive_init(
    s: IkeSession, data: bytes, hdr: Header, addr: tuple[str, int], now: float
) -> None:
    sa = s.sa
    if hdr.flags & HeaderFlag.RESPONSE:
        p = sa.pending if sa is not None else None
        if (
            sa is None
            or p is None
            or not isinstance(p.task, InitTask)
            or hdr.spi_i != sa.spi_i
            or hdr.message_id != 0
        ):
            s.drops["unexpected_response"] += 1
            return
        try:
            msg = decode(data)
        except DecodeError:
            s.drops["malformed"] += 1
            return
        sa.pending = None
        p.task.on_response(s, sa, msg, data, now)
        return
    if s.initiator:
        s.drops["unexpected_request"] += 1
        return
    if sa is not None:
        cache = sa.last_response
        if (
            cache is not None
            and cache.message_id == 0
            and hashlib.sha256(data).digest() == cache.request_digest
        ):
            s.outbox.extend(Datagram(d, s.local_addr[1], addr) for d in cache.datagrams)
        else:
            s.drops["unexpected_request"] += 1
        return
    respond_init(s, data, hdr, addr, now)


def _answer(s: IkeSession, hdr: Header, payloads: list[Payload], spi_r: bytes = ZERO_SPI) -> bytes:
    msg = Message(hdr.spi_i, spi_r, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0, payloads)
    raw = encode(msg)
    # IKE_SA_INIT is answered from the port it came to, even when a NAT was just detected.
    s.outbox.append(Datagram(raw, s.local_addr[1], s.remote_addr))
    return raw


def respond_init(
    s: IkeSession, data: bytes, hdr: Header, addr: tuple[str, int], now: float
) -> None:
    try:
        msg = decode(data)
    except DecodeError:
        s.drops["malformed"] += 1
        s.close("malformed IKE_SA_INIT", now)
        return
    if hdr.message_id != 0 or hdr.spi_r != ZERO_SPI or not (hdr.flags & HeaderFlag.INITIATOR):
        s.drops["malformed"] += 1
        s.close("malformed IKE_SA_INIT", now)
        return
    s.remote_addr = addr
    crit = unsupported_critical(msg.payloads)
    if crit is not None:
        _answer(s, hdr, [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([crit]))])
        s.close("unsupported critical payload", now)
        return
    sa_p, ke_p, nonce_p = msg.get(SaPayload), msg.get(KePayload), msg.get(NoncePayload)
    if sa_p is None or ke_p is None or nonce_p is None:
        _answer(s, hdr, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        s.close("IKE_SA_INIT without SA, KE or Nonce", now)
        return
    chosen = select_proposal(sa_p.proposals, numbered(s.config.ike_proposals))
    if chosen is None:
        _answer(s, hdr, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
        fail(
            s,
            f"no IKE proposal chosen: peer offered {offers(sa_p.proposals)}; "
            f"we accept {offers(s.config.ike_proposals)}",
            now,
        )
        return
    suite = IkeSuite.from_proposal(chosen)
    if ke_p.group != suite.ke_group:
        # Stateless: the peer retries with the group we want, and a new session answers.
        _answer(
            s,
            hdr,
            [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, suite.ke_group.to_bytes(2, "big"))],
        )
        s.close(f"INVALID_KE_PAYLOAD: peer sent group {ke_p.group}, we want {suite.ke_group}", now)
        return
    try:
        ke = s.ke_factory(suite.ke_group)
        ke_data, shared = ke.respond(ke_p.data)
    except (CryptoError, ProposalError) as e:
        _answer(s, hdr, [NotifyPayload(NotifyType.INVALID_SYNTAX)])
        s.close(f"bad KE payload: {e}", now)
        return
    sa = IkeSa(
        spi_i=hdr.spi_i, spi_r=s.rng(8), initiator=False, ni=nonce_p.nonce, nr=s.rng(NONCE_LEN)
    )
    s.sa = sa
    s.state = State.CONNECTING
    install_ike_keys(s, sa, chosen, shared, we_initiated=False)
    agree_udp_encap(s, msg)
    detect_nat(s, msg, sa.spi_i, ZERO_SPI, addr)
    note_capabilities(s, msg)
    payloads: list[Payload] = [
        SaPayload([Proposal(chosen.num, chosen.protocol, b"", list(chosen.transforms))]),
        KePayload(suite.ke_group, ke_data),
        NoncePayload(sa.nr),
        *our_nat_notifies(s, sa.spi_i, sa.spi_r, s.local_addr, addr),
        *capability_notifies(s),
        # We accept an IKE_AUTH without a Child SA; strongSwan's childless=force needs this.
        NotifyPayload(NotifyType.CHILDLESS_IKEV2_SUPPORTED),  # RFC 6023 §3
        *certreq_payloads(s),
        *vendor_ids(s),
    ]
    raw = _answer(s, hdr, payloads, sa.spi_r)
    s.init = InitState(nonce=sa.nr, request=data, response=raw)
    sa.last_response = ResponseCache(0, hashlib.sha256(data).digest(), [raw])
    sa.expected_request_id = 1
    s.half_open_deadline = now + s.HALF_OPEN_TIMEOUT
