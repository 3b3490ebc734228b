"""IKE SA rekeying with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18), both roles.

The new IKE SA inherits every Child SA. Whoever started the rekey deletes the old IKE SA.
Crossed IKE rekeys are resolved with the nonce rule (§2.8.1): the new SA made by the
exchange holding the lowest nonce is redundant, and its initiator deletes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ike.constants import ExchangeType, NotifyType, ProtocolId, TransformType
from ike.crypto.keymat import derive_rekeyed_ike_keys
from ike.crypto.proposals import check_choice, describe, select_proposal
from ike.crypto.suite import IkeSuite
from ike.errors import CryptoError, ProposalError
from ike.payloads import (
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
)
from ike.session import events as ev
from ike.session.init import numbered
from ike.session.session import NONCE_LEN, State, Task, error_notify
from ike.session.state import ChildState, IkeSa, IkeSaKeys

if TYPE_CHECKING:
    from ike.session.session import IkeSession


def _derive(
    s: IkeSession, old: IkeSa, new: IkeSa, chosen: Proposal, shared: bytes, we_initiated: bool
) -> None:
    assert old.keys is not None
    suite = IkeSuite.from_proposal(chosen)
    encr_len, integ_len = suite.key_lengths
    _, keys = derive_rekeyed_ike_keys(
        prf_new=suite.prf,
        old_sk_d=old.keys.sk_d,
        prf_old=old.keys.prf,
        shared_secret=shared,
        ni=new.ni,
        nr=new.nr,
        spi_i=new.spi_i,
        spi_r=new.spi_r,
        encr_key_len=encr_len,
        integ_key_len=integ_len,
    )
    new.keys = IkeSaKeys(suite, keys, we_initiated, s.rng)
    new.proposal = chosen


def switch_to(s: IkeSession, old: IkeSa, new: IkeSa, now: float) -> None:
    """Make ``new`` the session's IKE SA; ``old`` waits for its DELETE."""
    life = s.config.ike_lifetime
    new.established_at = now
    new.expire_at = now + life
    new.rekey_at = now + life * (1 - s.config.rekey_margin) - s.jitter(life)
    s.sa = new
    if old not in s.retiring:
        s.retiring.append(old)
    assert new.proposal is not None
    s.emit(ev.IkeSaRekeyed(old.spi_i, old.spi_r, new.spi_i, new.spi_r, describe(new.proposal)))


