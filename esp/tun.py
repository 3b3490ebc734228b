"""The TUN device: raw IP packets between the kernel and the userspace data path.

Open it once (`TunDevice.open`), hand `fileno()` to the data-path threads, which may
use os.read/os.write/os.readv directly. The fd is blocking; a thread that must be
woken at shutdown waits with `wait_readable()` (or `read()`, which does so), because a
bare blocking read() on a TUN fd cannot be interrupted from another thread. Shutdown
order: `shutdown()` (wakes every waiter), join the threads, `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import select
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Interface, IPv6Interface
from socket import AF_INET, AF_INET6
from typing import Any, TypeVar

from pyroute2 import IPRoute

__all__ = ["MAX_PACKET", "TunClosed", "TunDevice", "TunError", "TunOptions"]

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFA_F_NODAD = 0x02

IFNAMSIZ = 16
MAX_PACKET = 65535
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")

T = TypeVar("T")


class TunError(OSError):
    """The device could not be created or configured; the message is meant for the operator."""


class TunClosed(EOFError):
    """The device was shut down while a reader waited."""


def switched_on(environ: Any, name: str) -> bool:
    """An offload switch: on unless the variable says "off" (or 0, no, false)."""
    return environ.get(name, "auto").strip().lower() not in ("off", "0", "no", "false")


@dataclass(frozen=True)
class TunOptions:
    """Flags beyond plain IFF_TUN|IFF_NO_PI, for the batching work.

    vnet_hdr: every packet read/written starts with a struct virtio_net_hdr (offloads
        are not switched on here: that is TUNSETOFFLOAD, by esp.datapath).
    queues: > 1 opens that many queue fds (IFF_MULTI_QUEUE); the kernel spreads flows.
    """

    vnet_hdr: bool = False
    queues: int = 1
    # The kernel's queue in front of our reads (`ip link` qlen; 500 by default): bursts
    # beyond it are dropped ("tx dropped") before the out-thread is scheduled. None keeps
    # the kernel's value.
    txqueuelen: int | None = 2000
    # The queue in front of our reads, bounded in bytes (TSO super-packets of up to 64 KB
    # would make a packet count meaningless): fq_codel where the kernel has it (flow
    # isolation: a ping does not wait behind a bulk transfer), else a byte FIFO of this
    # size. Bulk TCP fills whatever queue there is; this keeps the delay it adds small.
    # None leaves the kernel's default qdisc.
    queue_bytes: int | None = 256 * 1024
    # No IPv6 link-local address (addr_gen_mode none): a layer-3 TUN never needs one, and
    # with it the kernel sends router solicitations and MLD reports into the tunnel.
    # Configured IPv6 addresses still work.
    link_local: bool = False

    @classmethod
    def from_env(cls, environ: Any = None) -> TunOptions:
        """vnet_hdr unless GATEWAYD_TUN_OFFLOAD or GATEWAYD_OFFLOAD says "off": the data
        path then asks for TSO with TUNSETOFFLOAD, segments what it reads (esp.tso) and
        coalesces what it writes (esp.coalesce)."""
        env = os.environ if environ is None else environ
        vnet = switched_on(env, "GATEWAYD_TUN_OFFLOAD") and switched_on(env, "GATEWAYD_OFFLOAD")
        options = cls(vnet_hdr=vnet)
        queue = env.get("GATEWAYD_TUN_QUEUE_BYTES", "").strip()
        if queue.isdigit():
            options = replace(options, queue_bytes=int(queue) or None)
        return options

    def ifr_flags(self) -> int:
        flags = IFF_TUN | IFF_NO_PI
        if self.vnet_hdr:
            flags |= IFF_VNET_HDR
        if self.queues > 1:
            flags |= IFF_MULTI_QUEUE
        return flags


def _in_thread_if_loop(fn: Callable[[], T]) -> T:
    # pyroute2's sync IPRoute runs its own event loop, which fails inside a running
    # one; from asyncio code, do the (short) netlink work on a helper thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=run, name="tun-netlink")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]


def _attach(name: str, flags: int) -> tuple[int, str]:
    """Open /dev/net/tun and attach it to device `name`; returns (fd, actual name)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError(errno.ENOENT, "cannot open /dev/net/tun: no such device") from None
    except PermissionError:
        raise TunError(errno.EPERM, "cannot open /dev/net/tun: needs CAP_NET_ADMIN") from None
    try:
        ifr = struct.pack("16sH22x", name.encode(), flags)
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        why = {
            errno.EBUSY: "is in use (another gatewayd running?)",
            errno.EINVAL: "exists and is not a TUN device with these flags",
            errno.EPERM: "cannot be created: needs CAP_NET_ADMIN",
        }.get(exc.errno or 0, exc.strerror)
        raise TunError(exc.errno, f"TUN device {name!r} {why}") from None
    return fd, res[:IFNAMSIZ].rstrip(b"\0").decode()


IN6_ADDR_GEN_MODE_NONE = 1


def _no_link_local(ipr: IPRoute, index: int) -> None:
    # Before the link goes up: the link-local address is made at NETDEV_UP. A kernel
    # without IPv6 refuses; then there is nothing to switch off.
    spec = {
        "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]
    }
    with contextlib.suppress(Exception):
        ipr.link("set", index=index, IFLA_AF_SPEC=spec)


