"""Child SAs: the first one inside IKE_AUTH, and CREATE_CHILD_SA (new and rekey) in both roles.

Rekeying is make-before-break. The initiator of a rekey switches outbound at once and then
deletes the old SA. The responder installs the new inbound SA and switches outbound only
once the old SA is deleted (ChildSaDown names the successor), so nothing is lost in
flight. Crossed rekeys of the same SA are resolved with the nonce rule of RFC 7296 §2.8.1:
the SA created by the exchange with the lowest nonce is redundant and its creator deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ike.constants import (
    EncrId,
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
)
from ike.crypto.keymat import derive_child_keys
from ike.crypto.proposals import check_choice, describe, select_proposal
from ike.crypto.suite import ChildSuite
from ike.errors import CryptoError, ProposalError
from ike.payloads import (
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    TsPayload,
)
from ike.session import events as ev
from ike.session import ts as tsmod
from ike.session.config import ChildConfig
from ike.session.session import NONCE_LEN, State, Task, error_notify
from ike.session.state import ChildSa, ChildState, IkeSa

if TYPE_CHECKING:
    from ike.session.session import IkeSession

TEMPORARY_FAILURE_RETRY = (2.0, 10.0)  # random delay before retrying a refused exchange


@dataclass
class ChildRequest:
    cfg: ChildConfig
    spi_in: int
    proposals: list[Proposal]
    local_ts: tuple[Any, ...]
    remote_ts: tuple[Any, ...]
    ni: bytes = b""
    ke: Any = None
    rekey: ChildSa | None = None


def _without_ke(p: Proposal) -> Proposal:
    return Proposal(
        p.num, p.protocol, p.spi, [t for t in p.transforms if t.type != TransformType.KE]
    )


def _esp_proposals(cfg: ChildConfig, spi: int, with_ke: bool) -> list[Proposal]:
    out = []
    for i, p in enumerate(cfg.esp_proposals):
        q = Proposal(i + 1, ProtocolId.ESP, spi.to_bytes(4, "big"), list(p.transforms))
        out.append(q if with_ke else _without_ke(q))
    return out


def _pfs_group(proposals: list[Proposal]) -> int:
    for p in proposals:
        ke = p.of_type(TransformType.KE)
        if ke and ke[0].id:
            return ke[0].id
    return 0


def build_request(
    s: IkeSession,
    cfg: ChildConfig,
    *,
    ike_auth: bool = False,
    rekey: ChildSa | None = None,
    group: int | None = None,
) -> tuple[ChildRequest, list[Payload]]:
    spi = s.spi_alloc()
    proposals = _esp_proposals(cfg, spi, with_ke=not ike_auth)
    local_ts = rekey.local_ts if rekey is not None else cfg.local_ts
    remote_ts = rekey.remote_ts if rekey is not None else cfg.remote_ts
    req = ChildRequest(cfg, spi, proposals, local_ts, remote_ts, rekey=rekey)
    ts_payloads: list[Payload] = [
        TsPayload(PayloadType.TSi, list(local_ts)),
        TsPayload(PayloadType.TSr, list(remote_ts)),
    ]
    if ike_auth:
        return req, [SaPayload(proposals), *ts_payloads]
    req.ni = s.rng(NONCE_LEN)
    payloads: list[Payload] = []
    if rekey is not None:
        payloads.append(
            NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, rekey.spi_in.to_bytes(4, "big"))
        )
    payloads += [SaPayload(proposals), NoncePayload(req.ni)]
    pfs = group if group is not None else _pfs_group(proposals)
    if pfs:
        req.ke = s.ke_factory(pfs)
        payloads.append(KePayload(pfs, req.ke.public_bytes()))
    return req, payloads + ts_payloads


def make_child(
    s: IkeSession,
    sa: IkeSa,
    name: str,
    chosen: Proposal,
    spi_in: int,
    spi_out: int,
    local_ts: tuple[Any, ...],
    remote_ts: tuple[Any, ...],
    shared: bytes | None,
    ni: bytes,
    nr: bytes,
    we_initiated: bool,
    now: float,
) -> tuple[ChildSa, ev.ChildSaInfo]:
    """Derive a Child SA's keys (RFC 7296 §2.17) and build its record and event info."""
    assert sa.keys is not None
    suite = ChildSuite.from_proposal(chosen)
    encr_len, integ_len = suite.key_lengths
    keys = derive_child_keys(sa.keys.prf, sa.keys.sk_d, shared, ni, nr, encr_len, integ_len)
    if we_initiated:
        e_out, a_out, e_in, a_in = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
    else:
        e_out, a_out, e_in, a_in = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
    life = s.config.child_lifetime
    text = describe(chosen)
    child = ChildSa(
        s.new_child_id(),
        name,
        spi_in,
        spi_out,
        suite,
        text,
        local_ts,
        remote_ts,
        now,
        rekey_at=now + life * (1 - s.config.rekey_margin) - s.jitter(life),
        expire_at=now + life,
    )
    s.children[child.child_id] = child
    info = ev.ChildSaInfo(
        child_id=child.child_id,
        name=name,
        spi_in=spi_in,
        spi_out=spi_out,
        encr_id=suite.encr_id,
        encr_key_bits=suite.key_bits,
        integ_id=suite.integ_id,
        encr_key_in=e_in,
        integ_key_in=a_in,
        encr_key_out=e_out,
        integ_key_out=a_out,
        esn=suite.esn,
        local_ts=local_ts,
        remote_ts=remote_ts,
        proposal=text,
        udp_encap=s.nat_local or s.nat_remote,
        local_addr=(s.local_addr[0], s.config.nat_t_port if s.use_nat_t_port else s.local_addr[1]),
        remote_addr=s.remote_addr,
        lifetime_soft=child.rekey_at - now,
        lifetime_hard=life,
        lifetime_bytes=s.config.child_lifetime_bytes,
        established_at=now,
    )
    return child, info


