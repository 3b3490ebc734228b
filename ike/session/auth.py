"""IKE_AUTH in both roles: identities, PSK or certificate authentication, first Child SA."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ike.auth.certs import cert_payloads, certificate_matches_identity, certs_from_payloads
from ike.auth.identity import Identity
from ike.auth.psk import psk_auth_data, signed_octets, verify_psk
from ike.auth.signature import choose_signature_scheme, sign, verify
from ike.constants import AuthMethod, ExchangeType, NotifyType, PayloadType
from ike.errors import AuthenticationError, IkeError
from ike.payloads import (
    AuthPayload,
    CertPayload,
    EapPayload,
    IdPayload,
    Message,
    NotifyPayload,
    Payload,
)
from ike.session import child as child_ex
from ike.session import eap as eap_ex
from ike.session import events as ev
from ike.session import mobike, vip
from ike.session.config import SessionConfig
from ike.session.init import certreq_payloads
from ike.session.session import State, Task, error_notify
from ike.session.state import IkeSa

if TYPE_CHECKING:
    from ike.session.session import IkeSession


def _auth_payload(s: IkeSession, sa: IkeSa, octets: bytes) -> AuthPayload:
    assert sa.keys is not None
    cfg = s.config
    if cfg.psk is not None:
        return AuthPayload(AuthMethod.PSK, psk_auth_data(sa.keys.prf, cfg.psk, octets))
    scheme = choose_signature_scheme(cfg.private_key, s.peer_hash_algorithms)
    return sign(cfg.private_key, scheme, octets)


def _our_credentials(s: IkeSession) -> list[Payload]:
    if s.config.psk is not None or not s.config.certificates:
        return []
    return list(cert_payloads(s.config.certificates))


def verify_peer(
    s: IkeSession,
    cfg: SessionConfig,
    sa: IkeSa,
    msg: Message,
    id_p: IdPayload,
    octets: bytes,
    now: float,
) -> Identity:
    """Check the peer's identity and AUTH payload; raise AuthenticationError with the reason."""
    assert sa.keys is not None
    identity = Identity.expected(id_p, cfg.remote_id)
    auth_p = msg.get(AuthPayload)
    if auth_p is None:
        raise AuthenticationError("no AUTH payload (EAP is not enabled for this peer)")
    if cfg.remote_auth == "psk":
        if auth_p.method != AuthMethod.PSK:
            raise AuthenticationError(
                f"peer used auth method {auth_p.method}, we require a pre-shared key"
            )
        if cfg.psk is None or not verify_psk(sa.keys.prf, cfg.psk, octets, auth_p.data):
            raise AuthenticationError("AUTH payload does not verify: pre-shared key mismatch")
        return identity
    if auth_p.method == AuthMethod.PSK:
        raise AuthenticationError("peer used a pre-shared key, we require a certificate")
    certs = [p for p in msg.payloads if isinstance(p, CertPayload)]
    if not certs:
        raise AuthenticationError("peer sent no certificate")
    end_entity, intermediates = certs_from_payloads(certs)
    if cfg.trust is None:
        raise AuthenticationError("no trust anchors configured for this peer")
    cfg.trust.validate(end_entity, intermediates, datetime.fromtimestamp(now, UTC))
    if not certificate_matches_identity(end_entity, identity):
        raise AuthenticationError(f"certificate does not contain the peer's identity '{identity}'")
    verify(end_entity.public_key(), auth_p, octets)
    return identity


class AuthTask(Task):
    exchange = ExchangeType.IKE_AUTH
    name = "IKE_AUTH"

    def __init__(self) -> None:
        self.child_req: child_ex.ChildRequest | None = None

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload]:
        assert sa.keys is not None
        cfg = s.config
        idi = cfg.local_id.to_payload(PayloadType.IDi)
        payloads: list[Payload] = [idi, *_our_credentials(s)]
        if cfg.initial_contact and (s.other_sas is None or not s.other_sas()):
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        payloads += certreq_payloads(s)
        if not cfg.remote_id.is_any:
            payloads.append(cfg.remote_id.to_payload(PayloadType.IDr))
        if cfg.eap_password is None:  # an EAP client sends AUTH only after EAP (§2.16)
            octets = signed_octets(
                s.init.request, sa.nr, sa.keys.prf, sa.keys.sk_p_ours, idi.body()
            )
            payloads.append(_auth_payload(s, sa, octets))
        payloads += vip.request_payloads(s)
        payloads += mobike.auth_request_notifies(s)
        if cfg.children:
            self.child_req, child_payloads = child_ex.build_request(
                s, cfg.children[0], ike_auth=True
            )
            payloads += child_payloads
        return payloads

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
            fail(s, "peer refused our authentication (AUTHENTICATION_FAILED)", now)
            return
        id_p = msg.get(IdPayload, PayloadType.IDr)
        if id_p is None:
            reason = error_notify(msg) or "no reason"
            fail(s, f"IKE_AUTH response without IDr ({reason})", now)
            return
        assert sa.keys is not None
        octets = signed_octets(s.init.response, sa.ni, sa.keys.prf, sa.keys.sk_p_peer, id_p.body())
        try:
            s.remote_identity = verify_peer(s, s.config, sa, msg, id_p, octets, now)
        except (AuthenticationError, IkeError) as e:
            from ike.session.info import DeleteIkeTask

            # DELETING first: _auth_failed then leaves the session open for the DELETE,
            # whose end closes it once (closing here too reported IkeSaDown twice).
            s.state = State.DELETING
            fail(s, str(e), now)
            s.start_task(sa, DeleteIkeTask("authentication failed", quiet=True), now)
            return
        eap_p = msg.get(EapPayload)
        client = eap_ex.client_for(s)
        if client is not None and eap_p is not None:
            try:
                answer = client.step(eap_p.data)
            except AuthenticationError as e:
                fail(s, str(e), now)
                return
            s.enqueue(eap_ex.EapTask(client, answer, self.child_req, octets), now, front=True)
            return
        complete(s, sa, msg, self.child_req, now)


