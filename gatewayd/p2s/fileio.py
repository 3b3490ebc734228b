"""Atomic, private file writes for the files gatewayctl manages (users, keys, profiles)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """At most ``limit`` + 1 bytes of a file the gateway reads (the caller refuses more);
    ValueError with ``path: what not found`` or ``path: cannot read: ...``."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except FileNotFoundError:
        raise ValueError(f"{where}: {what} not found") from None
    except OSError as e:
        raise ValueError(f"{where}: cannot read: {e.strerror}") from None


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never a
    half-written one. The temporary file gets ``mode`` before any byte is written, so a
    secret is never readable by others, not even for a moment."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must reach the disk too.
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked_dir(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the directory of ``path``: two gatewayctl runs editing
    the same file one after the other instead of losing one's change (read-modify-write).
    The file itself cannot carry the lock since atomic_write replaces its inode."""
    dir_fd = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(dir_fd)  # releases the lock