def finish_request(
    s: IkeSession,
    sa: IkeSa,
    req: ChildRequest,
    msg: Message,
    shared: bytes | None,
    ni: bytes,
    nr: bytes,
    now: float,
) -> tuple[ChildSa, ev.ChildSaInfo] | None:
    """Check the responder's answer to our child request; emits ChildSaUp unless rekeying."""
    error = error_notify(msg)
    sa_p = msg.get(SaPayload)
    tsi = msg.get(TsPayload, PayloadType.TSi)
    tsr = msg.get(TsPayload, PayloadType.TSr)
    if error is not None or sa_p is None or tsi is None or tsr is None:
        offered = ", ".join(describe(p) for p in req.proposals)
        s.emit(
            ev.ChildSaFailed(
                req.cfg.name, f"peer answered {error or 'without SA/TS'}; we offered {offered}"
            )
        )
        return None
    if len(sa_p.proposals) != 1 or not check_choice(sa_p.proposals[0], req.proposals):
        s.emit(ev.ChildSaFailed(req.cfg.name, "peer chose an ESP proposal we did not offer"))
        return None
    if not (
        tsmod.is_narrowing_of(tsi.selectors, req.local_ts)
        and tsmod.is_narrowing_of(tsr.selectors, req.remote_ts)
    ):
        s.emit(
            ev.ChildSaFailed(req.cfg.name, "peer's traffic selectors are not a narrowing of ours")
        )
        return None
    chosen = sa_p.proposals[0]
    if len(chosen.spi) != 4:
        s.emit(ev.ChildSaFailed(req.cfg.name, "bad ESP SPI size"))
        return None
    spi_out = int.from_bytes(chosen.spi, "big")
    child, info = make_child(
        s,
        sa,
        req.cfg.name,
        chosen,
        req.spi_in,
        spi_out,
        tuple(tsi.selectors),
        tuple(tsr.selectors),
        shared,
        ni,
        nr,
        True,
        now,
    )
    if req.rekey is None:
        s.emit(ev.ChildSaUp(info))
    return child, info


