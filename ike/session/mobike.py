"""MOBIKE (RFC 4555): an IKE SA and its Child SAs survive a change of the peer's address.

Negotiation: both sides put MOBIKE_SUPPORTED in IKE_AUTH (the initiator in its first
request, the responder in its final response, which is where strongSwan looks for it).

Only the original initiator moves (§3.2). It sends an INFORMATIONAL request with
UPDATE_SA_ADDRESSES, fresh NAT detection hashes for the new path and a COOKIE2 (§3.5,
§3.7). The responder, and only after the request authenticated, takes the request's
source as the peer's address, redoes NAT detection (ESP in UDP or plain ESP), answers to
the new address with its own NAT detection and the COOKIE2 echoed, and emits
PeerAddressChanged. A message merely arriving from elsewhere moves nothing: a MOBIKE
responder does not follow NAT mapping changes by itself as RFC 7296 §2.23 would
(session._peer_alive); it answers NAT detection in liveness checks instead (§3.8), so
an initiator behind a NAT sees its mapping move and sends an update.

ADDITIONAL_IP4/6_ADDRESS and NO_ADDITIONAL_ADDRESSES are accepted and ignored: we never
pick a path ourselves, so nothing of them is stored.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ike.constants import ExchangeType, NotifyType
from ike.errors import IkeError
from ike.payloads import Message, NotifyPayload, Payload
from ike.session import events as ev
from ike.session.init import nat_hash, our_nat_notifies
from ike.session.session import State, Task
from ike.session.state import IkeSa

if TYPE_CHECKING:
    from ike.session.session import Address, IkeSession

COOKIE2_MIN, COOKIE2_MAX = 8, 64  # RFC 4555 §4.2.5
COOKIE2_LEN = 16
MAX_NAT_HASHES = 8  # a peer behind several addresses may send a few; more are ignored


# ------------------------------------------------------------------------- negotiation


def auth_request_notifies(s: IkeSession) -> list[Payload]:
    """MOBIKE_SUPPORTED for our first IKE_AUTH request (initiator).

    Not offered from behind a NAT: a MOBIKE responder stops following NAT mapping
    changes by itself (§3.5), and this initiator does not watch for them (§3.8), so a
    rebinding NAT would cut the peer's traffic to us."""
    if s.config.mobike and not s.nat_local:
        return [NotifyPayload(NotifyType.MOBIKE_SUPPORTED)]
    return []


def _supported(msg: Message) -> bool:
    return msg.notify(NotifyType.MOBIKE_SUPPORTED) is not None


def note_request(s: IkeSession, msg: Message) -> None:
    """Called by the session before it handles a request: does the peer offer MOBIKE?"""
    if msg.exchange == ExchangeType.IKE_AUTH and _supported(msg):
        s.peer_mobike = True


def on_request(
    s: IkeSession, sa: IkeSa, msg: Message, src: Address, was_established: bool, now: float
) -> list[Payload]:
    """Called by the session after a request was handled: MOBIKE's part of the response."""
    if msg.exchange == ExchangeType.IKE_AUTH:
        just_up = not was_established and s.state is State.ESTABLISHED
        if just_up and s.config.mobike and s.peer_mobike:
            s.mobike = True
            return [NotifyPayload(NotifyType.MOBIKE_SUPPORTED)]
        return []
    if msg.exchange != ExchangeType.INFORMATIONAL or s.state is not State.ESTABLISHED:
        return []
    if msg.notify(NotifyType.UPDATE_SA_ADDRESSES) is not None:
        return _update(s, sa, msg, src, now)
    if s.mobike and msg.notify(NotifyType.NAT_DETECTION_SOURCE_IP) is not None:
        # A MOBIKE initiator behind a NAT checks its mapping with NAT detection in a
        # liveness check (§3.8): say where we see it; it sends an update if that moved.
        return our_nat_notifies(s, sa.spi_i, sa.spi_r, current_local(s), src)
    return []


def on_response(s: IkeSession, msg: Message) -> None:
    """Called by the session after an IKE_AUTH response: did the peer agree to MOBIKE?"""
    if msg.exchange != ExchangeType.IKE_AUTH or not s.config.mobike:
        return
    if _supported(msg):
        s.peer_mobike = True
        if s.state is State.ESTABLISHED:
            s.mobike = True


# ------------------------------------------------------------------------- both roles


def current_local(s: IkeSession) -> Address:
    """Our address and the port we send IKE from now (4500 once floated)."""
    port = s.config.nat_t_port if s.use_nat_t_port else s.local_addr[1]
    return (s.local_addr[0], port)


