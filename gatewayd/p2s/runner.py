"""Remote-access clients: their IKE sessions, leases, Child SAs and host routes.

One P2sRunner per gateway with [p2s]. The gateway only responds: a client comes from any
address. Each client's lease (keyed by its identity: the EAP user name, or the IKE
identity of a certificate client) outlives its session by ``lease_hold`` seconds, so a
reconnect gets the same virtual IP back. A client's virtual IP is a host route in the
route table to its newest Child SA, whose inbound source check is that virtual IP; the
pool prefixes are routed into the TUN so the LAN and the sites reach clients.

A second session of an identity that is connected replaces the first (the user's new
connection wins, as with strongSwan's uniqueids).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from esp.datapath import Transport
from esp.route_table import RouteConflict
from esp.selectors import Selector
from gatewayd.childsa import ChildRecord, retarget, transport_to
from gatewayd.config import Config, P2s
from gatewayd.ikeconf import Credentials
from gatewayd.logging import get_logger
from gatewayd.p2s.sessionconf import (
    P2S_CHILD,
    P2S_SESSION,
    ClientTrust,
    RevocationHook,
    client_trust,
    make_pools,
    session_config,
)
from gatewayd.site import GatewayServices
from ike.eap.method import backend_factory
from ike.p2s.cp import PoolProvider
from ike.p2s.pool import AddressPool
from ike.session import IkeSession, SessionConfig
from ike.session import events as ev
from ike.session.session import State

KEEPALIVE_INTERVAL = 20.0  # RFC 3948 §4
REFUSAL_LOG_INTERVAL = 1.0  # at most one p2s_refused line per second per reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class P2sSetupError(Exception):
    """The users file or revocation list cannot be used; the message names the file."""


@dataclass(eq=False)
class P2sClient:
    """One client connection (one IKE SA)."""

    session: IkeSession
    identity: str | None = None  # the lease key, known once the virtual IP is assigned
    ike_id: str | None = None
    auth: str | None = None
    remote: tuple[str, int] | None = None
    established_at: float | None = None
    vips: list[IPAddress] = field(default_factory=list)
    records: dict[int, ChildRecord] = field(default_factory=dict)
    cert: x509.Certificate | None = None
    saw_eap: bool = False
    relayed: bool = False  # EAP went to the RADIUS server
    connected_logged: bool = False
    reason: str | None = None


def _host(address: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")


def route_site(identity: str) -> str:
    """The route table's owner name for a client: ':' never appears in a site's name."""
    return f"p2s:{identity}"


class P2sRunner:
    def __init__(self, gw: GatewayServices, config: Config, creds: Credentials) -> None:
        assert config.p2s is not None
        self.gw = gw
        self.log = get_logger(component="p2s")
        self.p2s: P2s = config.p2s
        self.hook = RevocationHook()
        self.pools: list[AddressPool] = make_pools(config.p2s)
        self.users: Any = None
        self.trust: ClientTrust | None = None
        self.provider = PoolProvider(self.pools)
        self.session_config: SessionConfig
        self.clients: dict[IkeSession, P2sClient] = {}
        self.by_identity: dict[str, list[IkeSession]] = {}
        self._routed: dict[str, tuple[IPAddress, ...]] = {}  # identity -> its host routes
        self.kernel_prefixes: list[Any] = []
        self.refused = 0
        self.radius: Any = None  # gatewayd.p2s.radius.RadiusTransport while "eap-radius" is on
        self._radius_settings: Any = None
        self._new_radius: Any = None
        self._last_refusal: dict[str, float] = {}
        self._last_keepalive = 0.0
        self.configure(config, creds)

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Config, creds: Credentials) -> None:
        """(Re)build everything [p2s] and the files it names give; P2sSetupError if a file
        is unusable (the runner then keeps its previous setup)."""
        p2s = config.p2s
        assert p2s is not None
        # Everything that may fail comes first, before any state changes.
        users = _load_users(p2s) if "eap-mschapv2" in p2s.auth else None
        revoked = _load_revoked(p2s)
        try:
            trust = client_trust(p2s, self.hook)
        except (OSError, ValueError) as exc:
            raise P2sSetupError(f"p2s.client_ca: {exc}") from None
        new_radius = None
        if "eap-radius" in p2s.auth and (
            self.radius is None or self._radius_settings != p2s.radius
        ):
            new_radius = _radius_transport(p2s, self.gw.service)  # opened by start/reload
        if p2s.address_pool != self.p2s.address_pool or p2s.lease_hold != self.p2s.lease_hold:
            self.pools = _carry_leases(self.pools, make_pools(p2s))
        self.p2s = p2s
        self.users = users
        self.hook.revoked = revoked
        self.trust = trust
        self.provider = PoolProvider(self.pools, p2s.dns, config.p2s_routes())
        eap = self._nt_hash if "eap-mschapv2" in p2s.auth else None
        radius = "eap-radius" in p2s.auth
        if new_radius is not None:
            if self._new_radius is not None:
                self._new_radius.close()
            self._new_radius = new_radius
        # The users file first when both are on; RADIUS for anyone it does not know.
        backend = backend_factory(eap, radius, str(config.gateway.identity))
        self.session_config = session_config(config, creds, self.provider, self.trust, eap, backend)

    def _nt_hash(self, name: str) -> bytes | None:
        users = self.users
        if users is None:
            return None
        result: bytes | None = users.nt_hash(name)
        return result

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Route the pools into the TUN (replies from the LAN and the sites reach clients);
        open the RADIUS socket (in the running loop)."""
        self._sync_kernel([n for pool in self.pools for n in (r.network for r in pool.ranges)])
        self._switch_radius()

    def _switch_radius(self) -> None:
        """Swap in the RADIUS transport configure() made, or close it if RADIUS is off."""
        fresh, self._new_radius = self._new_radius, None
        if fresh is not None:
            if self.radius is not None:
                self.radius.close()  # requests in flight time out; clients retry
            fresh.open()
            self.radius, self._radius_settings = fresh, self.p2s.radius
        elif "eap-radius" not in self.p2s.auth and self.radius is not None:
            self.radius.close()
            self.radius = self._radius_settings = None

    def _sync_kernel(self, prefixes: list[Any]) -> None:
        kernel = self.gw.kernel
        if kernel is None:
            self.kernel_prefixes = prefixes
            return
        for net in [n for n in self.kernel_prefixes if n not in prefixes]:
            with contextlib.suppress(OSError):
                kernel.remove(net)
        for net in prefixes:
            try:
                kernel.add(net)
            except OSError as exc:
                self.log.error("kernel_route_failed", prefix=str(net), error=str(exc))
        self.kernel_prefixes = prefixes

    def stop(self, reason: str) -> None:
        """Delete every client's IKE SA (the daemon stops, or [p2s] left the config)."""
        now = time.time()
        for s in list(self.clients):
            if s.state is not State.CLOSED:
                s.delete(now, reason)
                self.gw.service(s)

    def remove(self) -> None:
        self.stop("point-to-site removed")
        self._sync_kernel([])
        self.close()

    def close(self) -> None:
        """Release the RADIUS socket (the daemon closes, or [p2s] left the config)."""
        for transport in (self.radius, self._new_radius):
            if transport is not None:
                transport.close()
        self.radius = self._new_radius = None

    # ------------------------------------------------------------------ admission

    @property
    def live(self) -> int:
        """Clients connected or connecting (a session leaves ``clients`` once CLOSED)."""
        return len(self.clients)

    def accepting(self, remote: str, now: float) -> bool:
        """Room for one more client? Refusals are logged (at most once a second)."""
        if self.gw.stopping:
            return False
        if self.live < self.p2s.max_clients:
            return True
        self.refused += 1
        if now - self._last_refusal.get("max_clients", 0.0) >= REFUSAL_LOG_INTERVAL:
            self._last_refusal["max_clients"] = now
            self.log.warning(
                "p2s_refused",
                remote=remote,
                reason="max_clients",
                max_clients=self.p2s.max_clients,
                refused_total=self.refused,
            )
        return False

    def new_session(self, remote: tuple[str, int], local_port: int, now: float) -> IkeSession:
        """A responder session for a client starting an IKE SA (accepting() said yes)."""
        gw = self.gw.gateway
        s = IkeSession(
            self.session_config,
            initiator=False,
            local_addr=(str(gw.address), local_port),
            remote_addr=(remote[0], remote[1]),
            now=now,
            spi_alloc=self.gw.alloc_spi,
        )
        self.adopt(s)
        return s

    def adopt(self, s: IkeSession) -> None:
        if s not in self.clients:
            self.clients[s] = P2sClient(s, remote=s.remote_addr)

    def owns(self, s: IkeSession) -> bool:
        return s in self.clients

    @staticmethod
    def is_p2s(s: IkeSession) -> bool:
        return s.config.name == P2S_SESSION

    def observe(self, s: IkeSession) -> None:
        """Called whenever the daemon services a session: notes EAP rounds in IKE_AUTH."""
        c = self.clients.get(s)
        if c is not None and s.eap is not None:
            c.saw_eap = True

    # ------------------------------------------------------------------ events

    def on_event(self, s: IkeSession, e: Any) -> None:
        self.adopt(s)
        handler = getattr(self, "_on_" + type(e).__name__, None)
        if handler is not None:
            handler(self.clients[s], e)

    def _auth_method(self, c: P2sClient) -> str:
        if not c.saw_eap:
            return "certificate"
        if c.relayed:
            return "eap-radius"
        return "eap-mschapv2" if "eap-mschapv2" in self.p2s.auth else "eap"

    def _on_EapPending(self, c: P2sClient, e: ev.EapPending) -> None:
        c.saw_eap = c.relayed = True
        if self.radius is None:  # RADIUS switched off meanwhile: nobody will answer
            c.session.close("RADIUS is not configured", time.time())
            return
        self.radius.submit(c.session, e)

    def _on_IkeSaUp(self, c: P2sClient, e: ev.IkeSaUp) -> None:
        c.established_at = e.established_at
        c.remote = (e.remote_addr[0], e.remote_addr[1])
        c.ike_id = e.remote_id
        c.auth = self._auth_method(c)
        if c.auth == "certificate" and self.trust is not None:
            c.cert = self.trust.take_last()

    def _on_VirtualIpAssigned(self, c: P2sClient, e: ev.VirtualIpAssigned) -> None:
        if c.identity is None:
            c.identity = e.identity
            older = self.by_identity.setdefault(e.identity, [])
            older.append(c.session)
            for o in [o for o in older if o is not c.session and o.state is State.ESTABLISHED]:
                self.log.info("p2s_client_replaced", identity=e.identity, remote=_addr(o))
                if o in self.clients:
                    self._retire(self.clients[o])
                o.delete(time.time(), "replaced by a new connection of the same identity")
                self.gw.service(o)
        if e.address not in c.vips:
            c.vips.append(e.address)

    def _on_VirtualIpFailed(self, c: P2sClient, e: ev.VirtualIpFailed) -> None:
        self.log.warning(
            "p2s_pool_exhausted", identity=e.identity, remote=_addr(c.session), reason=e.reason
        )
        c.reason = "address pool exhausted"
        c.session.delete(time.time(), "no virtual IP left")

    def _on_ChildSaUp(self, c: P2sClient, e: ev.ChildSaUp) -> None:
        if not c.vips or c.identity is None:
            # Without a virtual IP its selectors would claim the whole pool.
            self.log.warning(
                "p2s_refused", remote=_addr(c.session), reason="no virtual IP requested"
            )
            c.reason = "no virtual IP requested"
            c.session.delete(time.time(), "no virtual IP requested")
            return
        rec = self._install(c, e.child)
        self._refresh(c.identity)
        if not c.connected_logged:
            c.connected_logged = True
            self.log.info(
                "p2s_client_connected",
                identity=c.identity,
                virtual_ip=[str(v) for v in c.vips],
                remote=_addr(c.session),
                auth=c.auth,
                ike_id=c.ike_id,
                spi_in=f"{rec.info.spi_in:08x}",
                spi_out=f"{rec.info.spi_out:08x}",
            )

    def _on_ChildSaRekeyed(self, c: P2sClient, e: ev.ChildSaRekeyed) -> None:
        if c.identity is None:
            return
        old = c.records.get(e.old_child_id)
        rec = self._install(c, e.child)
        rec.eligible = e.outbound_now
        if old is not None and e.outbound_now:
            old.eligible = False
        self._refresh(c.identity)

    def _on_ChildSaDown(self, c: P2sClient, e: ev.ChildSaDown) -> None:
        rec = c.records.pop(e.child_id, None)
        if e.successor is not None and e.successor in c.records:
            c.records[e.successor].eligible = True
        if rec is not None and c.identity is not None:
            self._refresh(c.identity)
            self._uninstall(rec)

    def _on_AuthFailed(self, c: P2sClient, e: ev.AuthFailed) -> None:
        c.reason = f"authentication failed: {e.reason}"
        self.log.warning("p2s_auth_failed", remote=_addr(c.session), reason=e.reason)

    def _on_NegotiationFailed(self, c: P2sClient, e: ev.NegotiationFailed) -> None:
        c.reason = f"negotiation failed: {e.reason}"
        self.log.warning("p2s_negotiation_failed", remote=_addr(c.session), reason=e.reason)

    def _on_ChildSaFailed(self, c: P2sClient, e: ev.ChildSaFailed) -> None:
        self.log.warning("p2s_child_sa_failed", identity=c.identity, reason=e.reason)

    def _on_PeerDead(self, c: P2sClient, e: ev.PeerDead) -> None:
        c.reason = f"peer dead: {e.reason}"

    def _on_IkeSaDown(self, c: P2sClient, e: ev.IkeSaDown) -> None:
        c.reason = c.reason or e.reason

    def _on_PeerAddressChanged(self, c: P2sClient, e: ev.PeerAddressChanged) -> None:
        """MOBIKE (RFC 4555): the client moved; its SAs and virtual IP stay, ESP follows."""
        c.remote = (e.new[0], e.new[1])
        if self.gw.endpoints is not None:
            retarget(c.records.values(), self.gw.endpoints, e.new, e.udp)
        self.log.info(
            "p2s_client_moved",
            identity=c.identity,
            old=f"{e.old[0]}:{e.old[1]}",
            new=f"{e.new[0]}:{e.new[1]}",
        )

    def on_closed(self, s: IkeSession) -> None:
        c = self.clients.pop(s, None)
        if c is None:
            return
        now = time.time()
        if self.radius is not None:
            self.radius.forget(s)
        identity = c.identity
        records, c.records = list(c.records.values()), {}
        if identity is not None:
            sessions = self.by_identity.get(identity, [])
            if s in sessions:
                sessions.remove(s)
            self._refresh(identity)  # another session of the identity takes over first
            for rec in records:
                self._uninstall(rec)
            if not any(o.state is not State.CLOSED for o in sessions):
                self.by_identity.pop(identity, None)
                self.provider.release(identity, now)
        if c.established_at is not None:
            self.log.info(
                "p2s_client_disconnected",
                identity=identity or c.ike_id,
                virtual_ip=[str(v) for v in c.vips],
                remote=_addr(s),
                reason=c.reason or s.close_reason or "closed",
            )

    # ------------------------------------------------------------------ data path

    def _transport(self, remote: tuple[str, int], udp: bool) -> Transport:
        ep = self.gw.endpoints
        assert ep is not None, "clients exist only while the endpoints are open"
        return transport_to(ep, remote, udp)

    def _install(self, c: P2sClient, info: ev.ChildSaInfo) -> ChildRecord:
        assert c.identity is not None
        sources = [Selector.from_network(str(_host(v))) for v in c.vips]
        rec = ChildRecord.build(
            c.session,
            info,
            route_site(c.identity),
            self._transport(info.remote_addr, info.udp_encap),
            self.gw.gateway.replay_window,
            sources,
        )
        self.gw.sadb.install_inbound(rec.inbound)
        c.records[info.child_id] = rec
        return rec

    def _uninstall(self, rec: ChildRecord) -> None:
        sadb = self.gw.sadb
        sadb.remove_inbound(rec.info.spi_in)
        if sadb.outbound(rec.key) is rec.outbound:
            sadb.remove_outbound(rec.key)

    def _retire(self, c: P2sClient) -> None:
        for rec in c.records.values():
            rec.eligible = False
        if c.identity is not None:
            self._refresh(c.identity)

    def _refresh(self, identity: str) -> None:
        """Point the identity's host routes at its newest eligible Child SA, or remove them."""
        site = route_site(identity)
        key = (site, P2S_CHILD)
        best: ChildRecord | None = None
        vips: list[IPAddress] = []
        for s in self.by_identity.get(identity, []):
            c = self.clients.get(s)
            if c is None or s.state is not State.ESTABLISHED:
                continue
            for rec in c.records.values():
                newer = best is None or (rec.info.established_at, rec.created_mono) > (
                    best.info.established_at,
                    best.created_mono,
                )
                if rec.eligible and newer:
                    best, vips = rec, c.vips
        sadb, routes = self.gw.sadb, self.gw.routes
        routed = self._routed.get(identity)
        if best is None:
            sadb.remove_outbound(key)
            if routed is not None:
                del self._routed[identity]
                routes.remove_site(site)
            return
        if sadb.outbound(key) is not best.outbound:
            sadb.install_outbound(key, best.outbound)
        if routed == tuple(vips):
            return  # the routes name the key, which now leads to the new SA
        # Each route-table edit rebuilds the lookup snapshot: edit only on a change.
        with routes.batch():
            if routed is not None:
                routes.remove_site(site)
            for vip in vips:
                try:
                    routes.add(_host(vip), site, key)
                except RouteConflict as exc:  # the config check keeps pools apart; log anyway
                    self.log.error("p2s_route_conflict", virtual_ip=str(vip), error=str(exc))
        self._routed[identity] = tuple(vips)

    # ------------------------------------------------------------------ housekeeping

    def housekeeping(self, now: float) -> None:
        """Once a second: liveness from ESP traffic, byte limits, NAT keepalives."""
        touched: list[IkeSession] = []
        for c in list(self.clients.values()):
            s = c.session
            if s.state is not State.ESTABLISHED:
                continue
            for rec in list(c.records.values()):
                packets = rec.inbound.packets
                if packets != rec.seen_packets_in:
                    rec.seen_packets_in = packets
                    s.note_inbound_traffic(now)
                if rec.over_hard_bytes():
                    s.delete_child(rec.child_id, now)
                    touched.append(s)
                elif not rec.rekey_requested and (
                    rec.outbound.needs_rekey or rec.inbound.needs_rekey
                ):
                    rec.rekey_requested = True
                    s.child_limit_reached(rec.child_id, now)
                    touched.append(s)
        if now - self._last_keepalive >= KEEPALIVE_INTERVAL and self.gw.endpoints is not None:
            self._last_keepalive = now
            for s in self.clients:
                if s.state is State.ESTABLISHED and s.nat_local:
                    with contextlib.suppress(OSError):
                        self.gw.endpoints.nat_t.sendto(b"\xff", s.remote_addr)
        for s in dict.fromkeys(touched):
            self.gw.service(s)

    # ------------------------------------------------------------------ reload

    def reload(self, config: Config, creds: Credentials) -> dict[str, int]:
        """New [p2s], users, revocation list: keep each client its config still allows,
        delete the others. P2sSetupError leaves everything as it was."""
        self.configure(config, creds)
        self._switch_radius()
        nets = [n for pool in self.pools for n in (r.network for r in pool.ranges)]
        self._sync_kernel(nets)
        kept = dropped = 0
        now = time.time()
        for c in list(self.clients.values()):
            if c.established_at is None:
                continue
            why = self._disallowed(c, nets)
            if why is None:
                kept += 1
                continue
            dropped += 1
            c.reason = why
            self.log.info("p2s_client_dropped", identity=c.identity, reason=why)
            self._retire(c)
            c.session.delete(now, why)
            self.gw.service(c.session)
        for c in self.clients.values():  # sessions keep their config object: give them this one
            c.session.config = self.session_config
        return {"kept": kept, "dropped": dropped}

    def _disallowed(self, c: P2sClient, nets: list[Any]) -> str | None:
        """Why the new config no longer admits this client, or None."""
        auth = c.auth or "certificate"
        if auth != "eap" and auth not in self.p2s.auth:
            return f"auth method {auth} no longer allowed"
        if auth == "eap-mschapv2" and c.identity is not None and self._nt_hash(c.identity) is None:
            return f"user {c.identity} removed"
        if c.cert is not None and self.hook(c.cert):
            return "certificate revoked"
        for vip in c.vips:
            if not any(vip in n for n in nets):
                return f"virtual IP {vip} is outside the new pools"
        return None

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        size = sum(r.size for pool in self.pools for r in pool.ranges)
        clients = []
        for c in self.clients.values():
            if c.established_at is None:
                continue
            recs = list(c.records.values())
            clients.append(
                {
                    "identity": c.identity or c.ike_id,
                    "ike_id": c.ike_id,
                    "auth": c.auth,
                    "virtual_ips": [str(v) for v in c.vips],
                    "remote": _addr(c.session),
                    "established_s": round(max(0.0, now - c.established_at), 1),
                    "state": c.session.state.value,
                    "ike_spi_i": c.session.sa.spi_i.hex() if c.session.sa else None,
                    "ike_spi_r": c.session.sa.spi_r.hex() if c.session.sa else None,
                    "bytes_in": sum(r.inbound.bytes for r in recs),
                    "bytes_out": sum(r.outbound.bytes for r in recs),
                    "packets_in": sum(r.inbound.packets for r in recs),
                    "packets_out": sum(r.outbound.packets for r in recs),
                    "child_sas": [r.status(now) for r in recs],
                }
            )
        clients.sort(key=lambda x: (str(x["identity"]), x["established_s"]))
        return {
            "pool": {
                "prefixes": [str(n) for n in self.p2s.address_pool],
                "size": size,
                "used": sum(pool.active for pool in self.pools),
                "reserved": sum(len(pool.leases) for pool in self.pools),
            },
            "max_clients": self.p2s.max_clients,
            "auth": list(self.p2s.auth),
            "connecting": sum(1 for c in self.clients.values() if c.established_at is None),
            "refused": self.refused,
            "radius": self.radius.status() if self.radius is not None else None,
            "clients": clients,
        }


