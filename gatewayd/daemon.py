"""`gatewayd run`: the gateway process.

The asyncio loop is the control plane: IKE sessions (one per site, plus responders being
set up), their timers, the control socket, signals and housekeeping. The packet loops
run in their own threads (esp.datapath) and see the control plane's work only through
the SA table and the route table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
import time
from collections import deque
from dataclasses import replace
from typing import Any

from esp.datapath import DataPath
from esp.route_table import RouteTable
from esp.sadb import SaDatabase
from esp.tun import TunDevice, TunError
from gatewayd import systemd
from gatewayd.config import Config, ConfigError, load_config
from gatewayd.control import ControlError, ControlServer
from gatewayd.ikeconf import Credentials, session_config
from gatewayd.kernel import KernelRoutes
from gatewayd.logging import configure_logging, get_logger
from gatewayd.netio import EndpointError, Endpoints, open_endpoints
from gatewayd.p2s.runner import P2sRunner, P2sSetupError
from gatewayd.pump import pump
from gatewayd.site import SiteRunner
from gatewayd.status import gateway_status, routes_status
from ike.dispatcher import Dispatcher
from ike.session import IkeSession
from ike.session.events import AuthFailed, NegotiationFailed
from ike.session.session import Datagram, State

NON_ESP_MARKER = b"\x00\x00\x00\x00"
IKE_INBOX_LIMIT = 4096  # IKE messages queued from the data-path thread; beyond: dropped
IKE_DRAIN_BATCH = 256
HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 3.0  # seconds to let DELETEs be answered at SIGTERM

log = get_logger(component="gateway")


class StartupError(Exception):
    """The gateway cannot start; the message is the one line the operator sees."""


class GatewayDaemon:
    def __init__(self, config: Config, config_path: str) -> None:
        self.config = config
        self.config_path = config_path
        self.gateway = config.gateway
        self.started_mono = time.monotonic()
        self.stopping = False
        self.sadb = SaDatabase()
        self.routes: RouteTable[Any] = RouteTable()
        self.sites: dict[str, SiteRunner] = {}
        self._site_index: tuple[dict[Any, list[SiteRunner]], list[SiteRunner]] | None = None
        self.sessions: dict[IkeSession, SiteRunner | P2sRunner | None] = {}
        self.p2s: P2sRunner | None = None
        self.dispatcher = Dispatcher(self._new_responder)
        self.creds = Credentials()
        self.ike_drops = 0
        self._timers: dict[IkeSession, asyncio.TimerHandle] = {}
        self._inbox: deque[tuple[bytes, Any, int]] = deque()
        self._inbox_scheduled = False
        self._rx_port = self.gateway.ike_port
        self._recent_spis: deque[int] = deque(maxlen=4096)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.loop = asyncio.get_running_loop()
        self.tun: TunDevice | None = None
        self.endpoints: Endpoints | None = None
        self.kernel: KernelRoutes | None = None
        self.datapath: DataPath | None = None
        self.control: ControlServer | None = None

    # ================================================================== lifecycle

    async def start(self) -> None:
        gw = self.gateway
        try:
            self.creds = Credentials.load(gw)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot load credentials: {exc}") from None
        if self.config.p2s is not None:
            try:
                self.p2s = P2sRunner(self, self.config, self.creds)
            except (P2sSetupError, OSError, ValueError) as exc:
                raise StartupError(f"cannot set up point-to-site: {exc}") from None
        try:
            self.endpoints = open_endpoints(str(gw.address), gw.ike_port, gw.nat_t_port)
        except EndpointError as exc:
            raise StartupError(str(exc.strerror or exc)) from None
        try:
            self.tun = TunDevice.open(gw.interface, gw.mtu)
        except (TunError, OSError) as exc:
            raise StartupError(f"cannot open TUN device {gw.interface}: {exc}") from None
        # A site reached by a default route (0/0) would capture the host's own LAN traffic
        # too; then the main table's specific routes must win over the tunnel table.
        default_route_site = any(n.prefixlen == 0 for s in self.config.sites for n in s.networks)
        self.kernel = KernelRoutes(
            gw.interface,
            source_networks=gw.networks,
            suppress_main_default=default_route_site,
        )
        try:
            self.kernel.install_rules()
            self.kernel.flush()  # routes left by a previous run that crashed
        except OSError as exc:
            raise StartupError(f"cannot install routing rules: {exc}") from None
        self.datapath = DataPath(
            self.tun,
            self.sadb,
            self.routes,
            udp_sock=self.endpoints.nat_t,
            raw_sock=self.endpoints.esp,
            deliver_ike=self._deliver_from_thread,
        )
        self.datapath.start()
        self.loop.add_reader(self.endpoints.ike.fileno(), self._read_ike_port)
        self.control = ControlServer(gw.control_socket, self._handle_control)
        try:
            await self.control.start()
        except OSError as exc:
            raise StartupError(f"cannot open control socket {gw.control_socket}: {exc}") from None
        for site in self.config.sites:
            self._add_site(self.config, site)
        for runner in self.sites.values():
            runner.start()
        if self.p2s is not None:
            self.p2s.start()
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(systemd.watchdog_loop()))
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self._on_sighup),
        ):
            self.loop.add_signal_handler(sig, handler)
        systemd.ready(f"{len(self.sites)} sites")
        log.info(
            "gateway ready",
            gateway=gw.name,
            address=str(gw.address),
            interface=self.tun.name,
            sites=len(self.sites),
            p2s=self.p2s is not None,
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        systemd.stopping()
        log.info("gateway stopping", sessions=len(self.sessions))
        for runner in self.sites.values():
            runner.delete_all("gateway stopping")
        if self.p2s is not None:
            self.p2s.stop("gateway stopping")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while time.monotonic() < deadline and any(
            s.state is not State.CLOSED for s in self.sessions
        ):
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.close("gateway stopped", time.time())
            self.service(s)
        await self.close()
        log.info("gateway stopped")

    async def close(self) -> None:
        """Release everything start() took, whatever state it got to."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.endpoints is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.endpoints.ike.fileno())
        if self.p2s is not None:
            self.p2s.close()
        if self.tun is not None:
            self.tun.shutdown()
        if self.datapath is not None:
            self.datapath.stop()
        if self.kernel is not None:
            with contextlib.suppress(Exception):
                self.kernel.flush()
            with contextlib.suppress(Exception):
                self.kernel.remove_rules()
            self.kernel.close()
        if self.tun is not None:
            self.tun.close()
        if self.control is not None:
            await self.control.close()
        if self.endpoints is not None:
            self.endpoints.close()

    # ================================================================== sites

    def _add_site(self, config: Config, site: Any) -> SiteRunner:
        runner = SiteRunner(
            self, site, session_config(config, site, self.creds), config.site_fingerprint(site)
        )
        self.sites[site.name] = runner
        self._site_index = None
        return runner

    def _sites_at(self, ip: str) -> tuple[list[SiteRunner], list[SiteRunner]]:
        """(sites a peer at ``ip`` may start an IKE SA for: those with its address, then
        the %any ones; sites with its address that refuse it now: down, initiate-only).
        An index by address, rebuilt after sites change: with 1,000 sites a scan per
        IKE_SA_INIT cost more than the rest of the exchange."""
        if self._site_index is None:
            by_address: dict[Any, list[SiteRunner]] = {}
            anywhere: list[SiteRunner] = []
            for r in self.sites.values():
                if r.site.any_address:
                    anywhere.append(r)
                else:
                    by_address.setdefault(r.site.address, []).append(r)
            self._site_index = (by_address, anywhere)
        by_address, anywhere = self._site_index
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return [], []
        mine = by_address.get(addr, [])
        accepting = [r for r in (*mine, *anywhere) if r.accepts_from(ip)]
        return accepting, [r for r in mine if r not in accepting]

    def adopt(self, session: IkeSession, site: SiteRunner | P2sRunner | None) -> None:
        self.sessions[session] = site
        if isinstance(site, P2sRunner):
            site.adopt(session)
        elif site is not None and session not in site.sessions:
            site.sessions.append(session)

    # ================================================================== IKE in/out

    def _deliver_from_thread(self, data: bytes, addr: Any, port: int) -> None:
        """Called by the inbound packet thread for IKE on port 4500: queue, bounded."""
        if len(self._inbox) >= IKE_INBOX_LIMIT:
            self.ike_drops += 1
            return
        self._inbox.append((data, addr, port))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            self.loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False
        for _ in range(len(self._inbox)):
            data, addr, port = self._inbox.popleft()
            self._receive_ike(data, addr, port)

    def _read_ike_port(self) -> None:
        assert self.endpoints is not None
        sock = self.endpoints.ike
        for _ in range(IKE_DRAIN_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            self._receive_ike(data, addr, self.gateway.ike_port)

    def _receive_ike(self, data: bytes, addr: Any, port: int) -> None:
        peer = (addr[0], addr[1])
        self._rx_port = port
        try:
            session = self.dispatcher.receive(data, peer, time.time())
        except Exception:  # the engine must never take the daemon down
            self.ike_drops += 1
            log.exception("ike receive failed", remote=peer[0])
            return
        self._send_replies()
        if session is not None:
            if session not in self.sessions:
                self.adopt(session, None)
            self.service(session)

    def _send_replies(self) -> None:
        replies, self.dispatcher.replies = self.dispatcher.replies, []
        for d in replies:
            # Stateless answers (cookies, INVALID_MAJOR_VERSION) leave on the socket the
            # request came in on: local_port 0 means just that.
            self._send(d if d.local_port else Datagram(d.data, self._rx_port, d.remote))

    def _send(self, d: Datagram) -> None:
        assert self.endpoints is not None
        try:
            if d.local_port == self.gateway.nat_t_port:
                self.endpoints.nat_t.sendto(NON_ESP_MARKER + d.data, d.remote)
            else:
                self.endpoints.ike.sendto(d.data, d.remote)
        except OSError as exc:
            log.debug("ike send failed", remote=d.remote[0], error=str(exc))

    def _new_responder(self, _local: Any, remote: Any, now: float) -> IkeSession | None:
        """A peer starts an IKE SA: find the sites it may be, or refuse (None)."""
        ip = remote[0]
        candidates, refusing = self._sites_at(ip)
        p2s = self.p2s
        if refusing and not any(not r.site.any_address for r in candidates):
            # The address is a site's, which refuses it now: never a remote client (its
            # certificate may well chain to the clients' CA); a %any site may claim it.
            if candidates:
                return self._responder_for(candidates, remote, now, None)
            down = [r.name for r in refusing if r.admin_down]
            why = (
                f"site {down[0]} is down by operator"
                if down
                else f"site {refusing[0].name} does not accept it now"
            )
            log.info("ike_sa_refused", remote=ip, reason=why)
            return None
        if p2s is not None and not any(not r.site.any_address for r in candidates):
            # No site has this address: a remote client, or (by its identity, in IKE_AUTH)
            # one of the %any sites.
            if not candidates:
                if not p2s.accepting(ip, now):
                    return None
                session = p2s.new_session(remote, self._rx_port, now)
                self.adopt(session, p2s)
                return session
            return self._responder_for(candidates, remote, now, p2s)
        if not candidates:
            log.info("ike_sa_refused", remote=ip, reason="no site has this address")
            return None
        return self._responder_for(candidates, remote, now, None)

    def _responder_for(
        self, candidates: list[SiteRunner], remote: Any, now: float, p2s: P2sRunner | None
    ) -> IkeSession:
        """A responder session that IKE_AUTH resolves to one of the candidate sites or,
        when no site's identity matches and ``p2s`` is given, to a remote client."""
        ip = remote[0]
        exact = [r for r in candidates if not r.site.any_address]
        first = (exact or candidates)[0]
        cfg = first.session_config
        if len(candidates) > 1 or p2s is not None:
            # Until IKE_AUTH names the peer, accept any candidate's IKE proposals.
            configs = [r.session_config for r in candidates]
            if p2s is not None:
                configs.append(p2s.session_config)
            proposals = [p for c in configs for p in c.ike_proposals]
            cfg = replace(cfg, ike_proposals=proposals)

        def resolve(identity: Any, _wanted: Any) -> Any:
            for r in candidates:
                if r.accepts_from(ip) and r.session_config.remote_id.matches(identity):
                    return r.session_config
            if p2s is not None and p2s.accepting(ip, time.time()):
                return p2s.session_config
            return None

        gw = self.gateway
        return IkeSession(
            cfg,
            initiator=False,
            local_addr=(str(gw.address), self._rx_port),
            remote_addr=(remote[0], remote[1]),
            now=now,
            config_resolver=resolve,
            spi_alloc=self.alloc_spi,
        )

    # ================================================================== sessions

    def alloc_spi(self) -> int:
        """A random inbound ESP SPI that no installed or recently offered SA uses."""
        while True:
            spi = int.from_bytes(os.urandom(4), "big")
            if spi > 255 and self.sadb.inbound(spi) is None and spi not in self._recent_spis:
                self._recent_spis.append(spi)
                return spi

    def service(self, s: IkeSession) -> None:
        """After anything touched a session: send, handle events, re-arm its timer."""
        p2s = self.p2s
        if p2s is not None and (p2s.owns(s) or P2sRunner.is_p2s(s)):
            if self.sessions.get(s) is not p2s:  # IKE_AUTH made a %any responder a client
                self.adopt(s, p2s)
            p2s.observe(s)
        pump(s, self._send, self._on_event_safely)
        self.dispatcher.after(s)
        if s.state is State.CLOSED:
            self._closed(s)
        else:
            self._arm_timer(s)

    def _on_event_safely(self, s: IkeSession, e: Any) -> None:
        try:
            self._on_event(s, e)
        except Exception:  # one bad event must not cost other tunnels anything
            log.exception("event handling failed", site=s.config.name, ike_event=type(e).__name__)

    def _on_event(self, s: IkeSession, e: Any) -> None:
        p2s = self.p2s
        if p2s is not None and (p2s.owns(s) or P2sRunner.is_p2s(s)):
            if self.sessions.get(s) is not p2s:
                self.adopt(s, p2s)
            p2s.on_event(s, e)
            return
        runner = self.sessions.get(s)
        if runner is None:
            runner = self.sites.get(s.config.name) if s.state is State.ESTABLISHED else None
            if runner is not None:
                self.adopt(s, runner)
        if runner is not None:
            runner.on_event(s, e)
        elif isinstance(e, AuthFailed | NegotiationFailed) and s.config.name in self.sites:
            # A responder that failed before the peer was adopted: report it on the site
            # it was negotiating as (its address or identity picked it).
            self.sites[s.config.name].on_event(s, e)
        else:
            reason = getattr(e, "reason", "")
            log.info(type(e).__name__, remote=s.remote_addr[0], reason=reason)

    def _closed(self, s: IkeSession) -> None:
        handle = self._timers.pop(s, None)
        if handle is not None:
            handle.cancel()
        self.ike_drops += sum(s.drops.values())
        runner = self.sessions.pop(s, None)
        if runner is not None:
            runner.on_closed(s)

    def _arm_timer(self, s: IkeSession) -> None:
        handle = self._timers.pop(s, None)
        if handle is not None:
            handle.cancel()
        at = s.get_timer()
        if at is None:
            return
        delay = max(0.0, at - time.time())
        self._timers[s] = self.loop.call_later(delay, self._on_timer, s)

    def _on_timer(self, s: IkeSession) -> None:
        self._timers.pop(s, None)
        try:
            s.handle_timer(time.time())
        except Exception:
            log.exception("session timer failed", site=s.config.name)
            s.close("internal error", time.time())
        self.service(s)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            now = time.time()
            for runner in list(self.sites.values()):
                try:
                    runner.housekeeping(now)
                except Exception:
                    log.exception("housekeeping failed", site=runner.name)
            if self.p2s is not None:
                try:
                    self.p2s.housekeeping(now)
                except Exception:
                    log.exception("housekeeping failed", site="p2s")

    # ================================================================== reload

    def _on_sighup(self) -> None:
        try:
            self.reload()
        except ControlError as exc:
            log.error("config reload failed", error=str(exc))

    def reload(self) -> dict[str, list[str]]:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            lines = "\n".join(exc.lines())
            raise ControlError("config invalid; nothing changed:\n" + lines) from None
        except OSError as exc:
            raise ControlError(f"cannot read {self.config_path}: {exc}") from None
        fixed = ("address", "interface", "mtu", "ike_port", "nat_t_port", "control_socket")
        changed_fixed = [k for k in fixed if getattr(new.gateway, k) != getattr(self.gateway, k)]
        if changed_fixed:
            raise ControlError(
                "these [gateway] settings need a restart: " + ", ".join(changed_fixed)
            )
        try:
            creds = Credentials.load(new.gateway)
        except (OSError, ValueError) as exc:
            raise ControlError(f"cannot load credentials: {exc}") from None
        p2s_result = self._reload_p2s(new, creds)
        old_names = set(self.sites)
        new_names = [s.name for s in new.sites]
        result: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        self._site_index = None
        for name in old_names - set(new_names):
            self.sites.pop(name).remove()
            result["removed"].append(name)
            log.info("site removed", site=name)
        self.creds = creds
        for site in new.sites:
            runner = self.sites.get(site.name)
            fingerprint = new.site_fingerprint(site)
            if runner is not None and runner.fingerprint == fingerprint:
                runner.site = site
                runner.session_config = session_config(new, site, creds)
                result["unchanged"].append(site.name)
                continue
            if runner is not None:
                self.sites.pop(site.name).remove()
                result["changed"].append(site.name)
            else:
                result["added"].append(site.name)
                log.info("site added", site=site.name)
            self._add_site(new, site).start()
        self._site_index = None  # addresses may have changed with the sites
        self.config = new
        self.gateway = new.gateway
        log.info("config reloaded", **result, p2s=p2s_result)
        if p2s_result is not None:
            result["p2s"] = [f"{k}={v}" for k, v in p2s_result.items()]
        return result

    def _reload_p2s(self, new: Config, creds: Credentials) -> dict[str, Any] | None:
        """[p2s] added, removed or changed; ControlError (nothing changed) if unusable."""
        try:
            if new.p2s is None:
                if self.p2s is not None:
                    self.p2s.remove()
                    self.p2s = None
                    return {"removed": True}
                return None
            if self.p2s is None:
                self.p2s = P2sRunner(self, new, creds)
                self.p2s.start()
                return {"added": True}
            return dict(self.p2s.reload(new, creds))
        except (P2sSetupError, OSError, ValueError) as exc:
            raise ControlError(f"point-to-site: {exc}; nothing changed") from None

    # ================================================================== control

    async def _handle_control(self, cmd: str, args: dict[str, Any]) -> Any:
        if cmd == "status":
            return gateway_status(self)
        if cmd == "routes":
            return routes_status(self.routes)
        if cmd == "reload":
            return self.reload()
        runner = self.sites.get(str(args.get("site", "")))
        if runner is None:
            raise ControlError(f"no site named {args.get('site')!r}")
        if cmd == "up":
            if not runner.initiates:
                runner.admin_down = False
                return {
                    "site": runner.name,
                    "state": runner.state,
                    "note": "this site does not initiate; waiting for the peer",
                }
            runner.up()
            await self._wait_for(runner, "established", float(args.get("timeout", 8)))
            return {"site": runner.name, "state": runner.state, "reason": runner.reason}
        if cmd == "down":
            runner.down()
            await self._wait_for(runner, "down", 5.0)
            return {"site": runner.name, "state": runner.state}
        if cmd == "rekey":
            count = runner.rekey(bool(args.get("ike")))
            if count == 0:
                raise ControlError(f"site {runner.name} has no established SA to rekey")
            return {
                "site": runner.name,
                "rekeying": "ike" if args.get("ike") else "child",
                "count": count,
            }
        raise ControlError(f"unknown command {cmd!r}")

    @staticmethod
    async def _wait_for(runner: SiteRunner, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while runner.state != state and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


# ====================================================================== entry point


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise StartupError("invalid config: " + "; ".join(exc.lines())) from None
    except OSError as exc:
        raise StartupError(f"cannot read config {path}: {exc.strerror or exc}") from None


async def _main(args: argparse.Namespace) -> int:
    config = _load(args.config)
    daemon = GatewayDaemon(config, args.config)
    try:
        await daemon.run()
    except StartupError:
        await daemon.close()
        raise
    return 0


def run_daemon(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level, getattr(args, "debug_keys", False))
    try:
        return asyncio.run(_main(args))
    except StartupError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)  # the one line the operator reads
        return 1
    except KeyboardInterrupt:
        return 130
