"""EAP-Identity then EAP-MSCHAPv2, as the gateway (server) and as a client (peer).

Each side is a small state machine fed one EAP packet at a time; no I/O, randomness
injected. On success both ends hold the same 64-octet MSK for the IKE AUTH payload.
"""

from __future__ import annotations

from collections.abc import Callable

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

UserLookup = Callable[[str], bytes | None]  # user name -> NT hash, None if unknown


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
