"""gatewayd.systemd: sd_notify datagrams arrive on a real socket; watchdog settings."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd import systemd


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_stopping_watchdog_status(receiver: socket.socket) -> None:
    assert systemd.ready()
    assert recv(receiver) == "READY=1"
    assert systemd.status("2 of 3 sites established")
    assert recv(receiver) == "STATUS=2 of 3 sites established"
    assert systemd.watchdog()
    assert recv(receiver) == "WATCHDOG=1"
    assert systemd.stopping()
    assert recv(receiver) == "STOPPING=1"


def test_ready_with_status_and_multiline_status_stays_one_assignment(
    receiver: socket.socket,
) -> None:
    systemd.ready("listening on 500\nand 4500")
    assert recv(receiver) == "READY=1\nSTATUS=listening on 500 and 4500"


def test_reloading_carries_monotonic_usec(receiver: socket.socket) -> None:
    systemd.reloading()
    reloading, stamp = recv(receiver).split("\n")
    assert reloading == "RELOADING=1"
    usec = int(stamp.removeprefix("MONOTONIC_USEC="))
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 <= now - usec < 5_000_000


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gatewayd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert sock.recv(100) == b"READY=1"


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False


def test_unreachable_or_unsupported_socket_is_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.ready() is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert systemd.watchdog_interval() is None


def test_watchdog_loop_pings_at_half_interval(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s -> a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    async def run() -> None:
        task = asyncio.create_task(systemd.watchdog_loop())
        await asyncio.sleep(0.35)
        task.cancel()

    asyncio.run(run())
    receiver.settimeout(0.1)
    pings = []
    while True:
        try:
            pings.append(recv(receiver))
        except TimeoutError:
            break
    assert pings and set(pings) == {"WATCHDOG=1"}
    assert 3 <= len(pings) <= 5


def test_watchdog_loop_skips_pings_when_unhealthy(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    async def run() -> None:
        task = asyncio.create_task(systemd.watchdog_loop(lambda: False))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(run())
    receiver.settimeout(0.1)
    with pytest.raises(TimeoutError):
        receiver.recv(100)


def test_watchdog_loop_returns_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    asyncio.run(asyncio.wait_for(systemd.watchdog_loop(), 1))