def complete(
    s: IkeSession, sa: IkeSa, msg: Message, child_req: child_ex.ChildRequest | None, now: float
) -> None:
    """The initiator's IKE_AUTH is done: the SA is up, then its virtual IP and first child."""
    established(s, sa, now)
    vip.finish(s, msg)
    if child_req is not None:
        child_ex.finish_request(s, sa, child_req, msg, None, sa.ni, sa.nr, now)
    for extra in s.config.children[1:]:
        s.enqueue(child_ex.CreateChildTask(extra), now)


def fail(s: IkeSession, reason: str, now: float) -> None:
    s.emit(ev.AuthFailed(reason))
    s.close_reason = "authentication failed: " + reason
    if s.state is not State.DELETING:
        s.close(s.close_reason, now)


def established(s: IkeSession, sa: IkeSa, now: float) -> None:
    from ike.crypto.proposals import describe

    s.state = State.ESTABLISHED
    s.half_open_deadline = None
    sa.established_at = now
    life = s.config.ike_lifetime
    sa.expire_at = now + life
    sa.rekey_at = now + life * (1 - s.config.rekey_margin) - s.jitter(life)
    s.last_peer_activity = now
    assert sa.proposal is not None
    s.emit(
        ev.IkeSaUp(
            sa.spi_i,
            sa.spi_r,
            sa.initiator,
            describe(sa.proposal),
            # The port the SA now runs on: 4500 once NAT-T floated it (as in ChildSaInfo).
            (s.local_addr[0], s.config.nat_t_port if s.use_nat_t_port else s.local_addr[1]),
            s.remote_addr,
            str(s.remote_identity),
            s.nat_local,
            s.nat_remote,
            now,
            s.peer_initial_contact,
        )
    )


def respond(s: IkeSession, sa: IkeSa, msg: Message, now: float) -> list[Payload] | None:
    """The responder's IKE_AUTH: authenticate the peer, pick the config, answer (None:
    later, when the outside EAP server answers)."""
    if s.state is not State.CONNECTING or s.init is None:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    if s.eap is not None:
        return eap_ex.respond_round(s, sa, msg, now)
    assert sa.keys is not None
    id_p = msg.get(IdPayload, PayloadType.IDi)
    if id_p is None:
        s.close("IKE_AUTH without IDi", now)
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    s.peer_initial_contact = msg.notify(NotifyType.INITIAL_CONTACT) is not None
    octets = signed_octets(s.init.request, sa.nr, sa.keys.prf, sa.keys.sk_p_peer, id_p.body())
    try:
        cfg = _resolve_config(s, sa, id_p, msg)
        if msg.get(AuthPayload) is None and eap_ex.enabled(cfg):
            eap_p = eap_ex.start(s, sa, cfg, msg, id_p, octets)
            return [*_responder_auth(s, sa), eap_p]
        s.remote_identity = verify_peer(s, cfg, sa, msg, id_p, octets, now)
    except (AuthenticationError, IkeError) as e:
        s.emit(ev.AuthFailed(str(e)))
        s.close("authentication failed: " + str(e), now)
        s.state = State.CLOSED
        return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)]
    s.config = cfg
    payloads = _responder_auth(s, sa)
    established(s, sa, now)
    cp_payloads, vips, child_ok = vip.respond(s, str(s.remote_identity), msg, now)
    payloads += cp_payloads
    if child_ok:
        payloads += child_ex.respond_in_auth(s, sa, msg, now, vips)
    return payloads


def _responder_auth(s: IkeSession, sa: IkeSa) -> list[Payload]:
    """IDr, our certificates and AUTH: the responder's proof, with or without EAP."""
    assert sa.keys is not None
    idr = s.config.local_id.to_payload(PayloadType.IDr)
    octets = signed_octets(s.init.response, sa.ni, sa.keys.prf, sa.keys.sk_p_ours, idr.body())
    return [idr, *_our_credentials(s), _auth_payload(s, sa, octets)]


def _resolve_config(s: IkeSession, sa: IkeSa, id_p: IdPayload, msg: Message) -> SessionConfig:
    if s.config_resolver is None:
        return s.config
    identity = Identity.from_payload(id_p)
    idr_p = msg.get(IdPayload, PayloadType.IDr)
    wanted = Identity.from_payload(idr_p) if idr_p is not None else None
    cfg = s.config_resolver(identity, wanted)
    if cfg is None:
        raise AuthenticationError(f"no site is configured for peer identity '{identity}'")
    # IKE_SA_INIT took any candidate's proposals (the peer was not known yet); the one
    # chosen must be among those of the config the identity picked.
    if sa.proposal is not None and cfg is not s.config:
        from ike.crypto.proposals import select_proposal
        from ike.session.init import numbered

        if select_proposal([sa.proposal], numbered(cfg.ike_proposals)) is None:
            raise AuthenticationError(
                f"peer identity '{identity}' is not allowed the IKE proposal it negotiated"
            )
    return cfg
