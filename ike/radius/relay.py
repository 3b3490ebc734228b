"""EAP pass-through to a RADIUS server for every client session of one gateway (RFC 3579).

Sans-I/O: the daemon hands over each ``EapPending`` of a session (``submit``), sends what
``datagrams_to_send`` gives to the server, feeds back datagrams (``receive``) and timer
ticks (``handle_timer``), and passes each resulting ``EapAnswer`` to its session with
``IkeSession.eap_answer``. The conversation's State attribute travels with the session
(``EapAnswer.context``), so nothing here grows with the number of clients beyond the
requests in flight.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

from ike.eap.method import MSK_LEN, EapAnswer
from ike.eap.packets import FAILURE, REQUEST, SUCCESS, Eap
from ike.errors import DecodeError
from ike.radius import authenticator as ra
from ike.radius.client import Address, RadiusClient, Reply
from ike.radius.packet import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    CALLED_STATION_ID,
    CALLING_STATION_ID,
    FRAMED_MTU,
    MAX_VALUE,
    MS_MPPE_RECV_KEY,
    MS_MPPE_SEND_KEY,
    NAS_IDENTIFIER,
    NAS_IP_ADDRESS,
    NAS_IPV6_ADDRESS,
    NAS_PORT_TYPE,
    NAS_PORT_TYPE_VIRTUAL,
    REPLY_MESSAGE,
    SERVICE_TYPE,
    SERVICE_TYPE_FRAMED,
    STATE,
    USER_NAME,
    VENDOR_MICROSOFT,
    join_eap,
    split_eap,
)
from ike.session.events import EapPending

FRAMED_MTU_VALUE = 1400  # RFC 3579 §2.4: EAP packets the server sends must fit this


@dataclass(frozen=True)
class Outcome:
    key: Hashable
    answer: EapAnswer


def _int(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _printable(raw: bytes, limit: int = 120) -> str:
    text = raw.decode("utf-8", "replace")[:limit]
    return "".join(c if c.isprintable() else "?" for c in text)


class RadiusEapRelay:
    def __init__(self, client: RadiusClient, nas_identifier: str = "gatewayd") -> None:
        self.client = client
        self.nas_identifier = nas_identifier.encode()[:MAX_VALUE]
        self.results: Counter[str] = Counter()  # accept / reject / challenge / timeout / error

    @property
    def server_name(self) -> str:
        host, port = self.client.server
        return f"{host}:{port}"

    # ------------------------------------------------------------------ requests

    def attributes(self, pending: EapPending) -> list[tuple[int, bytes]]:
        """The Access-Request's attributes (Message-Authenticator is the client's job)."""
        attrs = [
            (USER_NAME, pending.identity.encode()[:MAX_VALUE]),
            *split_eap(pending.eap_message),
            (NAS_IDENTIFIER, self.nas_identifier),
            (SERVICE_TYPE, _int(SERVICE_TYPE_FRAMED)),
            (NAS_PORT_TYPE, _int(NAS_PORT_TYPE_VIRTUAL)),
            (FRAMED_MTU, _int(FRAMED_MTU_VALUE)),
            (CALLING_STATION_ID, pending.remote_addr[0].encode()),
            (CALLED_STATION_ID, pending.local_addr[0].encode()),
        ]
        try:
            local = ipaddress.ip_address(pending.local_addr[0])
        except ValueError:
            local = None
        if local is not None and not local.is_unspecified:
            attrs.append((NAS_IP_ADDRESS if local.version == 4 else NAS_IPV6_ADDRESS, local.packed))
        if pending.context:
            attrs.append((STATE, pending.context[:MAX_VALUE]))
        return attrs

    def submit(self, key: Hashable, pending: EapPending, now: float) -> Outcome | None:
        """Relay one EAP response; an Outcome at once only when it cannot be sent."""
        try:
            queued = self.client.request(key, self.attributes(pending), now)
        except ValueError:
            return self._error(key, "EAP response too long to relay in one RADIUS packet")
        if not queued:
            return self._error(key, f"RADIUS server {self.server_name}: too many requests queued")
        return None

    def forget(self, key: Hashable) -> None:
        """The session went away: drop its request (a late answer is counted and ignored)."""
        self.client.cancel(key)

    # ------------------------------------------------------------------ I/O plumbing

    def datagrams_to_send(self) -> list[bytes]:
        return self.client.datagrams_to_send()

    def get_timer(self) -> float | None:
        return self.client.get_timer()

    def handle_timer(self, now: float) -> list[Outcome]:
        c = self.client
        why = (
            f"RADIUS server {self.server_name} did not answer "
            f"({c.tries} tries, {c.timeout:g} s apart)"
        )
        out = [Outcome(key, EapAnswer(error=why)) for key in c.handle_timer(now)]
        self.results["timeout"] += len(out)
        return out

    def receive(self, data: bytes, addr: Address, now: float) -> Outcome | None:
        reply = self.client.receive(data, addr, now)
        if reply is None:
            return None
        return Outcome(reply.key, self._answer(reply))

    @property
    def drops(self) -> Counter[str]:
        return self.client.drops

    # ------------------------------------------------------------------ answers

    def _error(self, key: Hashable, why: str) -> Outcome:
        self.results["error"] += 1
        return Outcome(key, EapAnswer(error=why))

    def _answer(self, reply: Reply) -> EapAnswer:
        p = reply.packet
        try:
            eap = join_eap(p)
            pkt = Eap.decode(eap) if eap is not None else None
        except DecodeError as e:
            self.results["error"] += 1
            return EapAnswer(error=f"RADIUS server {self.server_name} sent bad EAP: {e}")
        if p.code == ACCESS_CHALLENGE:
            self.results["challenge"] += 1
            if eap is None or pkt is None or pkt.code != REQUEST:
                return EapAnswer(error="Access-Challenge without an EAP request")
            return EapAnswer(message=eap, context=p.get(STATE) or b"")
        if p.code == ACCESS_ACCEPT:
            self.results["accept"] += 1
            if pkt is not None and pkt.code != SUCCESS:
                return EapAnswer(error="Access-Accept without EAP-Success")
            try:
                msk = self._msk(reply)
            except DecodeError as e:
                return EapAnswer(error=f"Access-Accept: {e}")
            success = eap if eap is not None else b""
            named = p.get(USER_NAME)
            identity = named.decode("utf-8", "replace") if named is not None else None
            return EapAnswer(message=success, msk=msk, identity=identity)
        self.results["reject"] += 1
        why = f"RADIUS server {self.server_name} rejected the user (Access-Reject)"
        msg = p.get(REPLY_MESSAGE)
        if msg:
            why += f": {_printable(msg)}"
        if pkt is not None and pkt.code != FAILURE:
            why += " (without EAP-Failure)"
        return EapAnswer(error=why)

    def _msk(self, reply: Reply) -> bytes:
        """MSK = MS-MPPE-Recv-Key | MS-MPPE-Send-Key (RFC 2548), zero-padded to 64 octets
        (EAP-MSCHAPv2 gives 16 + 16, and its MSK is exactly that plus 32 zeros)."""
        p, secret, auth = reply.packet, self.client.secret, reply.request_authenticator
        recv = p.vendor(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY)
        send = p.vendor(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY)
        if len(recv) != 1 or len(send) != 1:
            raise DecodeError("no MS-MPPE-Recv-Key/MS-MPPE-Send-Key (EAP method without a key?)")
        msk = b"".join(ra.decrypt_mppe_key(k[0], secret, auth) for k in (recv, send))
        if len(msk) < 32:
            raise DecodeError("MS-MPPE keys too short")
        return msk + bytes(max(0, MSK_LEN - len(msk)))
