"""gatewayd.control: the control socket protocol, limits, errors and permissions."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.control import (
    ControlClient,
    ControlConnectError,
    ControlError,
    ControlRequestError,
    ControlServer,
)

STRICT_ENV = "GATEWAYD_REQUIRE_INTEROP"
STATUS = {"gateway": {"name": "hub", "address": "192.0.2.1", "uptime_s": 1.5}, "sites": []}


def require_root() -> None:
    """Root, to try a client as another user; in CI (STRICT_ENV) a failure, not a skip."""
    if os.geteuid() != 0:
        if os.environ.get(STRICT_ENV, "") not in ("", "0"):
            pytest.fail(f"needs root ({STRICT_ENV} is set)", pytrace=False)
        pytest.skip("needs root to try a client as another user")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short path: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="gwctl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, cmd: str, args: dict[str, Any]) -> Any:
        self.calls.append((cmd, args))
        if cmd == "status":
            return STATUS
        if cmd == "up" and args.get("site") == "nowhere":
            raise ControlError("unknown site 'nowhere'")
        if cmd == "down":
            raise RuntimeError("boom")
        if cmd == "routes":
            return {"routes": [{"prefix": object()}]}  # not serializable
        return None


async def raw(path: Path, data: bytes, timeout: float = 5) -> list[dict[str, Any]]:
    """Send raw bytes, read response lines until the server closes or goes quiet."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    out = []
    while line := await asyncio.wait_for(reader.readline(), timeout):
        out.append(json.loads(line))
    writer.close()
    return out


def request(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    return ControlClient.request(path, cmd, args, timeout=5)


def test_round_trip_and_args(sockdir: Path) -> None:
    handler = Recorder()
    path = sockdir / "gatewayd.sock"

    async def main() -> None:
        async with ControlServer(path, handler):
            assert await asyncio.to_thread(request, path, "status") == STATUS
            args = {"site": "b", "ike": True}
            assert await asyncio.to_thread(request, path, "rekey", args) is None

    asyncio.run(main())
    assert handler.calls == [("status", {}), ("rekey", {"site": "b", "ike": True})]


def test_several_requests_on_one_connection_and_missing_args(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, Recorder()):
            return await raw(path, b'{"cmd":"status"}\n\n{"cmd":"reload","args":null}\n')

    assert asyncio.run(main()) == [{"ok": True, "result": STATUS}, {"ok": True, "result": None}]


def test_last_request_without_newline_is_answered(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, Recorder()):
            return await raw(path, b'{"cmd":"status"}')

    assert asyncio.run(main()) == [{"ok": True, "result": STATUS}]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{not json\n", "invalid JSON"),
        (b"\xff\xfe\n", "invalid JSON"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b'{"args": {}}\n', "'cmd' must be a string"),
        (b'{"cmd": "status", "args": [1]}\n', "'args' must be an object"),
        (b'{"cmd": "shutdown"}\n', "unknown command 'shutdown'"),
    ],
)
def test_bad_requests_get_error_responses(sockdir: Path, line: bytes, error: str) -> None:
    path = sockdir / "gatewayd.sock"
    handler = Recorder()

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, handler):
            # The connection stays usable after a bad line.
            return await raw(path, line + b'{"cmd":"status"}\n')

    bad, good = asyncio.run(main())
    assert bad["ok"] is False and error in bad["error"]
    assert good == {"ok": True, "result": STATUS}
    assert handler.calls == [("status", {})]


