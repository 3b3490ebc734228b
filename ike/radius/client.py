"""A sans-I/O RADIUS client: identifiers, retransmission, response verification.

One client talks to one server from one socket, so at most 256 requests can be
outstanding (the Identifier is one octet); more wait in a bounded queue. A request is
sent up to ``tries`` times, ``timeout`` seconds apart, with the same Identifier and
Request Authenticator (RFC 5080 §2.2.1), then reported as timed out. A response is
accepted only from the server's address and port, for an outstanding Identifier, with a
correct Response Authenticator and Message-Authenticator; anything else is dropped and
counted in ``drops``.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ike.errors import DecodeError
from ike.radius import authenticator as ra
from ike.radius.packet import (
    ACCESS_REQUEST,
    HEADER_LEN,
    MAX_PACKET,
    MAX_VALUE,
    MESSAGE_AUTHENTICATOR,
    RESPONSE_CODES,
    Packet,
    decode,
)

Address = tuple[str, int]


@dataclass
class Outstanding:
    key: Hashable  # the caller's handle (e.g. its session)
    identifier: int
    request_authenticator: bytes
    data: bytes
    first_sent: float
    next_send: float
    sent: int = 1


@dataclass(frozen=True)
class Reply:
    """An authentic response, with what decrypting its attributes needs."""

    key: Hashable
    packet: Packet
    request_authenticator: bytes


@dataclass
class _Queued:
    key: Hashable
    attributes: list[tuple[int, bytes]]
    since: float


class RadiusClient:
    def __init__(
        self,
        server: Address,
        secret: bytes,
        *,
        timeout: float = 3.0,
        tries: int = 3,
        max_queued: int = 4096,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("RADIUS secret must not be empty")
        self.server = server
        self.secret = secret
        self.timeout = timeout
        self.tries = max(1, tries)
        self.max_queued = max_queued
        self.rng = rng
        self.outstanding: dict[int, Outstanding] = {}
        self.by_key: dict[Hashable, int] = {}
        self.queue: deque[_Queued] = deque()
        self.outbox: list[bytes] = []
        self.drops: Counter[str] = Counter()
        self.sent = 0
        self.retransmitted = 0
        self.last_now = 0.0  # the latest time we were given: cancel() has none of its own
        self._next_id = rng(1)[0]

    @property
    def give_up_after(self) -> float:
        return self.timeout * self.tries

    # ------------------------------------------------------------------ requests

    def request(self, key: Hashable, attributes: list[tuple[int, bytes]], now: float) -> bool:
        """Send an Access-Request for ``key`` (one outstanding per key: a new one replaces
        the old). ``attributes`` must not contain Message-Authenticator; it is added first.
        False when the queue is full (the caller fails the request at once); ValueError
        when the attributes do not fit one packet."""
        if any(len(v) > MAX_VALUE for _, v in attributes):
            raise ValueError("RADIUS attribute value longer than 253 octets")
        if HEADER_LEN + 18 + sum(len(v) + 2 for _, v in attributes) > MAX_PACKET:
            raise ValueError("RADIUS request would exceed 4096 octets")
        self.last_now = max(self.last_now, now)
        self.cancel(key)
        if len(self.outstanding) < 256:
            self._send(key, attributes, now)
            return True
        if len(self.queue) >= self.max_queued:
            self.drops["queue_full"] += 1
            return False
        self.queue.append(_Queued(key, attributes, now))
        return True

    def cancel(self, key: Hashable) -> None:
        """Forget ``key``'s request (its session went away); a late answer is dropped."""
        ident = self.by_key.pop(key, None)
        if ident is not None:
            del self.outstanding[ident]
            self._drain_queue(self.last_now)
        if self.queue and any(q.key == key for q in self.queue):
            self.queue = deque(q for q in self.queue if q.key != key)

    def _free_identifier(self) -> int:
        for _ in range(256):
            ident = self._next_id
            self._next_id = (self._next_id + 1) & 0xFF
            if ident not in self.outstanding:
                return ident
        raise AssertionError("no free RADIUS identifier")  # callers check the count

    def _send(self, key: Hashable, attributes: list[tuple[int, bytes]], now: float) -> None:
        ident = self._free_identifier()
        auth = self.rng(16)
        # Message-Authenticator first: servers that check it first resist Blast-RADIUS.
        attrs = [(MESSAGE_AUTHENTICATOR, bytes(16)), *attributes]
        data = ra.sign_request(Packet(ACCESS_REQUEST, ident, auth, attrs), self.secret)
        self.outstanding[ident] = Outstanding(key, ident, auth, data, now, now + self.timeout)
        self.by_key[key] = ident
        self.outbox.append(data)
        self.sent += 1

    def _drain_queue(self, now: float) -> None:
        while self.queue and len(self.outstanding) < 256:
            q = self.queue.popleft()
            self._send(q.key, q.attributes, now)

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        times = [o.next_send for o in self.outstanding.values()]
        if self.queue:
            times.append(self.queue[0].since + self.give_up_after)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Hashable]:
        """Retransmit what is due; return the keys whose requests timed out."""
        self.last_now = max(self.last_now, now)
        expired: list[Hashable] = []
        for o in list(self.outstanding.values()):
            if now < o.next_send:
                continue
            if o.sent >= self.tries:
                del self.outstanding[o.identifier]
                del self.by_key[o.key]
                expired.append(o.key)
                continue
            o.sent += 1
            o.next_send = now + self.timeout
            self.outbox.append(o.data)
            self.retransmitted += 1
        # Queued too long behind a full window: as good as unanswered.
        while self.queue and now >= self.queue[0].since + self.give_up_after:
            expired.append(self.queue.popleft().key)
        self._drain_queue(now)
        return expired

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, addr: Address, now: float) -> Reply | None:
        """A datagram from the network: the Reply it authentically answers, else None."""
        self.last_now = max(self.last_now, now)
        if (addr[0], addr[1]) != self.server:
            self.drops["unknown_source"] += 1
            return None
        try:
            packet = decode(data)
        except DecodeError:
            self.drops["malformed"] += 1
            return None
        if packet.code not in RESPONSE_CODES:
            self.drops["unexpected_code"] += 1
            return None
        o = self.outstanding.get(packet.identifier)
        if o is None:
            self.drops["unknown_identifier"] += 1
            return None
        why = ra.verify_response(packet, self.secret, o.request_authenticator)
        if why is not None:
            self.drops[why] += 1
            return None
        del self.outstanding[o.identifier]
        del self.by_key[o.key]
        self._drain_queue(now)
        return Reply(o.key, packet, o.request_authenticator)
