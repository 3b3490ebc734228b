"""The control socket: one JSON request per line in, one JSON response per line out.

Request:  {"cmd": "status", "args": {...}}
Response: {"ok": true, "result": ...}  or  {"ok": false, "error": "..."}

The socket is root-only: mode 0600 in a 0700 directory, and peers whose uid is neither
0 nor ours are refused (SO_PEERCRED) in case someone loosens the modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from gatewayd.logging import get_logger

__all__ = [
    "COMMANDS",
    "DEFAULT_SOCKET",
    "ControlClient",
    "ControlConnectError",
    "ControlError",
    "ControlProtocolError",
    "ControlRequestError",
    "ControlServer",
    "Handler",
]

DEFAULT_SOCKET = "/run/gatewayd/gatewayd.sock"
COMMANDS = frozenset({"status", "up", "down", "rekey", "routes", "reload"})
MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
READ_TIMEOUT = 10.0

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]

log = get_logger(component="control")


class ControlError(Exception):
    """Raise from a handler for an expected failure; its text goes to the client as is."""


class ControlClientError(Exception):
    """Base of the client-side errors."""


class ControlConnectError(ControlClientError):
    """The daemon is not reachable (not running, or no permission)."""


class ControlRequestError(ControlClientError):
    """The daemon answered {"ok": false, "error": ...}."""


class ControlProtocolError(ControlClientError):
    """No answer in time, or an answer that is not the expected JSON."""


def _json_default(obj: Any) -> Any:
    # Handlers may hand back addresses, networks, SPI bytes or enums.
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).hex()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "compressed") or isinstance(obj, Path):  # ipaddress objects
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode_response(ok: bool, payload: Any) -> bytes:
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": str(payload)}
    return json.dumps(body, default=_json_default, separators=(",", ":")).encode() + b"\n"


def parse_request(line: bytes, commands: Iterable[str] = COMMANDS) -> tuple[str, dict[str, Any]]:
    """Validate one request line; raises ControlError with a message for the client."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"bad request: invalid JSON ({exc})") from None
    if not isinstance(req, dict):
        raise ControlError("bad request: expected a JSON object")
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError("bad request: 'cmd' must be a string")
    if cmd not in commands:
        raise ControlError(f"unknown command {cmd!r} (known: {', '.join(sorted(commands))})")
    args = req.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlError("bad request: 'args' must be an object")
    return cmd, args


def _prepare_directory(directory: Path, mode: int) -> None:
    if not directory.exists():
        directory.mkdir(mode=mode, parents=True)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        return
    st = directory.stat()
    # Never chmod a directory we did not create (it could be /run or /tmp).
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(f"control socket directory {directory} is world-writable")


def _remove_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # a socket nobody listens on: left by a crash
        return
    except OSError as exc:
        raise OSError(exc.errno, f"cannot probe existing socket {path}: {exc.strerror}") from exc
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use: is another gatewayd running?")


