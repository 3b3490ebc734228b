"""One site: its IKE sessions, the Child SAs they negotiated, its routes and its state.

A site usually has one IKE session. It briefly has two when both gateways initiate at
once (the duplicate whose initiator has the higher address is deleted by that initiator,
so exactly one side acts) or when a restarted peer comes back (INITIAL_CONTACT closes
the stale one). Outbound traffic always uses the newest eligible Child SA per route key,
so a second session, a rekey or a delete only ever switches one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from dataclasses import replace
from typing import Any, Protocol

from esp.datapath import Transport
from esp.route_table import RouteTable
from esp.sadb import SaDatabase
from gatewayd.childsa import ChildRecord, retarget, transport_to
from gatewayd.config import Gateway, Site
from gatewayd.ikeconf import ROUTE_BASED_CHILD, pair_child_name, site_source_selectors
from gatewayd.kernel import KernelRoutes
from gatewayd.logging import get_logger
from gatewayd.netio import Endpoints
from ike.session import IkeSession, SessionConfig
from ike.session import events as ev
from ike.session.session import State

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
KEEPALIVE_INTERVAL = 20.0  # RFC 3948 §4 suggests 20 s


class GatewayServices(Protocol):
    """What a site, or the P2S runner, needs from the gateway around it."""

    gateway: Gateway
    sadb: SaDatabase
    routes: RouteTable[Any]
    kernel: KernelRoutes | None
    endpoints: Endpoints | None
    stopping: bool

    def service(self, session: IkeSession) -> None: ...
    def alloc_spi(self) -> int: ...


class Services(GatewayServices, Protocol):
    """A site's view: the gateway's, plus adopting responder sessions."""

    def adopt(self, session: IkeSession, site: SiteRunner) -> None: ...


def _hex(spi: int) -> str:
    return f"{spi:08x}"


def _local_port(s: IkeSession) -> int:
    """The port the session sends from now: nat_t_port once it floated (NAT detected)."""
    return s.config.nat_t_port if s.use_nat_t_port else s.local_addr[1]


class SiteRunner:
    def __init__(self, gw: Services, site: Site, session_config: SessionConfig, fingerprint: str):
        self.gw = gw
        self.site = site
        self.session_config = session_config
        self.fingerprint = fingerprint
        self.sessions: list[IkeSession] = []
        self.records: dict[tuple[int, int], ChildRecord] = {}
        self.ike_info: dict[int, ev.IkeSaUp] = {}
        self._unsettled: dict[int, bool] = {}  # id(session) -> INITIAL_CONTACT, until settled
        self.reason: str | None = None
        self.admin_down = False
        self.removing = False
        self.backoff = BACKOFF_FIRST
        self.retry_at: float | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._kernel_routes = False
        self._last_keepalive = 0.0
        self.log = get_logger(component="site", site=site.name)
        self._add_routes()

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def initiates(self) -> bool:
        return self.site.mode != "responder_only" and not self.site.any_address

    @property
    def responds(self) -> bool:
        return self.site.mode != "initiator_only"

    @property
    def state(self) -> str:
        if any(s.state is State.ESTABLISHED for s in self.sessions):
            return "established"
        if any(s.state in (State.IDLE, State.CONNECTING) for s in self.sessions):
            return "connecting"
        return "connecting" if self._retry is not None else "down"

    def accepts_from(self, ip: str) -> bool:
        """May a peer at ``ip`` start an IKE SA for this site?"""
        if not self.responds or self.admin_down or self.removing or self.gw.stopping:
            return False
        return self.matches_address(ip)

    def matches_address(self, ip: str) -> bool:
        return self.site.any_address or ipaddress.ip_address(ip) == self.site.address

    # ------------------------------------------------------------------ commands

    def start(self) -> None:
        if self.initiates and not self.admin_down:
            self.connect()

    def connect(self) -> None:
        """Start an IKE SA now, unless one is up or under way."""
        self._cancel_retry()
        if self.removing or self.gw.stopping:
            return
        if any(s.state is not State.CLOSED for s in self.sessions):
            return
        gwc = self.gw.gateway
        now = time.time()
        session = IkeSession(
            self.session_config,
            initiator=True,
            local_addr=(str(gwc.address), gwc.ike_port),
            remote_addr=(str(self.site.address), gwc.ike_port),
            now=now,
            spi_alloc=self.gw.alloc_spi,
        )
        session.other_sas = lambda: any(
            o is not session and o.state is State.ESTABLISHED for o in self.sessions
        )
        self.gw.adopt(session, self)
        self.log.info("ike_sa_initiating", remote=str(self.site.address), exchange="IKE_SA_INIT")
        session.initiate(now)
        self.gw.service(session)

    def up(self) -> None:
        self.admin_down = False
        self.backoff = BACKOFF_FIRST
        self.connect()

    def down(self, reason: str = "down by operator") -> None:
        self.admin_down = True
        self._cancel_retry()
        self.delete_all(reason)

    def delete_all(self, reason: str) -> None:
        now = time.time()
        for s in list(self.sessions):
            self._retire(s)
            s.delete(now, reason)
            self.gw.service(s)

    def rekey(self, ike: bool) -> int:
        """Rekey the IKE SA or every current Child SA; returns how many were started."""
        now = time.time()
        count = 0
        for s in self.sessions:
            if s.state is not State.ESTABLISHED:
                continue
            if ike:
                s.rekey_ike(now)
                count += 1
            else:
                for rec in self.records.values():
                    if rec.session is s and rec.eligible:
                        s.rekey_child(rec.child_id, now)
                        count += 1
            self.gw.service(s)
        return count

    # ------------------------------------------------------------------ events

    def on_event(self, s: IkeSession, e: Any) -> None:
        handler = getattr(self, "_on_" + type(e).__name__, None)
        if handler is not None:
            handler(s, e)

    def _on_IkeSaUp(self, s: IkeSession, e: ev.IkeSaUp) -> None:
        self.ike_info[id(s)] = e
        self.reason = None
        self.backoff = BACKOFF_FIRST
        self.log.info(
            "ike_sa_up",
            spi_i=e.spi_i.hex(),
            spi_r=e.spi_r.hex(),
            role="initiator" if e.initiator else "responder",
            proposal=e.proposal,
            remote=f"{e.remote_addr[0]}:{e.remote_addr[1]}",
            remote_id=e.remote_id,
            nat_local=e.nat_local,
            nat_remote=e.nat_remote,
            initial_contact=e.initial_contact,
        )
        # Settle against other IKE SAs once this one carries traffic (its first Child SA
        # is up, or failed): retiring the others earlier would leave a gap.
        self._unsettled[id(s)] = e.initial_contact

    def _settle(self, s: IkeSession) -> None:
        initial_contact = self._unsettled.pop(id(s), None)
        if initial_contact is None:
            return
        if initial_contact:
            self._drop_stale(s)
        self._resolve_duplicates(s)

    def _on_IkeSaRekeyed(self, s: IkeSession, e: ev.IkeSaRekeyed) -> None:
        old = self.ike_info.get(id(s))
        if old is not None:
            self.ike_info[id(s)] = replace(old, spi_i=e.spi_i, spi_r=e.spi_r, proposal=e.proposal)
        self.log.info(
            "ike_sa_rekeyed",
            old_spi_i=e.old_spi_i.hex(),
            old_spi_r=e.old_spi_r.hex(),
            spi_i=e.spi_i.hex(),
            spi_r=e.spi_r.hex(),
            proposal=e.proposal,
            exchange="CREATE_CHILD_SA",
        )

    def _on_IkeSaDown(self, s: IkeSession, e: ev.IkeSaDown) -> None:
        self.log.info("ike_sa_down", spi_i=e.spi_i.hex(), spi_r=e.spi_r.hex(), reason=e.reason)
        if e.reason not in ("deleted", "down by operator", "site removed", "gateway stopping"):
            self.reason = e.reason

    def _on_ChildSaUp(self, s: IkeSession, e: ev.ChildSaUp) -> None:
        rec = self._install(s, e.child)
        self.log.info(
            "child_sa_up",
            child=e.child.name,
            spi_in=_hex(e.child.spi_in),
            spi_out=_hex(e.child.spi_out),
            proposal=e.child.proposal,
            encap=rec.transport.label,
        )
        self._refresh(rec.key)
        self._settle(s)

    def _on_ChildSaRekeyed(self, s: IkeSession, e: ev.ChildSaRekeyed) -> None:
        rec = self._install(s, e.child)
        old = self.records.get((id(s), e.old_child_id))
        rec.eligible = e.outbound_now
        if old is not None and e.outbound_now:
            old.eligible = False
        self.log.info(
            "child_sa_rekeyed",
            child=e.child.name,
            old_spi_in=_hex(old.info.spi_in) if old else None,
            old_spi_out=_hex(old.info.spi_out) if old else None,
            spi_in=_hex(e.child.spi_in),
            spi_out=_hex(e.child.spi_out),
            exchange="CREATE_CHILD_SA",
        )
        self._refresh(rec.key)

    def _on_ChildSaDown(self, s: IkeSession, e: ev.ChildSaDown) -> None:
        rec = self.records.pop((id(s), e.child_id), None)
        if e.successor is not None:
            succ = self.records.get((id(s), e.successor))
            if succ is not None:
                succ.eligible = True
        self.log.info(
            "child_sa_down", spi_in=_hex(e.spi_in), spi_out=_hex(e.spi_out), reason=e.reason
        )
        if rec is not None:
            self._refresh(rec.key)  # the successor takes over first: no gap in outbound
            self._uninstall(rec)

    def _on_ChildSaFailed(self, s: IkeSession, e: ev.ChildSaFailed) -> None:
        self._settle(s)
        self.reason = f"child SA {e.name}: {e.reason}"
        self.log.warning("child_sa_failed", child=e.name, reason=e.reason)

    def _on_AuthFailed(self, s: IkeSession, e: ev.AuthFailed) -> None:
        self.reason = f"authentication failed: {e.reason}"
        self.log.error("auth_failed", reason=e.reason, remote=f"{s.remote_addr[0]}")

    def _on_NegotiationFailed(self, s: IkeSession, e: ev.NegotiationFailed) -> None:
        self.reason = f"negotiation failed: {e.reason}"
        self.log.error("negotiation_failed", reason=e.reason)

    def _on_PeerAddressChanged(self, s: IkeSession, e: ev.PeerAddressChanged) -> None:
        """MOBIKE moved the peer: its Child SAs follow, same SPIs, same counters."""
        moved: list[ChildRecord] = []
        ep = self.gw.endpoints
        if ep is not None:
            mine = [r for r in self.records.values() if r.session is s]
            moved = retarget(mine, ep, e.new, e.udp)
        info = self.ike_info.get(id(s))
        if info is not None:
            self.ike_info[id(s)] = replace(
                info, remote_addr=e.new, nat_local=s.nat_local, nat_remote=s.nat_remote
            )
        spis = s.spis
        self.log.info(
            "peer_address_changed",
            old=f"{e.old[0]}:{e.old[1]}",
            new=f"{e.new[0]}:{e.new[1]}",
            encap="udp" if e.udp else "esp",
            spi_i=spis[0].hex() if spis else None,
            spi_r=spis[1].hex() if spis else None,
            child_sas=[f"{_hex(r.info.spi_in)}/{_hex(r.info.spi_out)}" for r in moved],
        )

    def _on_PeerDead(self, s: IkeSession, e: ev.PeerDead) -> None:
        self.reason = f"peer dead: {e.reason}"
        self.log.warning("peer_dead", reason=e.reason)

    def on_closed(self, s: IkeSession) -> None:
        """The session is CLOSED: forget it, and reconnect later if we should."""
        if s in self.sessions:
            self.sessions.remove(s)
        self.ike_info.pop(id(s), None)
        self._unsettled.pop(id(s), None)
        for key in [k for k, r in self.records.items() if r.session is s]:
            rec = self.records.pop(key)
            self._refresh(rec.key)  # another session's Child SA takes over first
            self._uninstall(rec)
        quiet = ("deleted", "down by operator", "deleted by peer")
        if s.close_reason and self.reason is None and not s.close_reason.startswith(quiet):
            self.reason = s.close_reason
        live = [x for x in self.sessions if x.state is not State.CLOSED]
        if not live and self.initiates and not (self.admin_down or self.removing):
            self._schedule_retry()

    # ------------------------------------------------------------------ duplicates

    def _drop_stale(self, s: IkeSession) -> None:
        """The peer says it holds no other SA with us: close ours older than this one."""
        now = time.time()
        for o in list(self.sessions):
            info = self.ike_info.get(id(o))
            if o is s or info is None or o.state is not State.ESTABLISHED:
                continue
            if info.established_at < s.created_at:
                self.log.info("ike_sa_stale", spi_i=info.spi_i.hex(), reason="INITIAL_CONTACT")
                self._retire(o)
                o.close("replaced after INITIAL_CONTACT", now)
                self.gw.service(o)

    def _resolve_duplicates(self, s: IkeSession) -> None:
        """Two IKE SAs with the same peer: the higher address deletes the one it started."""
        established = [o for o in self.sessions if o.state is State.ESTABLISHED]
        if len(established) < 2:
            return
        ours = ipaddress.ip_address(str(self.gw.gateway.address))
        theirs = ipaddress.ip_address(s.remote_addr[0])
        if ours.version != theirs.version or ours.packed < theirs.packed:
            return
        now = time.time()
        if not any(not o.initiator for o in established):
            return
        for o in established:
            if o.initiator:
                self.log.info("ike_sa_duplicate", action="deleting the one we initiated")
                self._retire(o)
                o.delete(now, "duplicate IKE SA")
                self.gw.service(o)

    def _retire(self, s: IkeSession) -> None:
        """Move outbound traffic off the session's Child SAs before it goes away."""
        keys = set()
        for rec in self.records.values():
            if rec.session is s:
                rec.eligible = False
                keys.add(rec.key)
        for key in keys:
            self._refresh(key)

    # ------------------------------------------------------------------ data path

    def transport_for(self, info: ev.ChildSaInfo) -> Transport:
        ep = self.gw.endpoints
        assert ep is not None, "sites run only while the endpoints are open"
        return transport_to(ep, info.remote_addr, info.udp_encap)

    def _install(self, s: IkeSession, info: ev.ChildSaInfo) -> ChildRecord:
        sources = None
        if not self.site.policy_based_traffic_selectors:
            sources = site_source_selectors(self.site)
        rec = ChildRecord.build(
            s,
            info,
            self.name,
            self.transport_for(info),
            self.site.replay_window or self.gw.gateway.replay_window,
            sources,
        )
        # New inbound first: the peer may use it before we switch (make-before-break).
        self.gw.sadb.install_inbound(rec.inbound)
        self.records[(id(s), info.child_id)] = rec
        return rec

    def _uninstall(self, rec: ChildRecord) -> None:
        self.gw.sadb.remove_inbound(rec.info.spi_in)
        current = self.gw.sadb.outbound(rec.key)
        if current is rec.outbound:
            self.gw.sadb.remove_outbound(rec.key)

    def _refresh(self, key: tuple[str, str]) -> None:
        """Point the key's outbound at the newest eligible Child SA, then fix the routes."""
        candidates = [
            r
            for r in self.records.values()
            if r.key == key and r.eligible and r.session.state is State.ESTABLISHED
        ]
        sadb = self.gw.sadb
        if candidates:
            best = max(candidates, key=lambda r: (r.info.established_at, r.created_mono))
            if sadb.outbound(key) is not best.outbound:
                sadb.install_outbound(key, best.outbound)
        else:
            sadb.remove_outbound(key)
        self._sync_routes()

    # ------------------------------------------------------------------ routes

    def _pairs(self) -> list[tuple[Any, Any]]:
        return [
            (local, remote)
            for local in self.gw.gateway.networks
            for remote in self.site.networks
            if local.version == remote.version
        ]

    def _add_routes(self) -> None:
        routes = self.gw.routes
        with routes.batch():
            if self.site.policy_based_traffic_selectors:
                for local, remote in self._pairs():
                    routes.add_pair(self.name, local, remote, None)
            else:
                for net in self.site.networks:
                    routes.add(net, self.name, None)

    def _sync_routes(self) -> None:
        sadb, routes = self.gw.sadb, self.gw.routes
        carrying = False
        with routes.batch():
            if self.site.policy_based_traffic_selectors:
                for local, remote in self._pairs():
                    key = (self.name, pair_child_name(str(local), str(remote)))
                    up = sadb.outbound(key) is not None
                    carrying |= up
                    routes.add_pair(self.name, local, remote, key if up else None)
            else:
                key = (self.name, ROUTE_BASED_CHILD)
                up = sadb.outbound(key) is not None
                carrying = up
                routes.set_target(self.name, key if up else None)
        self._sync_kernel(carrying)

    def _sync_kernel(self, carrying: bool) -> None:
        if carrying == self._kernel_routes:
            return
        kernel = self.gw.kernel
        if kernel is None:
            return
        for net in self.site.networks:
            try:
                kernel.add(net) if carrying else kernel.remove(net)
            except OSError as exc:
                self.log.error("kernel_route_failed", prefix=str(net), error=str(exc))
        self._kernel_routes = carrying
        self.log.info(
            "routes_installed" if carrying else "routes_withdrawn",
            prefixes=[str(n) for n in self.site.networks],
        )

    def remove(self) -> None:
        """The site leaves the config: delete its SAs (DELETE sent), drop its routes."""
        self.removing = True
        self._cancel_retry()
        self.delete_all("site removed")
        self._sync_kernel(False)
        self.gw.routes.remove_site(self.name)

    # ------------------------------------------------------------------ timers

    def _schedule_retry(self) -> None:
        if self._retry is not None or self.gw.stopping:
            return
        delay = self.backoff * random.uniform(0.8, 1.2)  # noqa: S311 - spreading, not secrecy
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.retry_at = time.time() + delay
        self.log.info("reconnect_scheduled", delay_s=round(delay, 1))
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.retry_at = None
        self.connect()

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry = None
        self.retry_at = None

    def housekeeping(self, now: float) -> None:
        """Once a second: liveness from ESP traffic, byte/packet limits, NAT keepalives."""
        touched: list[IkeSession] = []  # sessions given a command; only they need service
        for rec in list(self.records.values()):
            s = rec.session
            if s.state is not State.ESTABLISHED:
                continue
            packets = rec.inbound.packets
            if packets != rec.seen_packets_in:
                rec.seen_packets_in = packets
                s.note_inbound_traffic(now)
            if rec.over_hard_bytes():
                self.log.info("child_sa_expired", spi_in=_hex(rec.info.spi_in), reason="bytes")
                s.delete_child(rec.child_id, now)
                touched.append(s)
            elif not rec.rekey_requested and (rec.outbound.needs_rekey or rec.inbound.needs_rekey):
                rec.rekey_requested = True
                s.child_limit_reached(rec.child_id, now)
                touched.append(s)
        if now - self._last_keepalive >= KEEPALIVE_INTERVAL:
            self._last_keepalive = now
            for s in self.sessions:
                if s.state is State.ESTABLISHED and s.nat_local and self.gw.endpoints:
                    with contextlib.suppress(OSError):
                        self.gw.endpoints.nat_t.sendto(b"\xff", s.remote_addr)
        for s in dict.fromkeys(touched):
            self.gw.service(s)

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        active = self._active_session()
        ike_sa = None
        if active is not None and active.sa is not None:
            info = self.ike_info.get(id(active))
            sa = active.sa
            ike_sa = {
                "spi_i": sa.spi_i.hex(),
                "spi_r": sa.spi_r.hex(),
                "role": "initiator" if sa.initiator else "responder",
                "state": active.state.value,
                "proposal": info.proposal if info else None,
                "local": f"{active.local_addr[0]}:{_local_port(active)}",
                "remote": f"{active.remote_addr[0]}:{active.remote_addr[1]}",
                "remote_id": info.remote_id if info else None,
                "nat_local": active.nat_local,
                "nat_remote": active.nat_remote,
                "mobike": active.mobike,  # RFC 4555 negotiated: the peer may move
                "established_s": round(now - info.established_at, 1) if info else None,
            }
        children = [
            rec.status(now)
            for rec in sorted(self.records.values(), key=lambda r: r.info.established_at)
        ]
        return {
            "name": self.name,
            "address": str(self.site.address),
            "mode": self.site.mode,
            "state": self.state,
            "reason": self.reason,
            "admin_down": self.admin_down,
            "ike_sa": ike_sa,
            "ike_sas": len([s for s in self.sessions if s.state is State.ESTABLISHED]),
            "child_sas": children,
            "next_attempt_s": round(self.retry_at - now, 1) if self.retry_at else None,
        }

    def _active_session(self) -> IkeSession | None:
        established = [s for s in self.sessions if s.state is State.ESTABLISHED]
        if established:
            return max(
                established,
                key=lambda s: (
                    self.ike_info[id(s)].established_at if id(s) in self.ike_info else 0.0
                ),
            )
        live = [s for s in self.sessions if s.state is not State.CLOSED]
        return live[-1] if live else None