class RekeyIkeTask(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA (rekey IKE SA)"

    def __init__(self, group: int | None = None) -> None:
        self.group = group
        self.spi = b""
        self.ni = b""
        self.ke: Any = None
        self.proposals: list[Proposal] = []

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload] | None:
        if s.state is not State.ESTABLISHED or sa.keys is None:
            return None
        self.spi = s.rng(8)
        self.ni = s.rng(NONCE_LEN)
        group = self.group or sa.keys.suite.ke_group
        # Offer only the current algorithms: with another PRF peers derive other keys
        # (strongSwan runs prf+ with the old PRF, RFC 7296 §2.18 with the new one).
        current = [sa.proposal] if sa.proposal is not None else s.config.ike_proposals
        self.proposals = numbered(current, self.spi)
        self.ke = s.ke_factory(group)
        s.ike_collision = None
        return [
            SaPayload(self.proposals),
            NoncePayload(self.ni),
            KePayload(group, self.ke.public_bytes()),
        ]

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        from ike.session.info import DeleteIkeTask

        collision, s.ike_collision = s.ike_collision, None
        if self._retry(s, msg, now):
            if collision is not None:
                switch_to(s, sa, collision[0], now)
            return
        new = self._new_sa(s, sa, msg)
        if new is None:
            if collision is not None:
                switch_to(s, sa, collision[0], now)  # the peer's rekey stands alone
            return
        if collision is not None:
            peer_new, peer_ni, peer_nr = collision
            if min(new.ni, new.nr, peer_ni, peer_nr) in (new.ni, new.nr):
                # Ours is redundant: the peer's SA stands, we delete ours; the peer deletes the old.
                switch_to(s, sa, peer_new, now)
                s.start_task(new, DeleteIkeTask("redundant rekey"), now)
                s.retiring.append(new)
                return
            # We won: the peer deletes its redundant SA; keep it until that DELETE arrives.
            s.retiring.append(peer_new)
        switch_to(s, sa, new, now)
        s.start_task(sa, DeleteIkeTask("rekeyed"), now)

    def _retry(self, s: IkeSession, msg: Message, now: float) -> bool:
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and self.group is None:
            group = int.from_bytes(invalid_ke.data[:2], "big")
            groups = {t.id for p in s.config.ike_proposals for t in p.of_type(TransformType.KE)}
            if group in groups:
                s.enqueue(RekeyIkeTask(group), now, front=True)
                return True
        if msg.notify(NotifyType.TEMPORARY_FAILURE) is not None:
            s.delay(RekeyIkeTask(), now + 2.0 + 8.0 * s.random_fraction())
            return True
        return False

    def _new_sa(self, s: IkeSession, sa: IkeSa, msg: Message) -> IkeSa | None:
        sa_p, nonce_p, ke_p = msg.get(SaPayload), msg.get(NoncePayload), msg.get(KePayload)
        error = error_notify(msg)
        if error is not None or sa_p is None or nonce_p is None or ke_p is None:
            s.emit(
                ev.NegotiationFailed(
                    f"IKE SA rekey failed (notify {error}); the SA stays until it expires"
                )
            )
            return None
        chosen = sa_p.proposals[0] if len(sa_p.proposals) == 1 else None
        if chosen is None or not check_choice(chosen, self.proposals) or len(chosen.spi) != 8:
            s.emit(ev.NegotiationFailed("IKE SA rekey: peer chose a proposal we did not offer"))
            return None
        if ke_p.group != self.ke.group:
            s.emit(ev.NegotiationFailed("IKE SA rekey: KE group does not match ours"))
            return None
        try:
            shared = self.ke.finish(ke_p.data)
        except CryptoError as e:
            s.emit(ev.NegotiationFailed(f"IKE SA rekey: bad KE value: {e}"))
            return None
        new = IkeSa(spi_i=self.spi, spi_r=chosen.spi, initiator=True, ni=self.ni, nr=nonce_p.nonce)
        _derive(s, sa, new, chosen, shared, we_initiated=True)
        return new


def respond_ike_rekey(
    s: IkeSession, sa: IkeSa, msg: Message, sa_p: SaPayload, nonce_p: NoncePayload, now: float
) -> list[Payload]:
    if sa is not s.sa:
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    pending = sa.pending.task if sa.pending is not None else None
    busy = any(c.state in (ChildState.REKEYING, ChildState.DELETING) for c in s.children.values())
    if busy or (pending is not None and not isinstance(pending, RekeyIkeTask)):
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]  # RFC 7296 §2.25.2
    offered = [p for p in sa_p.proposals if p.protocol == ProtocolId.IKE]
    # Keep the current algorithms if offered (see RekeyIkeTask.build for why).
    chosen = select_proposal(offered, numbered([sa.proposal])) if sa.proposal else None
    chosen = chosen or select_proposal(offered, numbered(s.config.ike_proposals))
    if chosen is None:
        s.emit(ev.NegotiationFailed("IKE SA rekey: no proposal chosen"))
        return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
    if len(chosen.spi) != 8:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    group = IkeSuite.from_proposal(chosen).ke_group
    ke_p = msg.get(KePayload)
    if ke_p is None or ke_p.group != group:
        return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))]
    try:
        data, shared = s.ke_factory(group).respond(ke_p.data)
    except (CryptoError, ProposalError):
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    new = IkeSa(
        spi_i=chosen.spi, spi_r=s.rng(8), initiator=False, ni=nonce_p.nonce, nr=s.rng(NONCE_LEN)
    )
    _derive(s, sa, new, chosen, shared, we_initiated=False)
    if isinstance(pending, RekeyIkeTask):
        s.ike_collision = (new, new.ni, new.nr)  # decided when our own rekey's answer arrives
    else:
        s.post_response.append(lambda at: switch_to(s, sa, new, at))
    answer = Proposal(chosen.num, ProtocolId.IKE, new.spi_r, list(chosen.transforms))
    return [SaPayload([answer]), NoncePayload(new.nr), KePayload(group, data)]