def _bind_private(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The umask closes the window between bind() and chmod() where the file
        # would carry default permissions.
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    """Serves `handler(cmd, args) -> result` on a Unix stream socket at `path`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        max_request: int = MAX_REQUEST,
        read_timeout: float = READ_TIMEOUT,
        dir_mode: int = 0o700,
        commands: Iterable[str] = COMMANDS,
    ) -> None:
        if dir_mode & 0o027:
            raise ValueError("dir_mode must not grant group write or any access to others")
        self.path = Path(path)
        self._handler = handler
        self._max_request = max_request
        self._read_timeout = read_timeout
        self._dir_mode = dir_mode
        self._commands = frozenset(commands)
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Create the directory, replace a stale socket, bind (0600) and listen."""
        _prepare_directory(self.path.parent, self._dir_mode)
        _remove_stale(self.path)
        sock = _bind_private(self.path)
        st = self.path.lstat()
        self._inode = (st.st_dev, st.st_ino)
        # +1 so that a line of exactly max_request bytes plus "\n" still fits.
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=self._max_request + 1
        )
        log.info("control socket listening", path=str(self.path))

    async def close(self) -> None:
        """Stop listening, drop clients, and remove the socket file if it is still ours."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.close()
        if server is not None:
            await server.wait_closed()
        self._unlink_own_socket()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _unlink_own_socket(self) -> None:
        if self._inode is None:
            return  # start() never bound a socket (or failed first): nothing here is ours
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        # Another instance may have replaced it meanwhile; leave theirs alone.
        if self._inode == (st.st_dev, st.st_ino):
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            uid = _peer_uid(writer)
            if uid is not None and uid not in (0, os.geteuid()):
                log.warning("control client refused", uid=uid)
                # Take the request off the socket first: closing with unread data sends a
                # reset, which can destroy our answer before the client reads it.
                with contextlib.suppress(TimeoutError, ValueError, ConnectionError):
                    await asyncio.wait_for(reader.readline(), 1.0)
                writer.write(encode_response(False, "permission denied"))
                await writer.drain()
                return
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read, run and answer one request; False when the connection should end."""
        keep_going = True
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self._read_timeout)
        except asyncio.IncompleteReadError as exc:
            line, keep_going = exc.partial, False  # last request without a newline
        except TimeoutError:
            return False
        except asyncio.LimitOverrunError:
            line = b""  # the check below answers it
        if not line or len(line.rstrip(b"\r\n")) > self._max_request:
            if keep_going:  # overrun: answer, then drop the rest of the connection
                too_large = f"request too large (limit {self._max_request} bytes)"
                writer.write(encode_response(False, too_large))
                await writer.drain()
            return False
        if line.strip():
            writer.write(await self._dispatch(line))
            await writer.drain()
        return keep_going

    async def _dispatch(self, line: bytes) -> bytes:
        try:
            cmd, args = parse_request(line, self._commands)
        except ControlError as exc:
            return encode_response(False, exc)
        try:
            result = await self._handler(cmd, args)
        except ControlError as exc:
            return encode_response(False, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("control command failed", cmd=cmd)
            return encode_response(False, f"internal error: {type(exc).__name__}: {exc}")
        try:
            return encode_response(True, result)
        except (TypeError, ValueError) as exc:
            log.error("control result not serializable", cmd=cmd, error=str(exc))
            return encode_response(False, f"internal error: result not serializable: {exc}")


class ControlClient:
    """Blocking client, as used by gatewayctl."""

    @staticmethod
    def request(
        path: str | os.PathLike[str],
        cmd: str,
        args: dict[str, Any] | None = None,
        timeout: float = READ_TIMEOUT,
    ) -> Any:
        """Send one request and return its result; raises a ControlClientError subclass."""
        path = os.fspath(path)
        line = json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlConnectError(
                    f"cannot connect to {path}: is gatewayd running?"
                ) from None
            except PermissionError:
                raise ControlConnectError(
                    f"cannot connect to {path}: permission denied (run as root)"
                ) from None
            except TimeoutError:
                raise ControlConnectError(f"cannot connect to {path}: timed out") from None
            except OSError as exc:
                raise ControlConnectError(f"cannot connect to {path}: {exc.strerror}") from None
            try:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    # The server may have answered (e.g. "too large") and closed already.
                    sock.sendall(line)
                    sock.shutdown(socket.SHUT_WR)  # one request per connection
                raw = _read_line(sock)
            except TimeoutError:
                raise ControlProtocolError(f"no answer from {path} within {timeout:g}s") from None
            except OSError as exc:
                raise ControlProtocolError(f"connection to {path} failed: {exc}") from None
        finally:
            sock.close()
        return _parse_response(raw)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
        if size > MAX_RESPONSE:
            raise ControlProtocolError("response too large")
    data = b"".join(chunks)
    if not data:
        raise ControlProtocolError("the daemon closed the connection without answering")
    return data.split(b"\n", 1)[0]


def _parse_response(raw: bytes) -> Any:
    try:
        resp = json.loads(raw)
    except ValueError:
        raise ControlProtocolError("malformed response from the daemon") from None
    if not isinstance(resp, dict) or not isinstance(resp.get("ok"), bool):
        raise ControlProtocolError("malformed response from the daemon")
    if not resp["ok"]:
        raise ControlRequestError(str(resp.get("error", "unknown error")))
    return resp.get("result")