def _warn_transport(s: IkeSession, msg: Message) -> None:
    if msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None:
        # We only do tunnel mode: by not echoing the notify the SA becomes a tunnel (§1.3.1).
        s.emit(
            ev.ChildSaFailed(
                "transport-mode",
                "peer asked for transport mode; only tunnel mode is supported: answering tunnel",
            )
        )


def _match_config(
    s: IkeSession, tsi: list[Any], tsr: list[Any], only: str | None = None
) -> tuple[ChildConfig, list[Any], list[Any]] | None:
    """The child config whose selectors fit the peer's proposal, exact matches first."""
    best = None
    for cc in s.config.children:
        if only is not None and cc.name != only:
            continue
        remote = tsmod.narrow(tsi, cc.remote_ts)
        local = tsmod.narrow(tsr, cc.local_ts)
        if remote and local:
            if set(remote) == set(tsi) and set(local) == set(tsr):
                return cc, local, remote
            best = best or (cc, local, remote)
    return best


def _select_esp(offered: list[Proposal], cfg: ChildConfig, with_ke: bool) -> Proposal | None:
    ours = _esp_proposals(cfg, 0, with_ke)
    if not with_ke:
        return select_proposal([_without_ke(p) for p in offered], ours)
    chosen = select_proposal(offered, ours)
    if chosen is None and not _pfs_group(ours):
        # We do not require PFS but the peer asks for it: accept the group it offers.
        groups = [t.id for p in offered for t in p.of_type(TransformType.KE) if t.id]
        widened = [
            Proposal(p.num, p.protocol, p.spi, [*p.transforms, Transform(TransformType.KE, g)])
            for p in ours
            for g in dict.fromkeys(groups)
        ]
        chosen = select_proposal(offered, widened)
        if chosen is None:  # peers that list KE only as an option ("NONE" allowed)
            chosen = select_proposal([_without_ke(p) for p in offered], ours)
    return chosen


def respond_in_auth(
    s: IkeSession, sa: IkeSa, msg: Message, now: float, vips: tuple[Any, ...] | None = None
) -> list[Payload]:
    sa_p = msg.get(SaPayload)
    tsi = msg.get(TsPayload, PayloadType.TSi)
    tsr = msg.get(TsPayload, PayloadType.TSr)
    if sa_p is None or tsi is None or tsr is None:
        return []  # childless IKE_AUTH (RFC 6023)
    if vips is not None:  # a remote-access client: its side is its virtual IP (RFC 7296 §2.19)
        tsi = TsPayload(PayloadType.TSi, tsmod.narrow(tsi.selectors, vips))
    _warn_transport(s, msg)
    answer = _answer_child(s, sa, sa_p, tsi, tsr, None, sa.ni, sa.nr, None, now, in_auth=True)
    return answer[0]


def _answer_child(
    s: IkeSession,
    sa: IkeSa,
    sa_p: SaPayload,
    tsi: TsPayload,
    tsr: TsPayload,
    ke_p: KePayload | None,
    ni: bytes,
    nr: bytes,
    rekey: ChildSa | None,
    now: float,
    in_auth: bool = False,
) -> tuple[list[Payload], tuple[ChildSa, ev.ChildSaInfo] | None]:
    """Pick proposal and selectors for a peer's child request; returns the answer payloads."""
    match = _match_config(s, tsi.selectors, tsr.selectors, rekey.name if rekey else None)
    if match is None:
        s.emit(
            ev.ChildSaFailed(
                "?",
                f"traffic selectors unacceptable: peer proposed "
                f"{tsmod.describe(tsi.selectors)} === {tsmod.describe(tsr.selectors)}",
            )
        )
        return [NotifyPayload(NotifyType.TS_UNACCEPTABLE)], None
    cfg, local, remote = match
    chosen = _select_esp(sa_p.proposals, cfg, with_ke=not in_auth)
    if chosen is None:
        offered = ", ".join(describe(p) for p in sa_p.proposals)
        ours = ", ".join(describe(p) for p in cfg.esp_proposals)
        s.emit(
            ev.ChildSaFailed(
                cfg.name, f"no ESP proposal chosen: peer offered {offered}; we accept {ours}"
            )
        )
        return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], None
    if len(chosen.spi) != 4:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)], None
    group = ChildSuite.from_proposal(chosen).ke_group
    shared = None
    ke_answer: list[Payload] = []
    if group and not in_auth:
        if ke_p is None or ke_p.group != group:
            return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))], None
        try:
            data, shared = s.ke_factory(group).respond(ke_p.data)
        except (CryptoError, ProposalError):
            return [NotifyPayload(NotifyType.INVALID_SYNTAX)], None
        ke_answer = [KePayload(group, data)]
    spi_in = s.spi_alloc()
    spi_out = int.from_bytes(chosen.spi, "big")
    made = make_child(
        s,
        sa,
        cfg.name,
        chosen,
        spi_in,
        spi_out,
        tuple(local),
        tuple(remote),
        shared,
        ni,
        nr,
        False,
        now,
    )
    answer = Proposal(
        chosen.num, ProtocolId.ESP, spi_in.to_bytes(4, "big"), list(chosen.transforms)
    )
    payloads: list[Payload] = [SaPayload([answer])]
    if not in_auth:
        payloads += [NoncePayload(nr), *ke_answer]
    payloads += [TsPayload(PayloadType.TSi, list(remote)), TsPayload(PayloadType.TSr, list(local))]
    if rekey is None:
        s.emit(ev.ChildSaUp(made[1]))
    return payloads, made


