"""In-memory two-peer harness: an initiator and a responder IkeSession joined by a fake wire.

The clock is fixed and advanced by hand, randomness is seeded, so every run is identical.
Datagrams can be dropped, duplicated, reordered or held to build the hard cases.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.base import KeyExchange
from ike.crypto.ke_fixed import from_private_bytes
from ike.crypto.proposals import parse_proposal
from ike.dispatcher import Dispatcher
from ike.session import ChildConfig, SessionConfig
from ike.session import events as ev
from ike.session.session import Datagram, IkeSession
from ike.session.ts import any_selectors, from_network

T0 = 1_700_000_000.0
ADDR_I = ("192.0.2.1", 500)
ADDR_R = ("198.51.100.2", 500)
PSK = b"a-very-long-pre-shared-key-for-tests"


def seeded(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return r.randbytes


_PRIVATE_LEN = {19: 32, 20: 48, 21: 66, 31: 32}


def seeded_ke(seed: int) -> Callable[[int], KeyExchange]:
    """Key exchanges whose private values come from a seeded generator: replayable."""
    rng = random.Random(seed ^ 0x5EED)

    def factory(group: int) -> KeyExchange:
        raw = bytearray(rng.randbytes(_PRIVATE_LEN.get(group, 32)))
        if group == 21:
            raw[0] &= 0x01  # a P-521 scalar has 521 bits
        raw[0] |= 0x01 if group == 21 else 0x10  # never zero, never tiny
        return from_private_bytes(group, bytes(raw))

    return factory


def make_config(
    name: str = "site",
    local_id: str = ADDR_I[0],
    remote_id: str = ADDR_R[0],
    ike: tuple[str, ...] = ("aes256gcm16-prfsha256-x25519",),
    esp: tuple[str, ...] = ("aes256gcm16",),
    psk: bytes | None = PSK,
    local_nets: tuple[str, ...] | None = None,
    remote_nets: tuple[str, ...] | None = None,
    **kw: object,
) -> SessionConfig:
    esp_props = tuple(parse_proposal(p, ProtocolId.ESP) for p in esp)
    if local_nets is None and remote_nets is None:
        children = [ChildConfig("net", any_selectors(), any_selectors(), esp_props)]
    else:
        children = [
            ChildConfig(f"{ln}-{rn}", (from_network(ln),), (from_network(rn),), esp_props)
            for ln in (local_nets or ("0.0.0.0/0",))
            for rn in (remote_nets or ("0.0.0.0/0",))
        ]
    return SessionConfig(
        name=name,
        local_id=Identity.parse(local_id),
        remote_id=Identity.parse(remote_id),
        ike_proposals=[parse_proposal(p, ProtocolId.IKE) for p in ike],
        children=children,
        psk=psk,
        **kw,  # type: ignore[arg-type]
    )


@dataclass
class Wire:
    """What crossed the wire, for assertions (and replays)."""

    log: list[tuple[str, bytes]] = field(default_factory=list)


class Pair:
    def __init__(
        self,
        cfg_i: SessionConfig | None = None,
        cfg_r: SessionConfig | None = None,
        *,
        seed: int = 1,
        now: float = T0,
        addr_i: tuple[str, int] = ADDR_I,
        addr_r: tuple[str, int] = ADDR_R,
        dispatcher_opts: dict[str, int] | None = None,
    ) -> None:
        dispatcher_opts = dispatcher_opts or {}
        self.now = now
        self.cfg_i = cfg_i or make_config()
        self.cfg_r = cfg_r or make_config(local_id=addr_r[0], remote_id=addr_i[0])
        self.addr_i, self.addr_r = addr_i, addr_r
        self.i = IkeSession(
            self.cfg_i,
            initiator=True,
            local_addr=addr_i,
            remote_addr=addr_r,
            now=now,
            rng=seeded(seed),
            ke_factory=seeded_ke(seed),
        )
        self.events_i: list[ev.Event] = []
        self.events_r: list[ev.Event] = []
        self._seed = seed + 1
        # The responder side is a Dispatcher, as in the daemon: it admits new sessions.
        self.dispatcher = Dispatcher(self._admit, rng=seeded(seed + 1000), **dispatcher_opts)
        self.r = self.new_responder(self._seed)
        self.wire = Wire()
        # Filters see (direction, datagram) and return the datagrams to deliver.
        self.filter: Callable[[str, Datagram], list[Datagram]] = lambda d, g: [g]

    def new_responder(self, seed: int) -> IkeSession:
        return IkeSession(
            self.cfg_r,
            initiator=False,
            local_addr=self.addr_r,
            remote_addr=self.addr_i,
            now=self.now,
            rng=seeded(seed),
            ke_factory=seeded_ke(seed),
        )

    def _admit(self, remote: tuple[str, int], local: tuple[str, int], now: float) -> IkeSession:
        if self.r.state.value != "idle":
            self._drain_events()
            self._seed += 1
            self.r = self.new_responder(self._seed)
        return self.r

    def _drain_events(self) -> None:
        for s, out in ((self.i, self.events_i), (self.r, self.events_r)):
            while (e := s.next_event()) is not None:
                out.append(e)

    def pending(self) -> list[tuple[str, Datagram]]:
        out = [("i->r", g) for g in self.i.datagrams_to_send()]
        out += [("r->i", g) for g in self.r.datagrams_to_send()]
        out += [("r->i", g) for g in self.dispatcher.replies]
        self.dispatcher.replies = []
        return out

    def deliver(self, direction: str, g: Datagram) -> None:
        self.wire.log.append((direction, g.data))
        if direction == "i->r":
            self.dispatcher.receive(g.data, (self.addr_i[0], g.local_port), self.now)
        else:
            self.i.receive_datagram(g.data, (self.addr_r[0], g.local_port), self.now)

    def run(self, max_steps: int = 200) -> None:
        """Deliver datagrams until both sides are quiet."""
        for _ in range(max_steps):
            batch = self.pending()
            if not batch:
                break
            for direction, g in batch:
                for out in self.filter(direction, g):
                    self.deliver(direction, out)
        self._drain_events()

    def advance(self, seconds: float) -> None:
        """Move the clock, firing timers on both sides in order, delivering as we go."""
        end = self.now + seconds
        while True:
            timers = [
                t for t in (self.i.get_timer(), self.r.get_timer()) if t is not None and t <= end
            ]
            if not timers:
                break
            self.now = max(self.now, min(timers))
            for s in (self.i, self.r):
                t = s.get_timer()
                if t is not None and t <= self.now:
                    s.handle_timer(self.now)
            self.run()
        self.now = end
        self.run()

    def connect(self) -> None:
        self.i.initiate(self.now)
        self.run()

    def of(self, side: str, cls: type) -> list:  # type: ignore[type-arg]
        events = self.events_i if side == "i" else self.events_r
        return [e for e in events if isinstance(e, cls)]
