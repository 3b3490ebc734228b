"""The SA table the data-path threads read, and the control plane rarely writes.

Thread safety, without a lock on the read side:
 - Each table is a dict that is never changed once published. A writer copies it, changes
   the copy and rebinds one attribute. Rebinding a reference is atomic (under the GIL, and
   in free-threaded CPython too), so a reader sees the whole old table or the whole new
   one; and a reader that iterates (counters()) holds a snapshot that cannot change size
   under it, as it could if the dict were mutated in place.
 - Writers are serialised by a lock so that two control-plane updates cannot lose each
   other's copy. Copying is O(number of SAs), fine for rare writes.
 - A reader may still be using an SA just removed or replaced; that is harmless (it ends
   its packet with it) and is what make-before-break relies on.

Make-before-break rekey of one child SA:
 1. install_inbound(new_in): old and new inbound SPIs are both accepted;
 2. install_outbound(key, new_out): the next packet sent uses the new SA;
 3. later (the peer has switched too), remove_inbound(old_spi).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field

from esp.sa import DropReason, EspDrop, InboundSa, OutboundSa, Packet

_U32 = struct.Struct("!I")


@dataclass
class EspCounters:
    """Totals over the SAs installed now and those removed before."""

    in_packets: int = 0
    in_bytes: int = 0
    out_packets: int = 0
    out_bytes: int = 0
    out_selector_drops: int = 0
    drops: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))

    def add_inbound(self, sa: InboundSa) -> None:
        self.in_packets += sa.packets
        self.in_bytes += sa.bytes
        for reason, count in sa.drops.items():
            self.drops[reason] += count

    def add_outbound(self, sa: OutboundSa) -> None:
        self.out_packets += sa.packets
        self.out_bytes += sa.bytes
        self.out_selector_drops += sa.selector_drops


class SaDatabase:
    """Inbound SAs by SPI, outbound SAs by the key the route table uses (a child SA id)."""

    def __init__(self) -> None:
        self._inbound: dict[int, InboundSa] = {}
        self._outbound: dict[Hashable, OutboundSa] = {}
        self._write_lock = threading.Lock()
        self._retired = EspCounters()
        # Drops before any SA was found; written by the inbound thread only.
        self.unknown_spi = 0
        self.malformed = 0

    # Data path: lock-free reads.

    def inbound(self, spi: int) -> InboundSa | None:
        return self._inbound.get(spi)

    def outbound(self, key: Hashable) -> OutboundSa | None:
        return self._outbound.get(key)

    @property
    def inbound_table(self) -> dict[int, InboundSa]:
        """The current inbound table by SPI, never changed once published (the packet loop
        takes it per receive call). Do not mutate it."""
        return self._inbound

    @property
    def outbound_table(self) -> dict[Hashable, OutboundSa]:
        """The current outbound table, never changed once published (the packet loop
        takes it per frame read and does one .get per packet). Do not mutate it."""
        return self._outbound

    def open(self, packet: Packet) -> tuple[InboundSa, int, bytes]:
        """Find the SA by SPI and open the packet: (sa, next header, inner); EspDrop."""
        if len(packet) < 8:
            self.malformed += 1
            raise EspDrop(DropReason.MALFORMED)
        sa = self._inbound.get(_U32.unpack_from(packet)[0])
        if sa is None:
            self.unknown_spi += 1
            raise EspDrop(DropReason.UNKNOWN_SPI)
        next_header, inner = sa.open(packet)
        return sa, next_header, inner

    # Control plane: copy, change, rebind.

    def install_inbound(self, sa: InboundSa) -> None:
        with self._write_lock:
            if sa.spi in self._inbound:
                raise ValueError(f"inbound SPI {sa.spi:#x} is already installed")
            table = dict(self._inbound)
            table[sa.spi] = sa
            self._inbound = table

    def install_outbound(self, key: Hashable, sa: OutboundSa) -> OutboundSa | None:
        """Make sa the one used for key; returns the SA it replaced (now retired)."""
        with self._write_lock:
            table = dict(self._outbound)
            old = table.get(key)
            table[key] = sa
            self._outbound = table
            if old is not None:
                self._retired.add_outbound(old)
            return old

    def remove_inbound(self, spi: int) -> InboundSa | None:
        with self._write_lock:
            if spi not in self._inbound:
                return None
            table = dict(self._inbound)
            sa = table.pop(spi)
            self._inbound = table
            self._retired.add_inbound(sa)
            return sa

    def remove_outbound(self, key: Hashable) -> OutboundSa | None:
        with self._write_lock:
            if key not in self._outbound:
                return None
            table = dict(self._outbound)
            sa = table.pop(key)
            self._outbound = table
            self._retired.add_outbound(sa)
            return sa

    # Monitoring: read-only, from any thread; counts may trail the data path by a packet.

    def inbound_spis(self) -> list[int]:
        return list(self._inbound)

    def outbound_keys(self) -> list[Hashable]:
        return list(self._outbound)

    def needing_rekey(self) -> tuple[list[Hashable], list[int]]:
        """(outbound keys, inbound SPIs) whose SA passed a soft limit."""
        outbound, inbound = self._outbound, self._inbound
        return (
            [key for key, sa in outbound.items() if sa.needs_rekey],
            [spi for spi, sa in inbound.items() if sa.needs_rekey],
        )

    def counters(self) -> EspCounters:
        with self._write_lock:  # a consistent retired total; the tables need no lock
            retired = self._retired
            total = EspCounters(
                retired.in_packets,
                retired.in_bytes,
                retired.out_packets,
                retired.out_bytes,
                retired.out_selector_drops,
                dict(retired.drops),
            )
            inbound, outbound = self._inbound, self._outbound
        for sa in inbound.values():
            total.add_inbound(sa)
        for out in outbound.values():
            total.add_outbound(out)
        total.drops[DropReason.UNKNOWN_SPI] += self.unknown_spi
        total.drops[DropReason.MALFORMED] += self.malformed
        return total
