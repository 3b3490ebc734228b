"""EAP-Identity then EAP-MSCHAPv2, as the gateway (server) and as a client (peer), and
the gateway's EAP backends.

Each side is a small state machine fed one EAP packet at a time; no I/O, randomness
injected. On success both ends hold the same 64-octet MSK for the IKE AUTH payload.

The gateway's IKE_AUTH code talks to an ``EapBackend``: ``LocalEapBackend`` answers at
once from the users file (EapServer); ``RelayEapBackend`` asks the client's identity
itself, then hands every further response to an outside server (RADIUS, RFC 3579) and
answers later, when the daemon feeds the server's ``EapAnswer`` back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ike.eap import mschapv2 as ms
from ike.eap.packets import (
    FAILURE,
    OP_CHALLENGE,
    OP_RESPONSE,
    OP_SUCCESS,
    REQUEST,
    RESPONSE,
    SUCCESS,
    TYPE_IDENTITY,
    TYPE_MSCHAPV2,
    TYPE_NAK,
    Eap,
    mschap,
    parse_mschap,
)
from ike.errors import AuthenticationError, DecodeError

UserLookup = Callable[[str], bytes | None]
# EAP methods that authenticate the EAP-Identity itself (the server looks that name's
# credentials up): MD5-Challenge, GTC, MSCHAPv2. Others need the server to name the user.
OUTER_NAME_METHODS = frozenset({4, 6, TYPE_MSCHAPV2})  # user name -> NT hash, None if unknown

MSK_LEN = 64  # RFC 3748 §7.10: at least 64 octets
MAX_IDENTITY = 253  # what one RADIUS User-Name attribute holds


@dataclass(frozen=True)
class EapAnswer:
    """An outside server's answer to the client's last EAP response (deferred backends)."""

    # The EAP packet for the client: the next request, or Success.
    message: bytes = field(default=b"", repr=False)
    # With Success: the key the AUTH payloads are computed with (never in a repr or log).
    msk: bytes | None = field(default=None, repr=False)
    error: str | None = None  # refused, unreachable or broken: why (logged, never sent)
    context: bytes = field(default=b"", repr=False)  # server state to echo (RADIUS State)
    # With Success: the user the server authenticated (RADIUS User-Name in Access-Accept),
    # if it named one. Tunneled methods (PEAP, TTLS, EAP-TLS) authenticate an inner
    # identity, so the outer EAP-Identity alone proves nothing.
    identity: str | None = None


class EapBackend(Protocol):
    """The gateway's side of EAP for one client session."""

    @property
    def username(self) -> str:
        """The client's EAP identity ("" until known)."""
        ...

    @property
    def msk(self) -> bytes | None:
        """The key, once EAP succeeded."""
        ...

    @property
    def context(self) -> bytes:
        """Deferred backends: the server's state to echo with the next response."""
        ...

    def start(self) -> bytes:
        """The first EAP request (an EAP-Identity request)."""
        ...

    def step(self, raw: bytes) -> bytes | None:
        """The next EAP packet for the client, or None when the answer comes later
        through ``resume``. Raises AuthenticationError with the reason to log."""
        ...

    def resume(self, answer: EapAnswer) -> bytes:
        """A deferred step's answer: the EAP packet for the client, or AuthenticationError."""
        ...

    def failure(self) -> bytes:
        """An EAP-Failure for the client."""
        ...


class LocalEapBackend:
    """EAP-MSCHAPv2 against the users file: every answer is immediate."""

    context = b""

    def __init__(self, server: EapServer) -> None:
        self.server = server

    @property
    def username(self) -> str:
        return self.server.username

    @property
    def msk(self) -> bytes | None:
        return self.server.msk

    def start(self) -> bytes:
        return self.server.start().encode()

    def step(self, raw: bytes) -> bytes:
        return self.server.step(raw).encode()

    def resume(self, answer: EapAnswer) -> bytes:
        raise AuthenticationError("EAP: an answer arrived but none was pending")

    def failure(self) -> bytes:
        return self.server.failure().encode()


