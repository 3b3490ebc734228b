"""The EAP-MSCHAPv2 users file: user names and NT hashes, never plaintext passwords.

Format (TOML, one table per user)::

    [users.alice]
    nt_hash = "8846f7eaee8fb117ad06bdd830b7586c"   # MD4 of the UTF-16LE password

An NT hash is as good as the password to anyone who wants to log in with MSCHAPv2, so the
file is written with mode 0600 and should stay that way.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

from gatewayd.p2s.fileio import atomic_write, locked_dir, read_bounded
from ike.eap.mschapv2 import nt_password_hash

MAX_NAME_BYTES = 255  # an MSCHAPv2 Response's Name and an EAP Identity both fit this
MAX_PASSWORD_CHARS = 256  # RFC 2759 / Windows limit for an MSCHAPv2 password
MAX_FILE_BYTES = 16 * 1024 * 1024
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class UsersFileError(Exception):
    """The users file cannot be read or is malformed; the message says where and why."""


def nt_hash_of(password: str) -> bytes:
    """The NT hash (MD4 of UTF-16LE) of a password: what the users file stores."""
    return nt_password_hash(password)


def check_name(name: str) -> None:
    """ValueError unless ``name`` is a usable user name."""
    if not name:
        raise ValueError("user name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"user name longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValueError("user name contains control characters")
    if name != name.strip():
        raise ValueError("user name starts or ends with white space")


def check_password(password: str) -> None:
    """ValueError unless ``password`` can be used with MSCHAPv2. Never echoes it."""
    if not password:
        raise ValueError("password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password longer than {MAX_PASSWORD_CHARS} characters")


class UserDb(Mapping[str, bytes]):
    """User name -> NT hash (16 bytes). Names are compared exactly (case matters)."""

    def __init__(self, users: Mapping[str, bytes], source: str | None = None) -> None:
        self._users = dict(users)
        self.source = source

    def nt_hash(self, name: str) -> bytes | None:
        return self._users.get(name)

    def __getitem__(self, name: str) -> bytes:
        return self._users[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def __repr__(self) -> str:  # never the hashes
        return f"UserDb({len(self._users)} users from {self.source or '-'})"


def _parse_user(where: str, name: str, entry: object) -> bytes:
    try:
        check_name(name)
    except ValueError as e:
        raise UsersFileError(f"{where}: user {name!r}: {e}") from None
    if not isinstance(entry, dict):
        raise UsersFileError(f"{where}: users.{name} must be a table with an nt_hash")
    if "password" in entry:
        raise UsersFileError(
            f"{where}: user {name!r} has a plaintext password; store its nt_hash instead "
            "(gatewayctl p2s user add)"
        )
    unknown = sorted(set(entry) - {"nt_hash"})
    if unknown:
        raise UsersFileError(f"{where}: user {name!r}: unknown key(s) {', '.join(unknown)}")
    value = entry.get("nt_hash")
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise UsersFileError(f"{where}: user {name!r}: nt_hash must be 32 hex digits")
    return bytes.fromhex(value)


def parse_users(data: bytes, where: str = "users file") -> UserDb:
    if len(data) > MAX_FILE_BYTES:
        raise UsersFileError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsersFileError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsersFileError(f"{where}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses per nesting level
        raise UsersFileError(f"{where}: nested too deeply to be a users file") from None
    extra = sorted(set(doc) - {"users"})
    if extra:
        raise UsersFileError(f"{where}: unknown top-level key(s) {', '.join(extra)}")
    table = doc.get("users", {})
    if not isinstance(table, dict):
        raise UsersFileError(f"{where}: 'users' must be a table")
    return UserDb({n: _parse_user(where, n, e) for n, e in table.items()}, where)


def load_users(path: str | os.PathLike[str]) -> UserDb:
    """Read and check the users file; UsersFileError with a clear message."""
    where = os.fspath(path)
    try:
        data = read_bounded(path, MAX_FILE_BYTES, "users file")
    except ValueError as e:
        raise UsersFileError(str(e)) from None
    return parse_users(data, where)


def _toml_key(name: str) -> str:
    if _BARE_KEY.fullmatch(name):
        return name
    # check_name() has refused control characters; only these two need escaping.
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_users(users: Mapping[str, bytes]) -> bytes:
    lines = [
        "# gatewayd EAP-MSCHAPv2 users: NT hashes (MD4 of the UTF-16LE password).",
        "# Managed by `gatewayctl p2s user add/del`; keep this file mode 0600.",
    ]
    for name in sorted(users):
        lines += ["", f"[users.{_toml_key(name)}]", f'nt_hash = "{users[name].hex()}"']
    return ("\n".join(lines) + "\n").encode("utf-8")


def _load_or_empty(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return dict(load_users(path))


def add_user(path: str | os.PathLike[str], name: str, password: str) -> bool:
    """Store ``name`` with the NT hash of ``password`` (atomic rewrite, mode 0600).
    Returns True if the user existed (its password is replaced). Comments other than the
    file's header are not kept. ValueError for a bad name or password, UsersFileError if
    the existing file is unreadable."""
    check_name(name)
    check_password(password)
    target = Path(path)
    with locked_dir(target):
        users = _load_or_empty(target)
        existed = name in users
        users[name] = nt_hash_of(password)
        atomic_write(target, render_users(users))
    return existed


def remove_user(path: str | os.PathLike[str], name: str) -> bool:
    """Remove ``name``; False (file untouched) if it was not there."""
    target = Path(path)
    with locked_dir(target):
        users = _load_or_empty(target)
        if name not in users:
            return False
        del users[name]
        atomic_write(target, render_users(users))
    return True