def _hashes(msg: Message, kind: NotifyType) -> list[bytes]:
    found = [n.data for n in msg.notifies() if n.notify_type == kind]
    return found[:MAX_NAT_HASHES]


def _redetect_nat(s: IkeSession, sa: IkeSa, msg: Message, peer: Address) -> bool:
    """NAT detection over the new path (RFC 4555 §3.5); True when NAT-D was present."""
    src = _hashes(msg, NotifyType.NAT_DETECTION_SOURCE_IP)
    dst = _hashes(msg, NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not src and not dst:
        # No NAT traversal on this SA: ESP goes unencapsulated (unless forced).
        s.nat_remote = False
        s.nat_local = s.force_udp_encap
        return False
    s.nat_remote = bool(src) and nat_hash(sa.spi_i, sa.spi_r, peer) not in src
    s.nat_local = bool(dst) and nat_hash(sa.spi_i, sa.spi_r, current_local(s)) not in dst
    if s.force_udp_encap:
        s.nat_local = True
    return True


def _udp(s: IkeSession) -> bool:
    return s.nat_local or s.nat_remote


# ---------------------------------------------------------------------------- responder


def _update(s: IkeSession, sa: IkeSa, msg: Message, src: Address, now: float) -> list[Payload]:
    if not s.mobike or s.initiator:
        # Not negotiated, or the peer is the original responder, which may not move
        # the SA (RFC 4555 §3.2): answer, change nothing.
        s.drops["mobike_refused"] += 1
        return []
    cookie = msg.notify(NotifyType.COOKIE2)
    if cookie is not None and not COOKIE2_MIN <= len(cookie.data) <= COOKIE2_MAX:
        s.drops["malformed"] += 1
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    old, old_udp = s.remote_addr, _udp(s)
    if src[1] == s.config.nat_t_port:
        s.floated = True  # the peer is on 4500: so are we, from now on (RFC 4555 §3.3)
    s.remote_addr = src
    nat_t = _redetect_nat(s, sa, msg, src)
    payloads: list[Payload] = []
    if nat_t:
        payloads += our_nat_notifies(s, sa.spi_i, sa.spi_r, current_local(s), src)
    if cookie is not None:
        payloads.append(NotifyPayload(NotifyType.COOKIE2, cookie.data))
    if old != src or old_udp != _udp(s):
        s.emit(ev.PeerAddressChanged(old, src, _udp(s)))
    return payloads


# ---------------------------------------------------------------------------- initiator


def start_update(s: IkeSession, local: Address, now: float) -> None:
    """Our address changed to ``local``: tell the peer (RFC 4555 §3.5)."""
    if s.state is not State.ESTABLISHED:
        raise IkeError(f"cannot update addresses in state {s.state.value}")
    if not s.initiator:
        raise IkeError("only the original initiator may update the SA's addresses")
    if not s.mobike:
        raise IkeError("MOBIKE was not negotiated with this peer")
    old = s.remote_addr
    s.local_addr = local
    # Move IKE to the NAT-T port for good (RFC 4555 §3.3): a NAT found on the new path
    # must not need a second update from another port.
    s.floated = True
    s.remote_addr = (s.remote_addr[0], s.config.nat_t_port)
    # A queued update builds its payloads when sent, so it already carries the new
    # address; one already on the wire is followed by a second (§3.5).
    if not any(isinstance(t, UpdateAddressesTask) for t in s.queue):
        s.enqueue(UpdateAddressesTask(old), now, front=True)


class UpdateAddressesTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL (UPDATE_SA_ADDRESSES)"

    def __init__(self, old_remote: Address) -> None:
        self.cookie2 = b""
        self.old_remote = old_remote  # for the event: where the SA ran before

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        self.cookie2 = s.rng(COOKIE2_LEN)
        return [
            NotifyPayload(NotifyType.UPDATE_SA_ADDRESSES),
            *our_nat_notifies(s, sa.spi_i, sa.spi_r, current_local(s), s.remote_addr),
            NotifyPayload(NotifyType.COOKIE2, self.cookie2),
        ]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        echo = msg.notify(NotifyType.COOKIE2)
        if echo is None or not hmac.compare_digest(echo.data, self.cookie2):
            # §3.7: a response without our cookie does not answer this update.
            s.drops["cookie2_mismatch"] += 1
            return
        old = self.old_remote
        if _redetect_nat(s, sa, msg, s.remote_addr) and _udp(s):
            s.remote_addr = (s.remote_addr[0], s.config.nat_t_port)  # float, as in §2.23
            s.floated = True
        # Emitted even when the peer's address stayed: our side moved, and the
        # encapsulation may have changed with it.
        s.emit(ev.PeerAddressChanged(old, s.remote_addr, _udp(s)))