class RelayEapBackend:
    """EAP pass-through: EAP-Identity here, then every response of the client goes to an
    outside server (the daemon relays ``pending``), whatever method that server speaks.

    Only the EAP framing is checked here: codes, identifiers, that Success comes with a
    key; the method itself is between the client and the server."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self.identifier = rng(1)[0]
        self.username = ""
        self.msk: bytes | None = None
        self.context = b""
        self.pending: bytes | None = None  # the client's response waiting for the server
        self.methods: set[int] = set()  # the EAP types the server asked the client for

    def start(self) -> bytes:
        return Eap(REQUEST, self.identifier, TYPE_IDENTITY, b"").encode()

    def step(self, raw: bytes) -> bytes | None:
        try:
            pkt = Eap.decode(raw)
        except DecodeError as e:
            raise AuthenticationError(f"EAP: {e}") from e
        if pkt.code != RESPONSE or pkt.identifier != self.identifier or self.msk is not None:
            raise AuthenticationError("EAP: unexpected packet (not a response to our request)")
        if self.username == "":
            if pkt.type != TYPE_IDENTITY:
                raise AuthenticationError("EAP: expected an EAP-Identity response")
            name = pkt.data.decode("utf-8", "replace")
            if not name or len(pkt.data) > MAX_IDENTITY or not name.isprintable():
                raise AuthenticationError("EAP: unusable EAP-Identity")
            self.username = name
        self.pending = raw
        return None

    def resume(self, answer: EapAnswer) -> bytes:
        self.pending = None
        if answer.error is not None:
            raise AuthenticationError(answer.error)
        message = answer.message
        if not message and answer.msk is not None:
            # An accept that carries keys but no EAP-Success: say it to the client ourselves.
            message = Eap(SUCCESS, self.identifier).encode()
        try:
            pkt = Eap.decode(message)
        except DecodeError as e:
            raise AuthenticationError(f"EAP from the server: {e}") from e
        self.context = answer.context
        if pkt.code == REQUEST:
            self.identifier = pkt.identifier
            if len(self.methods) < 8:
                self.methods.add(pkt.type)
            return message
        if pkt.code == SUCCESS:
            if answer.msk is None or len(answer.msk) < 32:
                raise AuthenticationError("EAP-Success from the server without a key (MSK)")
            self.username = self._authenticated_name(answer.identity)
            self.msk = answer.msk
            return message
        if pkt.code == FAILURE:
            raise AuthenticationError(f"EAP-Failure from the server for user '{self.username}'")
        raise AuthenticationError("EAP: the server sent a response, not a request")

    def _authenticated_name(self, named: str | None) -> str:
        """Who logged in: the name the server gave, or the EAP-Identity when every method
        the server ran checks the credentials of that very name (not a tunnel's inner one)."""
        if named is not None:
            if not named or len(named) > MAX_IDENTITY or not named.isprintable():
                raise AuthenticationError("the RADIUS server named an unusable user")
            return named
        if self.methods and self.methods <= OUTER_NAME_METHODS:
            return self.username
        raise AuthenticationError(
            f"the RADIUS server accepted EAP method(s) {sorted(self.methods)} without naming "
            "the user: its Access-Accept must carry User-Name (the outer EAP-Identity of a "
            "tunneled method proves nothing)"
        )

    def failure(self) -> bytes:
        return Eap(FAILURE, self.identifier).encode()


class ChoosingEapBackend:
    """Local users and RADIUS together: a user of the users file logs in here, anyone
    else is relayed to the server. Decided on the EAP-Identity, before any method runs."""

    def __init__(self, users: UserLookup, rng: Callable[[int], bytes], name: bytes) -> None:
        self.users = users
        self.rng = rng
        self.name = name
        self.relay = RelayEapBackend(rng)
        self.local: LocalEapBackend | None = None

    @property
    def _active(self) -> EapBackend:
        return self.local if self.local is not None else self.relay

    @property
    def username(self) -> str:
        return self._active.username

    @property
    def msk(self) -> bytes | None:
        return self._active.msk

    @property
    def context(self) -> bytes:
        return self._active.context

    def start(self) -> bytes:
        return self.relay.start()

    def step(self, raw: bytes) -> bytes | None:
        if self.local is not None:
            return self.local.step(raw)
        if self.relay.username:
            return self.relay.step(raw)
        out = self.relay.step(raw)  # checks the EAP-Identity response
        if self.users(self.relay.username) is None:
            return out
        server = EapServer(self.users, self.rng, self.name)
        server.identifier = self.relay.identifier  # it answered our identity request
        self.local = LocalEapBackend(server)
        return self.local.step(raw)

    def resume(self, answer: EapAnswer) -> bytes:
        return self._active.resume(answer)

    def failure(self) -> bytes:
        return self._active.failure()


def relay_backend(session: Any) -> RelayEapBackend:
    """``SessionConfig.eap_backend`` for EAP pass-through (RADIUS): one per session."""
    return RelayEapBackend(session.rng)


def backend_factory(
    users: UserLookup | None, radius: bool, name: str
) -> Callable[[Any], EapBackend] | None:
    """``SessionConfig.eap_backend`` for a gateway's EAP settings: the users file
    ("eap-mschapv2"), RADIUS ("eap-radius"), or both (users file first). None: no EAP."""
    if users is not None and radius:
        return lambda s: ChoosingEapBackend(users, s.rng, name.encode())
    if users is not None:
        return lambda s: LocalEapBackend(EapServer(users, s.rng, name.encode()))
    return relay_backend if radius else None


class EapServer:
    """The gateway's side. ``step`` raises AuthenticationError with the reason to log."""

    def __init__(self, users: UserLookup, rng: Callable[[int], bytes], name: bytes) -> None:
        self.users = users
        self.rng = rng
        self.name = name
        self.identifier = rng(1)[0]
        self.username = ""
        self.challenge = b""
        self.nt_hash: bytes | None = None
        self.msk: bytes | None = None
        self._stage = "identity"

    def _request(self, type_: int, data: bytes) -> Eap:
        self.identifier = (self.identifier + 1) & 0xFF
        return Eap(REQUEST, self.identifier, type_, data)

    def _mschap_request(self, op: int, body: bytes) -> Eap:
        # The MS-CHAPv2-ID follows the EAP identifier, as peers expect.
        ident = (self.identifier + 1) & 0xFF
        return self._request(TYPE_MSCHAPV2, mschap(op, ident, body))

    def start(self) -> Eap:
        return self._request(TYPE_IDENTITY, b"")

    def failure(self) -> Eap:
        return Eap(FAILURE, self.identifier)

    def step(self, raw: bytes) -> Eap:
        try:
            pkt = Eap.decode(raw)
        except DecodeError as e:
            raise AuthenticationError(f"EAP: {e}") from e
        if pkt.code != RESPONSE or pkt.identifier != self.identifier:
            raise AuthenticationError("EAP: unexpected packet (not a response to our request)")
        if pkt.type == TYPE_NAK:
            raise AuthenticationError("EAP: client refused EAP-MSCHAPv2 (NAK)")
        if self._stage == "identity" and pkt.type == TYPE_IDENTITY:
            self.username = pkt.data.decode("utf-8", "replace")
            self.challenge = self.rng(16)
            self._stage = "challenge"
            body = bytes([16]) + self.challenge + self.name
            return self._mschap_request(OP_CHALLENGE, body)
        if pkt.type != TYPE_MSCHAPV2:
            raise AuthenticationError(f"EAP: unexpected method {pkt.type}")
        op, _, body = _parse(pkt.data)
        if self._stage == "challenge" and op == OP_RESPONSE:
            return self._check_response(body)
        if self._stage == "success" and op == OP_SUCCESS:
            self._stage = "done"
            return Eap(SUCCESS, self.identifier)
        raise AuthenticationError(f"EAP-MSCHAPv2: unexpected opcode {op}")

    def _check_response(self, body: bytes) -> Eap:
        if len(body) < 50 or body[0] != 49:
            raise AuthenticationError("EAP-MSCHAPv2: malformed response")
        peer_challenge, nt_resp = body[1:17], body[25:49]
        name = body[50:]
        nt_hash = self.users(self.username)
        if nt_hash is None:
            raise AuthenticationError(f"EAP-MSCHAPv2: unknown user '{self.username}'")
        expected = ms.nt_response(self.challenge, peer_challenge, name, nt_hash)
        if not ms.equal(expected, nt_resp):
            raise AuthenticationError(f"EAP-MSCHAPv2: wrong password for user '{self.username}'")
        self.nt_hash = nt_hash
        self.msk = ms.msk(nt_hash, nt_resp)
        self._stage = "success"
        auth = ms.authenticator_response(nt_hash, nt_resp, peer_challenge, self.challenge, name)
        return self._mschap_request(OP_SUCCESS, auth + b" M=OK")


class EapClient:
    """A remote-access client's side, with name and password (for tests and profiles)."""

    def __init__(self, username: str, password: str, rng: Callable[[int], bytes]) -> None:
        self.username = username.encode()
        self.nt_hash = ms.nt_password_hash(password)
        self.rng = rng
        self.expected_auth = b""
        self.msk: bytes | None = None
        self.succeeded = False

    def step(self, raw: bytes) -> Eap | None:
        """Our answer to a request, None after EAP-Success; AuthenticationError on failure."""
        try:
            pkt = Eap.decode(raw)
        except DecodeError as e:
            raise AuthenticationError(f"EAP: {e}") from e
        if pkt.code == FAILURE:
            raise AuthenticationError("gateway sent EAP-Failure: user name or password refused")
        if pkt.code == SUCCESS:
            if self.msk is None:
                raise AuthenticationError("EAP-Success before MS-CHAPv2 completed")
            self.succeeded = True
            return None
        if pkt.code != REQUEST:
            raise AuthenticationError("EAP: expected a request")
        if pkt.type == TYPE_IDENTITY:
            return Eap(RESPONSE, pkt.identifier, TYPE_IDENTITY, self.username)
        if pkt.type != TYPE_MSCHAPV2:
            return Eap(RESPONSE, pkt.identifier, TYPE_NAK, bytes([TYPE_MSCHAPV2]))
        op, ms_id, body = _parse(pkt.data)
        if op == OP_CHALLENGE and len(body) >= 17 and body[0] == 16:
            return self._respond(pkt.identifier, ms_id, body[1:17])
        if op == OP_SUCCESS and self.expected_auth:
            if not ms.equal(body[:42], self.expected_auth):
                raise AuthenticationError("EAP-MSCHAPv2: gateway's authenticator response is wrong")
            return Eap(RESPONSE, pkt.identifier, TYPE_MSCHAPV2, bytes([OP_SUCCESS]))
        raise AuthenticationError(f"EAP-MSCHAPv2: unexpected opcode {op}")

    def _respond(self, identifier: int, ms_id: int, challenge: bytes) -> Eap:
        peer_challenge = self.rng(16)
        nt_resp = ms.nt_response(challenge, peer_challenge, self.username, self.nt_hash)
        self.expected_auth = ms.authenticator_response(
            self.nt_hash, nt_resp, peer_challenge, challenge, self.username
        )
        self.msk = ms.msk(self.nt_hash, nt_resp)
        body = bytes([49]) + peer_challenge + bytes(8) + nt_resp + b"\x00" + self.username
        return Eap(RESPONSE, identifier, TYPE_MSCHAPV2, mschap(OP_RESPONSE, ms_id, body))


def _parse(data: bytes) -> tuple[int, int, bytes]:
    try:
        return parse_mschap(data)
    except DecodeError as e:
        raise AuthenticationError(f"EAP-MSCHAPv2: {e}") from e