def test_oversize_request_rejected_and_server_survives(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"
    handler = Recorder()

    async def main() -> tuple[list[dict[str, Any]], Any]:
        async with ControlServer(path, handler, max_request=64 * 1024):
            big = json.dumps({"cmd": "status", "args": {"x": "a" * 70_000}}).encode() + b"\n"
            answers = await raw(path, big)
            return answers, await asyncio.to_thread(request, path, "status")

    answers, after = asyncio.run(main())
    assert len(answers) == 1 and answers[0]["ok"] is False
    assert "too large" in answers[0]["error"]
    assert after == STATUS
    assert handler.calls == [("status", {})]  # the big one never reached the handler


def test_request_just_under_limit_accepted(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"
    handler = Recorder()
    line = json.dumps({"cmd": "reload", "args": {"x": ""}}).encode()
    padded = line.replace(b'""', b'"' + b"a" * (1000 - len(line)) + b'"')
    assert len(padded) == 1000

    async def main() -> list[dict[str, Any]]:
        async with ControlServer(path, handler, max_request=1000):
            return await raw(path, padded + b"\n")

    assert asyncio.run(main()) == [{"ok": True, "result": None}]


def test_handler_errors_become_error_responses(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            with pytest.raises(ControlRequestError, match=r"^unknown site 'nowhere'$"):
                await asyncio.to_thread(request, path, "up", {"site": "nowhere"})
            with pytest.raises(ControlRequestError, match="internal error: RuntimeError: boom"):
                await asyncio.to_thread(request, path, "down", {"site": "b"})
            with pytest.raises(ControlRequestError, match="not serializable"):
                await asyncio.to_thread(request, path, "routes")
            # Still serving.
            assert await asyncio.to_thread(request, path, "status") == STATUS

    asyncio.run(main())


def test_idle_client_is_disconnected_after_read_timeout(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"

    async def main() -> bytes:
        async with ControlServer(path, Recorder(), read_timeout=0.2):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "sta')  # never finished
            data = await asyncio.wait_for(reader.read(), 3)
            writer.close()
            return data

    assert asyncio.run(main()) == b""


def test_creates_private_directory_and_socket(sockdir: Path) -> None:
    path = sockdir / "run" / "gatewayd" / "gatewayd.sock"

    async def main() -> tuple[int, int]:
        old = os.umask(0o022)  # a permissive umask must not loosen anything
        try:
            async with ControlServer(path, Recorder()):
                return path.stat().st_mode, path.parent.stat().st_mode
        finally:
            os.umask(old)

    sock_mode, dir_mode = asyncio.run(main())
    assert stat.S_ISSOCK(sock_mode)
    assert stat.S_IMODE(sock_mode) == 0o600
    assert stat.S_IMODE(dir_mode) == 0o700
    assert not path.exists()  # removed on close


def test_group_readable_directory_mode(sockdir: Path) -> None:
    path = sockdir / "run" / "gatewayd.sock"

    async def main() -> int:
        async with ControlServer(path, Recorder(), dir_mode=0o750):
            return path.parent.stat().st_mode

    assert stat.S_IMODE(asyncio.run(main())) == 0o750
    with pytest.raises(ValueError):
        ControlServer(path, Recorder(), dir_mode=0o755)


def test_stale_socket_is_replaced(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # what a crashed daemon leaves behind
    assert stat.S_ISSOCK(path.lstat().st_mode)

    async def main() -> Any:
        async with ControlServer(path, Recorder()):
            return await asyncio.to_thread(request, path, "status")

    assert asyncio.run(main()) == STATUS


def test_live_socket_is_not_stolen(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            with pytest.raises(OSError, match="another gatewayd"):
                await ControlServer(path, Recorder()).start()
            assert await asyncio.to_thread(request, path, "status") == STATUS

    asyncio.run(main())


def test_regular_file_is_not_replaced(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"
    path.write_text("not a socket")
    with pytest.raises(FileExistsError):
        asyncio.run(ControlServer(path, Recorder()).start())
    assert path.read_text() == "not a socket"


def test_client_reports_daemon_not_running(sockdir: Path) -> None:
    path = sockdir / "gatewayd.sock"
    expected = rf"^cannot connect to {path}: is gatewayd running\?$"
    with pytest.raises(ControlConnectError, match=expected):
        request(path, "status")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(ControlConnectError, match="is gatewayd running"):
        request(path, "status")


def _connect_as(uid: int, path: Path) -> int:
    """Fork, drop to `uid`, connect: 0 connected, 13 refused (EACCES), 1 anything else."""
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, just the answer
        code = 1
        try:
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_other_users_cannot_connect(sockdir: Path) -> None:
    require_root()
    path = sockdir / "gatewayd.sock"
    os.chmod(sockdir, 0o755)  # only the socket's own mode stands in the way

    async def main() -> tuple[int, int]:
        async with ControlServer(path, Recorder()):
            return _connect_as(65534, path), _connect_as(0, path)

    assert asyncio.run(main()) == (13, 0)


def test_other_users_refused_even_if_socket_mode_loosened(sockdir: Path) -> None:
    require_root()
    path = sockdir / "gatewayd.sock"
    os.chmod(sockdir, 0o755)
    handler = Recorder()

    def ask_as_nobody() -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(path))
                    s.sendall(b'{"cmd": "status"}\n')
                    answer = json.loads(s.makefile("rb").readline())
                code = 20 if answer == {"ok": False, "error": "permission denied"} else 2
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    async def main() -> int:
        async with ControlServer(path, handler):
            os.chmod(path, 0o666)  # an operator's mistake: SO_PEERCRED still refuses
            return await asyncio.to_thread(ask_as_nobody)

    assert asyncio.run(main()) == 20
    assert handler.calls == []
