"""EAP rounds inside IKE_AUTH (RFC 7296 §2.16), both roles.

The client's first IKE_AUTH request has no AUTH payload; the gateway answers with its
own (certificate) AUTH and an EAP request, and EAP messages go back and forth in further
IKE_AUTH exchanges. After EAP-Success both sides send AUTH computed like a PSK AUTH with
the EAP MSK as key, over the signed octets of their first IKE_AUTH message. SA, TS and CP
of the client's first request are answered only in the final response.

The gateway's EAP side is a backend (ike.eap.method.EapBackend). The local one answers
at once; a relaying one (RADIUS) answers later: the request is then deferred (no
response, retransmits absorbed by the session), an EapPending event asks the daemon to
relay it, and ``IkeSession.eap_answer`` brings the server's answer back to ``resume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ike.auth.identity import Identity
from ike.auth.psk import psk_auth_data, signed_octets, verify_psk
from ike.constants import AuthMethod, ExchangeType, NotifyType, PayloadType
from ike.eap.method import EapAnswer, EapBackend, EapClient, EapServer, LocalEapBackend
from ike.eap.packets import Eap
from ike.errors import AuthenticationError
from ike.payloads import AuthPayload, EapPayload, IdPayload, Message, NotifyPayload, Payload
from ike.session import events as ev
from ike.session.config import SessionConfig
from ike.session.session import Task
from ike.session.state import IkeSa

if TYPE_CHECKING:
    from ike.session.child import ChildRequest
    from ike.session.session import IkeSession


@dataclass
class EapState:
    """The gateway's memory between EAP rounds."""

    backend: EapBackend
    first: Message  # the client's first IKE_AUTH request: SA, TS and CP are answered last
    peer_octets: bytes  # what the client's final AUTH signs


def _msk_auth(sa: IkeSa, msk: bytes, octets: bytes) -> AuthPayload:
    assert sa.keys is not None
    return AuthPayload(AuthMethod.PSK, psk_auth_data(sa.keys.prf, msk, octets))


def _our_octets(s: IkeSession, sa: IkeSa, id_body: bytes) -> bytes:
    assert sa.keys is not None
    if s.initiator:
        return signed_octets(s.init.request, sa.nr, sa.keys.prf, sa.keys.sk_p_ours, id_body)
    return signed_octets(s.init.response, sa.ni, sa.keys.prf, sa.keys.sk_p_ours, id_body)


# ---------------------------------------------------------------------------- gateway


def enabled(cfg: SessionConfig) -> bool:
    """Does this gateway config authenticate clients with EAP (users file or backend)?"""
    return cfg.eap_users is not None or cfg.eap_backend is not None


def start(
    s: IkeSession, sa: IkeSa, cfg: SessionConfig, msg: Message, id_p: IdPayload, octets: bytes
) -> EapPayload:
    """The client asked for EAP (no AUTH payload): remember its request, ask its identity."""
    identity = Identity.expected(id_p, cfg.remote_id)
    s.config = cfg
    s.remote_identity = identity
    backend: EapBackend
    if cfg.eap_backend is not None:
        backend = cfg.eap_backend(s)
    else:
        assert cfg.eap_users is not None
        backend = LocalEapBackend(EapServer(cfg.eap_users, s.rng, str(cfg.local_id).encode()))
    s.eap = EapState(backend, msg, octets)
    return EapPayload(backend.start())


def respond_round(s: IkeSession, sa: IkeSa, msg: Message, now: float) -> list[Payload] | None:
    """A later IKE_AUTH request of the client: the next EAP message, or its final AUTH.
    None: the backend asked an outside server (EapPending emitted); see ``resume``."""
    st: EapState = s.eap
    eap_p = msg.get(EapPayload)
    auth_p = msg.get(AuthPayload)
    backend = st.backend
    try:
        if eap_p is not None:
            out = backend.step(eap_p.data)
            if out is None:
                s.emit(
                    ev.EapPending(
                        eap_p.data, backend.username, s.remote_addr, s.local_addr, backend.context
                    )
                )
                return None
            return [EapPayload(out)]
        msk = backend.msk
        if auth_p is None or msk is None or backend.username == "":
            raise AuthenticationError("IKE_AUTH request without EAP or AUTH payload")
        assert sa.keys is not None
        if not verify_psk(sa.keys.prf, msk, st.peer_octets, auth_p.data):
            raise AuthenticationError("AUTH payload does not verify with the EAP MSK")
    except AuthenticationError as e:
        return _refuse(s, st, str(e), now)
    return _finish(s, sa, st, msk, now)


