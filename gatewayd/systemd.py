"""sd_notify(3) without python-systemd: readiness, status and watchdog pings.

Everything is a no-op (returning False) when NOTIFY_SOCKET is unset, so the daemon
calls these unconditionally.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
    "watchdog_loop",
]


def _address(raw: str) -> str | None:
    # '@name' is Linux's abstract namespace; anything else but a path (vsock:...) is unsupported.
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None


def notify(state: str) -> bool:
    """Send one sd_notify datagram ("READY=1", "STATUS=...", ...; newline separated).

    Returns True when it was sent, False without NOTIFY_SOCKET or on a send error: a
    lost notification must never take the gateway down.
    """
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    addr = _address(raw)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), addr)
    except OSError:
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd start-up is complete (Type=notify)."""
    msg = "READY=1"
    if status_text:
        msg += "\nSTATUS=" + _one_line(status_text)
    return notify(msg)


def stopping() -> bool:
    return notify("STOPPING=1")


def reloading() -> bool:
    """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects; send ready() after."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    return notify("STATUS=" + _one_line(text))


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())


def watchdog_interval() -> float | None:
    """WatchdogSec in seconds when the watchdog is on for this process, else None.

    Ping at least every interval / 2 (what sd_watchdog_enabled(3) recommends).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog_loop(healthy: Callable[[], bool] | None = None) -> None:
    """Ping the watchdog every interval / 2 while `healthy()` holds; returns at once
    when there is no watchdog. Running on the event loop, it also proves the loop is
    not stuck. Cancel it at shutdown."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        if healthy is None or healthy():
            watchdog()
        await asyncio.sleep(interval / 2)
