"""Routes IKE datagrams to sessions by SPI and admits new responder sessions.

Half-open SAs (IKE_SA_INIT answered, IKE_AUTH not yet seen) are what a spoofing attacker
can make us store, so they are bounded; above a threshold new initiators must return a
stateless COOKIE first (RFC 7296 §2.6) before we keep any state for them. An IKE_SA_INIT
of a higher major version gets a stateless INVALID_MAJOR_VERSION (§2.5). Stateless answers
are rate-limited and never larger than the request, so they cannot be used to amplify.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections import Counter
from collections.abc import Callable

from ike.codec import Header, UnsupportedVersion, decode, decode_header, encode
from ike.constants import IKE_VERSION, ExchangeType, HeaderFlag, NotifyType
from ike.crypto.base import RandomSource
from ike.errors import DecodeError
from ike.payloads import Message, NoncePayload, NotifyPayload
from ike.session.session import Datagram, IkeSession, State

Address = tuple[str, int]
SessionFactory = Callable[[Address, Address, float], IkeSession | None]

COOKIE_SECRET_LIFETIME = 120.0  # rotate the cookie secret; the previous one stays valid


class Dispatcher:
    def __init__(
        self,
        new_responder: SessionFactory,
        *,
        rng: RandomSource = os.urandom,
        max_half_open: int = 5000,
        cookie_threshold: int = 500,
        max_sessions: int = 100_000,
        stateless_rate: int = 1000,
        max_replies: int = 1000,
    ) -> None:
        self.new_responder = new_responder
        self.rng = rng
        self.max_half_open = max_half_open
        self.cookie_threshold = cookie_threshold
        self.max_sessions = max_sessions
        self.stateless_rate = stateless_rate  # stateless answers per second, at most
        self.max_replies = max_replies  # bound on undrained ``replies``
        self.by_spi: dict[bytes, IkeSession] = {}  # our SPI (spi_i if we initiated, else spi_r)
        self.half_open: dict[tuple[bytes, Address], IkeSession] = {}
        self._spis_of: dict[IkeSession, set[bytes]] = {}  # what register() put in by_spi
        self.drops: Counter[str] = Counter()
        # Stateless answers (cookies, INVALID_MAJOR_VERSION). local_port 0: send from the
        # socket the request came in on.
        self.replies: list[Datagram] = []
        self._secrets: list[tuple[int, bytes]] = []
        self._secret_at = -1e18
        self._secret_version = 0
        self._rate_second = -math.inf
        self._rate_count = 0

    # ------------------------------------------------------------ registry

    def register(self, session: IkeSession) -> None:
        """Track a session under our SPI (call again after an IKE rekey)."""
        sa = session.sa
        if sa is None:
            return
        ours = sa.spi_i if sa.initiator else sa.spi_r
        if any(c == 0 for c in [len(ours)]) or ours == bytes(8):
            return
        current = {ours, *(old.spi_i if old.initiator else old.spi_r for old in session.retiring)}
        # SPIs of IKE SAs rekeyed away and deleted: drop them, or the table grows forever.
        for spi in self._spis_of.get(session, set()) - current:
            if self.by_spi.get(spi) is session:
                del self.by_spi[spi]
        for spi in current:
            self.by_spi[spi] = session
        self._spis_of[session] = current

    def forget(self, session: IkeSession) -> None:
        for spi in self._spis_of.pop(session, set()):
            if self.by_spi.get(spi) is session:
                del self.by_spi[spi]
        for key in [k for k, v in self.half_open.items() if v is session]:
            del self.half_open[key]

    @property
    def half_open_count(self) -> int:
        return len(self.half_open)

    # ------------------------------------------------------------ routing

    def receive(self, data: bytes, addr: Address, now: float) -> IkeSession | None:
        """Hand a datagram to its session (creating a responder if it starts one)."""
        try:
            hdr = decode_header(data)
        except UnsupportedVersion as e:
            self._wrong_version(e.header, len(data), addr, now)
            return None
        except DecodeError:
            self.drops["malformed"] += 1
            return None
        response = bool(hdr.flags & HeaderFlag.RESPONSE)
        from_initiator = bool(hdr.flags & HeaderFlag.INITIATOR)
        # Our SPI is the responder's one in messages from the original initiator.
        ours = hdr.spi_r if from_initiator else hdr.spi_i
        session = self.by_spi.get(ours)
        if session is None and hdr.exchange == ExchangeType.IKE_SA_INIT:
            if response:
                session = self.by_spi.get(hdr.spi_i)
            else:
                session = self.half_open.get((hdr.spi_i, addr))
                if session is None:
                    session = self._admit(data, hdr.spi_i, addr, now)
                    if session is None:
                        return None
        if session is None:
            self.drops["unknown_spi"] += 1
            return None
        session.receive_datagram(data, addr, now)
        self.after(session)
        return session

    def after(self, session: IkeSession) -> None:
        """Update the tables after a session did something (call after commands too)."""
        if session.state is State.CLOSED:
            self.forget(session)
            return
        if session.state is State.ESTABLISHED:
            for key in [k for k, v in self.half_open.items() if v is session]:
                del self.half_open[key]
        self.register(session)

    def _admit(self, data: bytes, spi_i: bytes, addr: Address, now: float) -> IkeSession | None:
        if len(self.by_spi) >= self.max_sessions or len(self.half_open) >= self.max_half_open:
            self.drops["half_open_limit"] += 1
            return None
        if len(self.half_open) >= self.cookie_threshold and not self._cookie_ok(data, addr, now):
            return None
        session = self.new_responder(addr, addr, now)
        if session is None:
            self.drops["no_config"] += 1
            return None
        self.half_open[(spi_i, addr)] = session
        return session

    # ------------------------------------------------------------ stateless answers

    def _send_stateless(
        self, answer: Message, request_len: int, addr: Address, now: float, kind: str
    ) -> None:
        """Queue an answer that keeps no state, within the rate, queue and size bounds."""
        raw = encode(answer)
        second = math.floor(now)
        if second != self._rate_second:
            self._rate_second, self._rate_count = second, 0
        if (
            len(raw) > request_len  # a spoofed source must not get more than it sent
            or self._rate_count >= self.stateless_rate
            or len(self.replies) >= self.max_replies
        ):
            self.drops["stateless_limit"] += 1
            return
        self._rate_count += 1
        self.replies.append(Datagram(raw, 0, addr))
        self.drops[kind] += 1

    def _wrong_version(self, hdr: Header, request_len: int, addr: Address, now: float) -> None:
        """RFC 7296 §2.5: drop it; a newer initiator learns our version from the answer."""
        self.drops["unsupported_version"] += 1
        newer = hdr.version >> 4 > IKE_VERSION >> 4
        if not newer or hdr.exchange != ExchangeType.IKE_SA_INIT or hdr.flags & HeaderFlag.RESPONSE:
            return
        # Our version (2.0) goes in the header; the notify carries no data (§3.10.1).
        answer = Message(
            hdr.spi_i,
            hdr.spi_r,
            ExchangeType.IKE_SA_INIT,
            HeaderFlag.RESPONSE,
            hdr.message_id,
            [NotifyPayload(NotifyType.INVALID_MAJOR_VERSION)],
        )
        self._send_stateless(answer, request_len, addr, now, "invalid_major_version_sent")

    # ------------------------------------------------------------ cookies

    def _secret(self, now: float) -> tuple[int, bytes]:
        if now - self._secret_at >= COOKIE_SECRET_LIFETIME:
            self._secret_version = (self._secret_version + 1) & 0xFFFF
            self._secrets = [(self._secret_version, self.rng(32)), *self._secrets[:1]]
            self._secret_at = now
        return self._secrets[0]

    @staticmethod
    def _cookie(version: int, secret: bytes, nonce: bytes, addr: Address, spi_i: bytes) -> bytes:
        mac = hmac.digest(secret, nonce + addr[0].encode() + spi_i, hashlib.sha256)
        return version.to_bytes(2, "big") + mac

    def _cookie_ok(self, data: bytes, addr: Address, now: float) -> bool:
        """True if the request carries a valid cookie; else queue a COOKIE answer."""
        try:
            msg = decode(data)
        except DecodeError:
            self.drops["malformed"] += 1
            return False
        nonce = msg.get(NoncePayload)
        if nonce is None:
            self.drops["malformed"] += 1
            return False
        self._secret(now)
        first = msg.payloads[0] if msg.payloads else None
        if (
            isinstance(first, NotifyPayload)
            and first.notify_type == NotifyType.COOKIE
            and len(first.data) >= 2
        ):
            version = int.from_bytes(first.data[:2], "big")
            for v, secret in self._secrets:
                if v == version and hmac.compare_digest(
                    first.data, self._cookie(v, secret, nonce.nonce, addr, msg.spi_i)
                ):
                    return True
            self.drops["bad_cookie"] += 1
        v, secret = self._secrets[0]
        cookie = self._cookie(v, secret, nonce.nonce, addr, msg.spi_i)
        answer = Message(
            msg.spi_i,
            bytes(8),
            ExchangeType.IKE_SA_INIT,
            HeaderFlag.RESPONSE,
            0,
            [NotifyPayload(NotifyType.COOKIE, cookie)],
        )
        self._send_stateless(answer, len(data), addr, now, "cookie_sent")
        return False