def resume(s: IkeSession, sa: IkeSa, answer: EapAnswer, now: float) -> list[Payload]:
    """The outside server answered the deferred round: the payloads of its response."""
    st: EapState = s.eap
    try:
        return [EapPayload(st.backend.resume(answer))]
    except AuthenticationError as e:
        return _refuse(s, st, str(e), now)


def _refuse(s: IkeSession, st: EapState, reason: str, now: float) -> list[Payload]:
    s.eap = None
    s.emit(ev.AuthFailed(reason))
    s.close("authentication failed: " + reason, now)
    failure = EapPayload(st.backend.failure())
    return [failure, NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]


def _finish(s: IkeSession, sa: IkeSa, st: EapState, msk: bytes, now: float) -> list[Payload]:
    """EAP succeeded and the client's AUTH verified: our AUTH, its address, its child."""
    from ike.session import auth, child, vip

    s.eap = None
    idr = s.config.local_id.to_payload(PayloadType.IDr)
    payloads: list[Payload] = [_msk_auth(sa, msk, _our_octets(s, sa, idr.body()))]
    auth.established(s, sa, now)
    cp_payloads, vips, child_ok = vip.respond(s, st.backend.username, st.first, now)
    payloads += cp_payloads
    if child_ok:
        payloads += child.respond_in_auth(s, sa, st.first, now, vips)
    return payloads


# ----------------------------------------------------------------------------- client


class EapTask(Task):
    """One client IKE_AUTH round: an EAP response, or (after EAP-Success) the final AUTH."""

    exchange = ExchangeType.IKE_AUTH
    name = "IKE_AUTH (EAP)"

    def __init__(
        self,
        client: EapClient,
        answer: Eap | None,
        child_req: ChildRequest | None,
        peer_octets: bytes,
    ) -> None:
        self.client = client
        self.answer = answer
        self.child_req = child_req
        self.peer_octets = peer_octets

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        if self.answer is not None:
            return [EapPayload(self.answer.encode())]
        assert self.client.msk is not None
        idi = s.config.local_id.to_payload(PayloadType.IDi)
        return [_msk_auth(sa, self.client.msk, _our_octets(s, sa, idi.body()))]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        from ike.session import auth

        eap_p = msg.get(EapPayload)
        try:
            if self.answer is None:  # we sent the final AUTH: the gateway's must match the MSK
                auth_p = msg.get(AuthPayload)
                assert sa.keys is not None and self.client.msk is not None
                if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
                    raise AuthenticationError("gateway refused our EAP AUTH payload")
                if auth_p is None or not verify_psk(
                    sa.keys.prf, self.client.msk, self.peer_octets, auth_p.data
                ):
                    raise AuthenticationError("gateway's AUTH does not verify with the EAP MSK")
                auth.complete(s, sa, msg, self.child_req, now)
                return
            if eap_p is None:
                raise AuthenticationError("IKE_AUTH response without EAP payload")
            answer = self.client.step(eap_p.data)
        except AuthenticationError as e:
            auth.fail(s, str(e), now)
            return
        task = EapTask(self.client, answer, self.child_req, self.peer_octets)
        s.enqueue(task, now, front=True)


def client_for(s: IkeSession) -> EapClient | None:
    cfg = s.config
    if cfg.eap_password is None:
        return None
    name = cfg.eap_identity if cfg.eap_identity is not None else str(cfg.local_id)
    return EapClient(name, cfg.eap_password, s.rng)