def _configure(
    name: str,
    mtu: int,
    addresses: Sequence[IPv4Interface | IPv6Interface],
    options: TunOptions | None = None,
) -> int:
    options = options or TunOptions()
    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=name)
        if not links:
            raise TunError(errno.ENODEV, f"TUN device {name!r} vanished after creation")
        index = int(links[0])
        ipr.link("set", index=index, mtu=mtu)
        if options.txqueuelen is not None:
            ipr.link("set", index=index, txqlen=options.txqueuelen)
        if not options.link_local:
            _no_link_local(ipr, index)
        for iface in addresses:
            # No duplicate address detection: nobody else is on a TUN, and DAD would
            # leave an IPv6 address unusable ("tentative") for a second or two.
            extra = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
            ipr.addr(
                "replace",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                family=AF_INET6 if iface.version == 6 else AF_INET,
                **extra,
            )
        if options.queue_bytes:
            _bounded_queue(ipr, index, options.queue_bytes)
        ipr.link("set", index=index, state="up")
        return index


def _bounded_queue(ipr: IPRoute, index: int, limit: int) -> None:
    """fq_codel if the kernel has it, else bfifo of ``limit`` bytes; else leave it."""
    from pyroute2.netlink.rtnl import tcmsg

    # pyroute2 knows pfifo's options (struct tc_fifo_qopt), which bfifo shares.
    tcmsg.plugins.setdefault("bfifo", tcmsg.plugins["pfifo"])
    for kind, opts in (("fq_codel", {}), ("bfifo", {"limit": limit})):
        with contextlib.suppress(Exception):  # not in this kernel (NetlinkError ENOENT)
            ipr.tc("replace", kind=kind, index=index, handle="1:", **opts)
            return


class TunDevice:
    """An open TUN device (one fd per queue) plus a wake-up pipe for its readers."""

    def __init__(self, name: str, index: int, fds: list[int], options: TunOptions) -> None:
        self.name = name
        self.index = index
        self.options = options
        self._fds = fds
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        name: str,
        mtu: int,
        addresses: Sequence[IPv4Interface | IPv6Interface] = (),
        options: TunOptions | None = None,
    ) -> TunDevice:
        """Create (or attach to) TUN device `name`, set its MTU and addresses, bring it up.

        Without options: TunOptions.from_env() (vnet_hdr unless the offloads are off)."""
        options = options or TunOptions.from_env()
        if not _NAME_OK.match(name):
            raise TunError(errno.EINVAL, f"invalid interface name {name!r}")
        if not 68 <= mtu <= 65535:
            raise TunError(errno.EINVAL, f"MTU {mtu} out of range 68..65535")
        if mtu < 1280 and any(a.version == 6 for a in addresses):
            raise TunError(errno.EINVAL, f"MTU {mtu} is below IPv6's minimum of 1280")
        if options.queues < 1:
            raise TunError(errno.EINVAL, "queues must be at least 1")
        if options.txqueuelen is not None and not 1 <= options.txqueuelen <= 1 << 20:
            raise TunError(errno.EINVAL, f"txqueuelen {options.txqueuelen} out of range")

        flags = options.ifr_flags()
        fds: list[int] = []
        try:
            fd, actual = _attach(name, flags)
            fds.append(fd)
            for _ in range(options.queues - 1):
                fds.append(_attach(actual, flags)[0])
            try:
                index = _in_thread_if_loop(lambda: _configure(actual, mtu, addresses, options))
            except TunError:
                raise
            except Exception as exc:
                raise TunError(errno.EIO, f"cannot configure TUN device {actual!r}: {exc}") from exc
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(actual, index, fds, options)

    # -- data path ---------------------------------------------------------------

    def fileno(self, queue: int = 0) -> int:
        return self._fds[queue]

    def set_offload(self, flags: int) -> None:
        """TUNSETOFFLOAD on every queue (needs vnet_hdr); OSError if the kernel refuses."""
        for fd in self._fds:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)

    @property
    def filenos(self) -> tuple[int, ...]:
        return tuple(self._fds)

    def wakeup_fileno(self) -> int:
        """Becomes (and stays) readable at shutdown: add it to your own poll set."""
        return self._wake_r

    def wait_readable(self, timeout: float | None = None, queue: int = 0) -> bool:
        """Block until a packet is waiting (True) or `timeout` seconds pass (False).

        Raises TunClosed once shutdown() was called, even if packets are waiting.
        """
        if self._closed:
            raise TunClosed(f"TUN device {self.name} is shut down")
        poller = select.poll()
        poller.register(self._fds[queue], select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        events = poller.poll(None if timeout is None else int(timeout * 1000))
        if self._closed or any(fd == self._wake_r for fd, _ in events):
            raise TunClosed(f"TUN device {self.name} is shut down")
        return bool(events)

    def read(self, bufsize: int = MAX_PACKET, queue: int = 0) -> bytes:
        """One packet (blocking); raises TunClosed at shutdown."""
        self.wait_readable(None, queue)
        return os.read(self._fds[queue], bufsize)

    def write(self, packet: bytes | bytearray | memoryview, queue: int = 0) -> int:
        """Hand one IP packet to the kernel, as if it arrived on this interface."""
        if not self._fds:
            raise TunClosed(f"TUN device {self.name} is closed")
        return os.write(self._fds[queue], packet)

    # -- shutdown ----------------------------------------------------------------

    def shutdown(self) -> None:
        """Wake every thread in wait_readable()/read(); they raise TunClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def close(self) -> None:
        """shutdown(), then close the fds: the kernel removes the device with the last one.

        Call it after the reader threads have returned, so no fd number is reused under them.
        """
        self.shutdown()
        with self._lock:
            fds, self._fds = self._fds, []
            for fd in fds:
                # In case someone made it persistent: the device must not outlive us.
                with contextlib.suppress(OSError):
                    fcntl.ioctl(fd, TUNSETPERSIST, 0)
                os.close(fd)
            if self._wake_r >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
