"""IkeSession: one IKE SA with a peer, as a sans-I/O protocol object.

The daemon feeds it datagrams and timer ticks (with the time as an argument) and drains
datagrams to send and events. Nothing here reads a clock, opens a socket or starts a thread;
randomness and key exchange are injected so tests replay exchanges byte for byte.

Exchanges live beside this file: init.py (IKE_SA_INIT), auth.py (IKE_AUTH), child.py
(CREATE_CHILD_SA), info.py (INFORMATIONAL). This file owns message IDs, retransmission,
the responder's cache, timers and the event queue.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ike.codec import Header, decode_header, encode_protected, open_protected, unsupported_critical
from ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType, notify_name
from ike.crypto.base import KeyExchangeFactory, RandomSource
from ike.crypto.ke import new_key_exchange
from ike.errors import CryptoError, DecodeError, IkeError
from ike.fragments import fragment
from ike.payloads import Message, NotifyPayload, Payload
from ike.session import events as ev
from ike.session.config import ChildConfig, SessionConfig
from ike.session.state import ChildSa, IkeSa, ResponseCache

Address = tuple[str, int]


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"  # IKE_SA_INIT / IKE_AUTH in progress
    ESTABLISHED = "established"
    DELETING = "deleting"
    CLOSED = "closed"


@dataclass(frozen=True)
class Datagram:
    """An IKE message to send. ``local_port`` picks the socket (500 or 4500); the daemon
    adds the non-ESP marker on the NAT-T port."""

    data: bytes
    local_port: int
    remote: Address


class Task:
    """One request/response exchange we initiate (the charon task model)."""

    exchange: ExchangeType = ExchangeType.INFORMATIONAL
    name = "task"

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload] | None:
        """Payloads of the request, or None when the task has become moot."""
        raise NotImplementedError

    def make_datagrams(self, s: IkeSession, sa: IkeSa, now: float) -> list[bytes] | None:
        payloads = self.build(s, sa, now)
        if payloads is None:
            return None
        msg = Message(sa.spi_i, sa.spi_r, self.exchange, sa.flags_i, sa.next_request_id, payloads)
        return s.protect(sa, msg)

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        raise NotImplementedError

    def on_give_up(self, s: IkeSession, sa: IkeSa, now: float) -> None:
        s.peer_dead(f"no response to {self.name} request", now)


@dataclass
class Pending:
    task: Task
    message_id: int
    datagrams: list[bytes]
    first_sent: float
    next_send: float
    tries: int = 0


@dataclass
class Delayed:
    """A task queued to start no earlier than ``at`` (TEMPORARY_FAILURE back-off)."""

    at: float
    task: Task


NONCE_LEN = 32  # bytes of every nonce we send; the codec bounds received ones (16..256)


def error_notify(msg: Message) -> str | None:
    """Name of the first error notify (type < 16384) in a message, or None."""
    for n in msg.notifies():
        if n.notify_type < 16384:
            return notify_name(n.notify_type)
    return None


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class IkeSession:
    """One IKE SA (and its Child SAs) with one peer, in either role."""

    HALF_OPEN_TIMEOUT = 30.0  # responder: drop an SA whose IKE_AUTH never comes
    MAX_EVENTS = 1024  # bound on undrained events

    def __init__(
        self,
        config: SessionConfig,
        *,
        initiator: bool,
        local_addr: Address,
        remote_addr: Address,
        now: float,
        rng: RandomSource = os.urandom,
        ke_factory: KeyExchangeFactory | None = None,
        spi_alloc: Callable[[], int] | None = None,
        config_resolver: Callable[[Any, Any], SessionConfig | None] | None = None,
        log: Any = None,
    ) -> None:
        self.config = config
        self.initiator = initiator
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.rng = rng
        self.ke_factory: KeyExchangeFactory = ke_factory or new_key_exchange
        self.spi_alloc = spi_alloc or self._random_spi
        self.config_resolver = config_resolver
        self.log = log
        self.state = State.IDLE
        self.created_at = now
        self.sa: IkeSa | None = None
        self.retiring: list[IkeSa] = []  # rekeyed IKE SAs waiting for their DELETE
        self.children: dict[int, ChildSa] = {}
        self.queue: deque[Task] = deque()
        self.delayed: list[Delayed] = []
        self.events: deque[ev.Event] = deque()
        self.outbox: list[Datagram] = []
        self.drops: Counter[str] = Counter()
        self.nat_local = False
        self.nat_remote = False
        # ESP in UDP agreed with a gatewayd peer in IKE_SA_INIT (init.py).
        self.udp_encap_agreed = False
        self.peer_fragmentation = False
        self.peer_hash_algorithms: set[int] | None = None
        self.peer_certreq = b""
        self.peer_initial_contact = False
        # MOBIKE (ike/session/mobike.py): offered by the peer, negotiated, and whether
        # IKE moved to the NAT-T port without a NAT (it stays there, RFC 4555 §3.3).
        self.peer_mobike = False
        self.mobike = False
        self.floated = False
        self.remote_identity: Any = None
        self.last_peer_activity = now
        self.half_open_deadline: float | None = None
        self.init: Any = None  # ike.session.init.InitState while IKE_SA_INIT runs and for AUTH
        self.eap: Any = None  # ike.session.eap.EapState while EAP rounds run in IKE_AUTH
        # (message ID, request, digest) of an IKE_AUTH request whose answer waits for an
        # outside EAP server (RADIUS); eap_answer() sends it.
        self.deferred: tuple[int, Message, bytes] | None = None
        self._next_child_id = 1
        self.close_reason = ""
        self.post_response: list[Callable[[float], None]] = []  # run once a response is sent
        self.ike_collision: Any = None  # a peer's IKE rekey that crossed ours
        # Asked when IKE_AUTH is built: does the owner hold other IKE SAs with this peer?
        # If so we must not send INITIAL_CONTACT (RFC 7296 §2.4), or the peer drops them.
        self.other_sas: Callable[[], bool] | None = None

    # ----------------------------------------------------------------- commands

    def initiate(self, now: float) -> None:
        """Start IKE_SA_INIT (then IKE_AUTH and the configured Child SAs)."""
        from ike.session.init import start_initiator

        if self.state is not State.IDLE:
            raise IkeError(f"cannot initiate in state {self.state.value}")
        self.initiator = True
        start_initiator(self, now)

    def rekey_child(self, child_id: int, now: float) -> None:
        from ike.session.child import CreateChildTask

        child = self.children.get(child_id)
        if child is not None and self.state is State.ESTABLISHED:
            self.enqueue(CreateChildTask(self.child_config(child.name), rekey=child), now)

    def rekey_ike(self, now: float) -> None:
        from ike.session.ikerekey import RekeyIkeTask

        if self.state is State.ESTABLISHED and not self._has_task(RekeyIkeTask):
            self.enqueue(RekeyIkeTask(), now)

    def delete_child(self, child_id: int, now: float) -> None:
        from ike.session.info import DeleteChildTask

        child = self.children.get(child_id)
        if child is not None and self.state is State.ESTABLISHED:
            self.enqueue(DeleteChildTask(child), now)

    def delete(self, now: float, reason: str = "deleted") -> None:
        """Delete the IKE SA and its children (DELETE to the peer, then close)."""
        from ike.session.info import DeleteIkeTask

        if self.state is State.ESTABLISHED:
            self.state = State.DELETING
            self.queue.clear()
            self.enqueue(DeleteIkeTask(reason), now, front=True)
        elif self.state is not State.CLOSED:
            self.close(reason, now)

    def update_addresses(self, local: Address, now: float) -> None:
        """MOBIKE: our own address changed; tell the peer (original initiator only)."""
        from ike.session.mobike import start_update

        start_update(self, local, now)

    def liveness_check(self, now: float) -> None:
        from ike.session.info import DpdTask

        if self.state is State.ESTABLISHED and not self._has_task(DpdTask):
            self.enqueue(DpdTask(), now)

    def eap_answer(self, answer: Any, now: float) -> None:
        """The outside EAP server's answer (ike.eap.method.EapAnswer) to the IKE_AUTH request
        this gateway session deferred (after an EapPending event): send the response."""
        from ike.session import eap
        from ike.session.info import after_response

        deferred, self.deferred = self.deferred, None
        sa = self.sa
        if deferred is None or sa is None or self.eap is None or self.state is State.CLOSED:
            self.drops["late_eap_answer"] += 1
            return
        _, request, digest = deferred
        self.respond(sa, request, eap.resume(self, sa, answer, now), digest)
        after_response(self, sa, now)
        self.kick(now)

    def note_inbound_traffic(self, now: float) -> None:
        """The data path saw authenticated ESP from the peer: it is alive."""
        self.last_peer_activity = max(self.last_peer_activity, now)

    def child_limit_reached(self, child_id: int, now: float) -> None:
        """The data path reports a soft byte/packet/sequence limit: rekey that child."""
        child = self.children.get(child_id)
        if child is not None and child.state.value == "installed":
            self.rekey_child(child_id, now)

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[Datagram]:
        out, self.outbox = self.outbox, []
        return out

    def next_event(self) -> ev.Event | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float | None:
        times: list[float] = []
        for sa in self._sas():
            if sa.pending is not None:
                times.append(sa.pending.next_send)
        times.extend(d.at for d in self.delayed)
        if self.half_open_deadline is not None:
            times.append(self.half_open_deadline)
        current = self.sa
        if self.state is State.ESTABLISHED and current is not None:
            for t in (current.rekey_at, current.expire_at):
                if t is not None:
                    times.append(t)
            for c in self.children.values():
                times.append(c.expire_at)
                if c.state.value == "installed":
                    times.append(c.rekey_at)
            if current.pending is None and not self.queue:
                times.append(self.last_peer_activity + self.config.dpd_interval)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self.half_open_deadline is not None and now >= self.half_open_deadline:
            self.close("IKE_AUTH not completed in time", now)
            return
        for sa in list(self._sas()):
            p = sa.pending
            if p is not None and now >= p.next_send:
                self._retransmit(sa, p, now)
                if self.state is State.CLOSED:
                    return
        due = [d for d in self.delayed if d.at <= now]
        if due:
            self.delayed = [d for d in self.delayed if d.at > now]
            for d in due:
                self.enqueue(d.task, now)
        if self.state is State.ESTABLISHED:
            self._lifetimes(now)
        self.kick(now)

    # ------------------------------------------------------------------- inputs

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """An IKE message from the peer (without the non-ESP marker)."""
        if self.state is State.CLOSED:
            self.drops["closed"] += 1
            return
        try:
            hdr = decode_header(data)
        except DecodeError:
            self.drops["malformed"] += 1
            return
        if hdr.exchange == ExchangeType.IKE_SA_INIT:
            from ike.session.init import receive_init

            receive_init(self, data, hdr, addr, now)
        else:
            sa = self._sa_for(hdr)
            if sa is None or sa.keys is None:
                self.drops["unknown_spi"] += 1
            elif hdr.flags & HeaderFlag.RESPONSE:
                self._on_response(sa, data, hdr, addr, now)
            else:
                self._on_request(sa, data, hdr, addr, now)
        self.kick(now)

    # ------------------------------------------------------------ message plumbing

    def protect(self, sa: IkeSa, msg: Message) -> list[bytes]:
        assert sa.keys is not None
        if self.peer_fragmentation:
            return fragment(msg, sa.keys.crypto_out, self.config.fragment_size)
        return [encode_protected(msg, sa.keys.crypto_out)]

    def _open(self, sa: IkeSa, data: bytes, hdr: Header, is_request: bool) -> Message | None:
        assert sa.keys is not None
        try:
            if hdr.next_payload == PayloadType.SKF:
                frags = sa.request_fragments if is_request else sa.response_fragments
                msg = frags.add(data, sa.keys.crypto_in)
                if msg is None:
                    return None
            else:
                msg = open_protected(data, sa.keys.crypto_in)
        except CryptoError:
            self.drops["bad_icv"] += 1
            return None
        except DecodeError:
            self.drops["malformed"] += 1
            return None
        return msg

    def _on_request(self, sa: IkeSa, data: bytes, hdr: Header, addr: Address, now: float) -> None:
        cache = sa.last_response
        if cache is not None and hdr.message_id == cache.message_id:
            # A retransmitted request: answer from the cache, never process twice.
            # For fragmented requests, fragment 1 alone triggers the resend (RFC 7383 §2.6.1).
            if _digest(data) == cache.request_digest or self._is_first_fragment(data, hdr):
                self.send_raw(cache.datagrams, addr)
            else:
                self.drops["retransmit_mismatch"] += 1
            return
        if self.deferred is not None and hdr.message_id == self.deferred[0]:
            # A retransmit of the request that waits for the EAP backend: no answer yet.
            self.drops["retransmit_while_deferred"] += 1
            return
        if hdr.message_id != sa.expected_request_id:
            self.drops["message_id"] += 1
            return
        msg = self._open(sa, data, hdr, is_request=True)
        if msg is None:
            return
        self._peer_alive(addr, now)
        crit = unsupported_critical(msg.payloads)
        if crit is not None:
            resp: list[Payload] = [
                NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, crit.to_bytes(1, "big"))
            ]
        else:
            from ike.session import mobike

            was_established = self.state is State.ESTABLISHED
            mobike.note_request(self, msg)  # before a deferral: the offer is in the first
            deferred = self._dispatch_request(sa, msg, now)
            if deferred is None:  # the EAP backend answers later: eap_answer() responds
                skf = hdr.next_payload == PayloadType.SKF
                self.deferred = (hdr.message_id, msg, b"" if skf else _digest(data))
                return
            resp = deferred
            resp += mobike.on_request(self, sa, msg, addr, was_established, now)
        # Answer where the request came from (RFC 7296 §2.11), even if that is not the
        # peer's address: only MOBIKE's UPDATE_SA_ADDRESSES moves the SA.
        digest = _digest(data) if hdr.next_payload != PayloadType.SKF else b""
        self.respond(sa, msg, resp, digest, to=addr)
        from ike.session.info import after_response

        after_response(self, sa, now)

    def _dispatch_request(self, sa: IkeSa, msg: Message, now: float) -> list[Payload] | None:
        from ike.session import auth, child, info

        if msg.exchange == ExchangeType.IKE_AUTH:
            return auth.respond(self, sa, msg, now)
        if msg.exchange == ExchangeType.CREATE_CHILD_SA:
            return child.respond(self, sa, msg, now)
        if msg.exchange == ExchangeType.INFORMATIONAL:
            return info.respond(self, sa, msg, now)
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]

    def _is_first_fragment(self, data: bytes, hdr: Header) -> bool:
        if hdr.next_payload != PayloadType.SKF:
            return False
        # SKF generic header (4) then fragment number (2): fragment 1 starts a retransmission.
        return len(data) >= 34 and data[32:34] == b"\x00\x01"

    def respond(
        self,
        sa: IkeSa,
        request: Message,
        payloads: list[Payload],
        digest: bytes,
        to: Address | None = None,
    ) -> None:
        msg = Message(
            sa.spi_i,
            sa.spi_r,
            request.exchange,
            sa.flags_i | HeaderFlag.RESPONSE,
            request.message_id,
            payloads,
        )
        datagrams = self.protect(sa, msg)
        sa.last_response = ResponseCache(request.message_id, digest, datagrams)
        sa.expected_request_id = request.message_id + 1
        self.send_raw(datagrams, to or self.remote_addr)

    def _on_response(self, sa: IkeSa, data: bytes, hdr: Header, addr: Address, now: float) -> None:
        p = sa.pending
        if p is None or hdr.message_id != p.message_id:
            self.drops["unexpected_response"] += 1
            return
        msg = self._open(sa, data, hdr, is_request=False)
        if msg is None:
            return
        sa.pending = None
        self._peer_alive(addr, now)
        p.task.on_response(self, sa, msg, data, now)
        if msg.exchange == ExchangeType.IKE_AUTH:
            from ike.session.mobike import on_response

            on_response(self, msg)

    def _peer_alive(self, addr: Address, now: float) -> None:
        self.last_peer_activity = now
        if addr == self.remote_addr:
            return
        nat_t = self.config.nat_t_port
        if addr[0] == self.remote_addr[0] and addr[1] == nat_t and not self.use_nat_t_port:
            # The peer floated to the NAT-T port without a NAT (a MOBIKE initiator does,
            # RFC 4555 §3.3): follow it, and send from our NAT-T port too.
            self.remote_addr = addr
            self.floated = True
        elif (self.nat_remote or self.nat_local) and not (self.mobike and not self.initiator):
            # The peer's NAT mapping moved (RFC 7296 §2.23): follow authenticated messages.
            # A MOBIKE initiator moves the SA only with UPDATE_SA_ADDRESSES (RFC 4555 §3.5).
            self.remote_addr = addr

    # ------------------------------------------------------------ request sending

    def enqueue(self, task: Task, now: float, front: bool = False) -> None:
        if front:
            self.queue.appendleft(task)
        else:
            self.queue.append(task)
        self.kick(now)

    def delay(self, task: Task, at: float) -> None:
        self.delayed.append(Delayed(at, task))

    def _has_task(self, cls: type) -> bool:
        sa = self.sa
        active = sa is not None and sa.pending is not None and isinstance(sa.pending.task, cls)
        return (
            active
            or any(isinstance(t, cls) for t in self.queue)
            or any(isinstance(d.task, cls) for d in self.delayed)
        )

    def kick(self, now: float) -> None:
        """Start the next queued task when the window (size 1) is free."""
        sa = self.sa
        while self.queue and sa is not None and sa.pending is None and sa.keys is not None:
            if self.state not in (State.ESTABLISHED, State.DELETING, State.CONNECTING):
                return
            task = self.queue.popleft()
            self.start_task(sa, task, now)
            sa = self.sa

    def start_task(self, sa: IkeSa, task: Task, now: float) -> None:
        datagrams = task.make_datagrams(self, sa, now)
        if datagrams is None:
            return
        policy = self.config.retransmit
        sa.pending = Pending(task, sa.next_request_id, datagrams, now, now + policy.timeout)
        sa.next_request_id += 1
        self.send_raw(datagrams, self.remote_addr)

    def _give_up_at(self, p: Pending) -> float:
        """``give_up`` seconds after the request was first sent, or after the peer's last
        sign of life when that came earlier: a liveness check sent after ``dpd_interval``
        of silence declares the peer dead ``give_up`` (the site's dpd_timeout) seconds
        after it went silent, not ``dpd_interval`` later."""
        return min(p.first_sent, self.last_peer_activity) + self.config.retransmit.give_up

    def _retransmit(self, sa: IkeSa, p: Pending, now: float) -> None:
        policy = self.config.retransmit
        deadline = self._give_up_at(p)
        if now >= deadline:
            sa.pending = None
            if sa is self.sa:
                p.task.on_give_up(self, sa, now)
            else:
                self.retiring = [r for r in self.retiring if r is not sa]
            return
        p.tries += 1
        p.next_send = min(now + policy.timeout * policy.base**p.tries, deadline)
        self.send_raw(p.datagrams, self.remote_addr)

    def send_raw(self, datagrams: list[bytes], remote: Address) -> None:
        port = self.config.nat_t_port if self.use_nat_t_port else self.local_addr[1]
        self.outbox.extend(Datagram(d, port, remote) for d in datagrams)

    @property
    def force_udp_encap(self) -> bool:
        """ESP in UDP even without a NAT (we fake NAT-D): configured, or agreed."""
        return self.config.force_udp_encap or self.udp_encap_agreed

    @property
    def use_nat_t_port(self) -> bool:
        """After a NAT is detected both sides float to port 4500 (RFC 7296 §2.23)."""
        return (
            self.nat_local
            or self.nat_remote
            or self.floated
            or self.local_addr[1] == self.config.nat_t_port
        )

    # ------------------------------------------------------------ helpers for exchanges

    def emit(self, event: ev.Event) -> None:
        if len(self.events) < self.MAX_EVENTS:
            self.events.append(event)
        if self.log is not None:
            self.log(event)

    def new_child_id(self) -> int:
        cid = self._next_child_id
        self._next_child_id += 1
        return cid

    def child_config(self, name: str) -> ChildConfig:
        for c in self.config.children:
            if c.name == name:
                return c
        return self.config.children[0]

    def child_by_spi_out(self, spi: int) -> ChildSa | None:
        for c in self.children.values():
            if c.spi_out == spi:
                return c
        return None

    def random_fraction(self) -> float:
        """A number in [0, 1] from the injected random source."""
        return int.from_bytes(self.rng(2), "big") / 65535.0

    def jitter(self, span: float) -> float:
        """Up to config.jitter of ``span``: spreads rekeys so both peers rarely collide."""
        return span * self.config.jitter * self.random_fraction()

    def _random_spi(self) -> int:
        while True:
            spi = int.from_bytes(self.rng(4), "big")
            if spi >= 256:  # 1..255 are reserved by IANA
                return spi

    def _sas(self) -> list[IkeSa]:
        return ([self.sa] if self.sa is not None else []) + self.retiring

    def _sa_for(self, hdr: Header) -> IkeSa | None:
        for sa in self._sas():
            if sa.spi_i == hdr.spi_i and sa.spi_r == hdr.spi_r:
                return sa
        return None

    def _lifetimes(self, now: float) -> None:
        from ike.session.child import CreateChildTask
        from ike.session.info import DeleteChildTask, DpdTask

        sa = self.sa
        assert sa is not None
        if sa.expire_at is not None and now >= sa.expire_at:
            self.delete(now, reason="IKE SA lifetime expired")
            return
        if sa.rekey_at is not None and now >= sa.rekey_at:
            sa.rekey_at = None
            self.rekey_ike(now)
        for c in list(self.children.values()):
            if now >= c.expire_at and c.state.value != "deleting":
                self.enqueue(DeleteChildTask(c), now)
                c.expire_at = float("inf")
            elif now >= c.rekey_at and c.state.value == "installed":
                c.rekey_at = float("inf")
                self.enqueue(CreateChildTask(self.child_config(c.name), rekey=c), now)
        idle = now - self.last_peer_activity
        quiet = sa.pending is None and not self.queue
        if idle >= self.config.dpd_interval and quiet and not self._has_task(DpdTask):
            self.enqueue(DpdTask(), now)

    # ------------------------------------------------------------------ ending

    def peer_dead(self, reason: str, now: float) -> None:
        self.emit(ev.PeerDead(reason))
        self.close("peer dead: " + reason, now)

    def close(self, reason: str, now: float) -> None:
        """Forget every SA (without telling the peer) and report it."""
        if self.state is State.CLOSED:
            return
        for c in list(self.children.values()):
            self.emit(ev.ChildSaDown(c.child_id, c.spi_in, c.spi_out, reason))
        self.children.clear()
        if self.sa is not None and self.sa.keys is not None:
            self.emit(ev.IkeSaDown(self.sa.spi_i, self.sa.spi_r, reason))
        self.state = State.CLOSED
        self.close_reason = reason
        self.queue.clear()
        self.delayed.clear()
        self.half_open_deadline = None
        for sa in self._sas():
            sa.pending = None
        self.retiring.clear()

    # ------------------------------------------------------------------ status

    @property
    def spis(self) -> tuple[bytes, bytes] | None:
        return (self.sa.spi_i, self.sa.spi_r) if self.sa is not None else None

    def describe_state(self) -> dict[str, Any]:
        sa = self.sa
        return {
            "state": self.state.value,
            "spi_i": sa.spi_i.hex() if sa else None,
            "spi_r": sa.spi_r.hex() if sa else None,
            "children": len(self.children),
            "drops": dict(self.drops),
        }


__all__ = ["Datagram", "IkeSession", "Pending", "State", "Task", "field"]