def respond(s: IkeSession, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
    """The responder's CREATE_CHILD_SA: a new Child SA, a Child SA rekey or an IKE SA rekey."""
    from ike.session.ikerekey import RekeyIkeTask, respond_ike_rekey

    if s.state is not State.ESTABLISHED:
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    pending = sa.pending.task if sa.pending is not None else None
    sa_p = msg.get(SaPayload)
    nonce_p = msg.get(NoncePayload)
    if sa_p is None or nonce_p is None:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    tsi = msg.get(TsPayload, PayloadType.TSi)
    tsr = msg.get(TsPayload, PayloadType.TSr)
    if tsi is None and tsr is None and any(p.protocol == ProtocolId.IKE for p in sa_p.proposals):
        return respond_ike_rekey(s, sa, msg, sa_p, nonce_p, now)
    if isinstance(pending, RekeyIkeTask):
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]  # RFC 7296 §2.25.2
    if tsi is None or tsr is None:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    rekey = None
    rekey_n = msg.notify(NotifyType.REKEY_SA)
    if rekey_n is not None:
        if len(rekey_n.spi) != 4:
            return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
        rekey = s.child_by_spi_out(int.from_bytes(rekey_n.spi, "big"))
        if rekey is None:
            return [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, b"", ProtocolId.ESP, rekey_n.spi)]
        if rekey.state in (ChildState.DELETING, ChildState.REKEYED):
            return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]  # RFC 7296 §2.25
    _warn_transport(s, msg)
    nr = s.rng(NONCE_LEN)
    payloads, made = _answer_child(
        s, sa, sa_p, tsi, tsr, msg.get(KePayload), nonce_p.nonce, nr, rekey, now
    )
    if made is not None and rekey is not None:
        new, info = made
        if rekey.state is ChildState.REKEYING:
            # Crossed rekeys: decided when our own rekey's answer arrives.
            rekey.collision = (new, info, nonce_p.nonce, nr)
        else:
            rekey.state = ChildState.REKEYED
            rekey.successor = new.child_id
        s.emit(ev.ChildSaRekeyed(rekey.child_id, info, outbound_now=False))
    return payloads