def _carry_leases(old: list[AddressPool], new: list[AddressPool]) -> list[AddressPool]:
    """Leases whose address the new pools still hold move over (connected clients and
    reserved ones); the rest are gone, and reload drops their clients."""
    for pool in new:
        for lease in (
            lease for o in old if o.version == pool.version for lease in o.leases.values()
        ):
            if any(r.first <= int(lease.address) <= r.last for r in pool.ranges):
                pool.leases[lease.identity] = lease
                pool.by_address[lease.address] = lease
    return new


def _addr(s: IkeSession) -> str:
    host, port = s.remote_addr[0], s.remote_addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _load_users(p2s: P2s) -> Any:
    if p2s.users_file is None:
        return None
    from gatewayd.p2s.users import UsersFileError, load_users

    try:
        return load_users(p2s.users_file)
    except (UsersFileError, OSError) as exc:
        raise P2sSetupError(f"p2s.users_file: {exc}") from None


def _radius_transport(p2s: P2s, service: Any) -> Any:
    from gatewayd.p2s.radius import RadiusSetupError, RadiusTransport

    try:
        return RadiusTransport.from_config(p2s.radius, service)
    except RadiusSetupError as exc:
        raise P2sSetupError(f"p2s.radius: {exc}") from None


def _load_revoked(p2s: P2s) -> Any:
    if p2s.revoked is None:
        return None
    from gatewayd.p2s.revocation import RevocationError, load_revocation_list

    try:
        return load_revocation_list(p2s.revoked)
    except (RevocationError, OSError) as exc:
        raise P2sSetupError(f"p2s.revoked: {exc}") from None