class CreateChildTask(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA"

    def __init__(
        self, cfg: ChildConfig, rekey: ChildSa | None = None, group: int | None = None
    ) -> None:
        self.cfg = cfg
        self.rekey = rekey
        self.group = group
        self.req: ChildRequest | None = None

    def build(self, s: IkeSession, sa: IkeSa, now: float) -> list[Payload] | None:
        old = self.rekey
        if old is not None:
            if s.children.get(old.child_id) is not old or old.state is not ChildState.INSTALLED:
                return None  # deleted or already being replaced meanwhile
            old.state = ChildState.REKEYING
        if s.state is not State.ESTABLISHED:
            return None
        self.req, payloads = build_request(s, self.cfg, rekey=old, group=self.group)
        return payloads

    def on_response(self, s: IkeSession, sa: IkeSa, msg: Message, raw: bytes, now: float) -> None:
        req = self.req
        assert req is not None
        old = self.rekey
        if old is not None and old.state is ChildState.REKEYING:
            old.state = ChildState.INSTALLED
        retry = self._retry(s, msg, now)
        if retry:
            return
        nonce_p = msg.get(NoncePayload)
        ke_p = msg.get(KePayload)
        shared = None
        if error_notify(msg) is None:
            if nonce_p is None:
                s.emit(
                    ev.ChildSaFailed(
                        self.cfg.name, "CREATE_CHILD_SA response without a valid nonce"
                    )
                )
                return
            if req.ke is not None:
                if ke_p is None or ke_p.group != req.ke.group:
                    s.emit(ev.ChildSaFailed(self.cfg.name, "PFS: the response lacks our KE group"))
                    return
                try:
                    shared = req.ke.finish(ke_p.data)
                except CryptoError as e:
                    s.emit(ev.ChildSaFailed(self.cfg.name, f"bad KE value: {e}"))
                    return
        nr = nonce_p.nonce if nonce_p is not None else b""
        made = finish_request(s, sa, req, msg, shared, req.ni, nr, now)
        if made is None or old is None:
            return
        new, info = made
        self._rekeyed(s, old, new, info, req.ni, nr, now)

    def _retry(self, s: IkeSession, msg: Message, now: float) -> bool:
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and self.group is None:
            group = int.from_bytes(invalid_ke.data[:2], "big")
            offered = {t.id for p in self.cfg.esp_proposals for t in p.of_type(TransformType.KE)}
            if group in offered:
                s.enqueue(CreateChildTask(self.cfg, self.rekey, group), now, front=True)
                return True
        if msg.notify(NotifyType.TEMPORARY_FAILURE) is not None:
            lo, hi = TEMPORARY_FAILURE_RETRY
            s.delay(
                CreateChildTask(self.cfg, self.rekey), now + lo + (hi - lo) * s.random_fraction()
            )
            return True
        if msg.notify(NotifyType.CHILD_SA_NOT_FOUND) is not None and self.rekey is not None:
            # The peer has no such SA: drop ours and build a fresh one.
            from ike.session.info import remove_child

            remove_child(s, self.rekey, "peer has no such Child SA")
            s.enqueue(CreateChildTask(self.cfg), now, front=True)
            return True
        return False

    def _rekeyed(
        self,
        s: IkeSession,
        old: ChildSa,
        new: ChildSa,
        info: ev.ChildSaInfo,
        ni: bytes,
        nr: bytes,
        now: float,
    ) -> None:
        from ike.session.info import DeleteChildTask

        if s.children.get(old.child_id) is not old:
            s.emit(ev.ChildSaUp(info))  # the old SA was deleted meanwhile: this one stands alone
            return
        if old.collision is not None:
            peer_new, _peer_info, peer_ni, peer_nr = old.collision
            old.collision = None
            if min(ni, nr, peer_ni, peer_nr) in (ni, nr):
                # Our exchange holds the lowest nonce: our new SA is redundant, we delete it.
                # The peer (the winner) deletes the old SA; its new one is the successor.
                old.state = ChildState.REKEYED
                old.successor = peer_new.child_id
                s.emit(ev.ChildSaRekeyed(old.child_id, info, outbound_now=False))
                s.enqueue(DeleteChildTask(new, successor=peer_new.child_id), now, front=True)
                return
            # We won: the peer deletes its new SA; we replace and delete the old one.
        old.state = ChildState.REKEYED
        old.successor = new.child_id
        s.emit(ev.ChildSaRekeyed(old.child_id, info, outbound_now=True))
        s.enqueue(DeleteChildTask(old), now, front=True)


__all__ = ["CreateChildTask", "EncrId"]
