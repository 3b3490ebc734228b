"""The EAP-MSCHAPv2 users file: parsing, refusals, add/remove with atomic 0600 rewrites."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gatewayd.p2s import users
from gatewayd.p2s.users import UsersFileError, add_user, load_users, nt_hash_of, remove_user

# "password" -> 8846f7ee..., the well-known NT hash; RFC 2759 §9.2: "clientPass".
PASSWORD_HASH = "8846f7eaee8fb117ad06bdd830b7586c"
CLIENTPASS_HASH = "44ebba8d5312b8d611474411f56989ae"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "users.toml"
    p.write_text(text)
    return p


def test_nt_hash_of_known_vectors() -> None:
    assert nt_hash_of("password").hex() == PASSWORD_HASH
    assert nt_hash_of("clientPass").hex() == CLIENTPASS_HASH


def test_load_users(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        f'[users.alice]\nnt_hash = "{PASSWORD_HASH}"\n'
        f'[users."bob@example.org"]\nnt_hash = "{CLIENTPASS_HASH.upper()}"\n',
    )
    db = load_users(p)
    assert len(db) == 2
    assert db.nt_hash("alice") == bytes.fromhex(PASSWORD_HASH)
    assert db.nt_hash("bob@example.org") == bytes.fromhex(CLIENTPASS_HASH)
    assert db.nt_hash("Alice") is None  # names are exact
    assert db.nt_hash("carol") is None
    assert sorted(db) == ["alice", "bob@example.org"]
    assert PASSWORD_HASH not in repr(db)


def test_empty_file_is_no_users(tmp_path: Path) -> None:
    assert len(load_users(write(tmp_path, "# nobody yet\n"))) == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[users.alice]\npassword = "secret"\n', "plaintext password"),
        ('[users.alice]\nnt_hash = "1234"\n', "32 hex digits"),
        ('[users.alice]\nnt_hash = "zz46f7eaee8fb117ad06bdd830b7586c"\n', "32 hex digits"),
        ("[users.alice]\nnt_hash = 5\n", "32 hex digits"),
        ("[users.alice]\n", "32 hex digits"),
        (f'[users.alice]\nnt_hash = "{PASSWORD_HASH}"\ngroup = "x"\n', "unknown key"),
        ('users = "x"\n', "must be a table"),
        ('users.alice = "x"\n', "must be a table"),
        (f'[people.alice]\nnt_hash = "{PASSWORD_HASH}"\n', "unknown top-level"),
        ("[users.alice\n", "not valid TOML"),
        (f'[users." alice"]\nnt_hash = "{PASSWORD_HASH}"\n', "white space"),
        (f'[users."a\\u0001b"]\nnt_hash = "{PASSWORD_HASH}"\n', "control characters"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, match: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(UsersFileError, match=match) as info:
        load_users(p)
    assert str(p) in str(info.value)
    assert "secret" not in str(info.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="not found"):
        load_users(tmp_path / "nope.toml")
    p = tmp_path / "latin1.toml"
    p.write_bytes(b"# caf\xe9\n")
    with pytest.raises(UsersFileError, match="not UTF-8"):
        load_users(p)


def test_add_creates_0600_file_and_replaces(tmp_path: Path) -> None:
    p = tmp_path / "users.toml"
    assert add_user(p, "alice", "password") is False
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_users(p).nt_hash("alice") == bytes.fromhex(PASSWORD_HASH)
    assert 'password"' not in p.read_text()  # no plaintext, only the hash

    assert add_user(p, 'we"ird\\ name@x', "clientPass") is False
    assert add_user(p, "alice", "clientPass") is True  # a new password
    db = load_users(p)
    assert db.nt_hash("alice") == bytes.fromhex(CLIENTPASS_HASH)
    assert db.nt_hash('we"ird\\ name@x') == bytes.fromhex(CLIENTPASS_HASH)
    assert len(db) == 2
    # No temporary files left behind.
    assert sorted(x.name for x in tmp_path.iterdir()) == ["users.toml"]


def test_add_keeps_mode_0600_over_a_loose_file(tmp_path: Path) -> None:
    p = write(tmp_path, f'[users.bob]\nnt_hash = "{PASSWORD_HASH}"\n')
    p.chmod(0o644)
    add_user(p, "alice", "pw")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert set(load_users(p)) == {"alice", "bob"}


def test_remove(tmp_path: Path) -> None:
    p = tmp_path / "users.toml"
    add_user(p, "alice", "a")
    add_user(p, "bob", "b")
    assert remove_user(p, "alice") is True
    assert set(load_users(p)) == {"bob"}
    before = p.stat().st_ino
    assert remove_user(p, "alice") is False
    assert p.stat().st_ino == before  # untouched
    assert remove_user(tmp_path / "none.toml", "x") is False
    assert not (tmp_path / "none.toml").exists()


@pytest.mark.parametrize(
    ("name", "password", "match"),
    [
        ("", "pw", "empty"),
        ("a\nb", "pw", "control"),
        ("x" * 256, "pw", "longer"),
        ("alice", "", "password is empty"),
        ("alice", "p" * 257, "longer than 256"),
    ],
)
def test_add_refuses_bad_names_and_passwords(
    tmp_path: Path, name: str, password: str, match: str
) -> None:
    p = tmp_path / "users.toml"
    with pytest.raises(ValueError, match=match):
        add_user(p, name, password)
    assert not p.exists()


def test_add_refuses_to_overwrite_a_broken_file(tmp_path: Path) -> None:
    p = write(tmp_path, "not toml [[[\n")
    with pytest.raises(UsersFileError):
        add_user(p, "alice", "pw")
    assert p.read_text() == "not toml [[[\n"


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    p = tmp_path / "users.toml"
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                add_user(p, f"u{i}-{j}", "pw")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(load_users(p)) == 20


def test_round_trip_of_rendered_names(tmp_path: Path) -> None:
    names = ["plain", "dotted.name", "ünïcode", "sp ace", "q'uote", "CAPS"]
    db = {n: os.urandom(16) for n in names}
    p = tmp_path / "u.toml"
    p.write_bytes(users.render_users(db))
    assert dict(load_users(p)) == db


def test_a_file_nested_too_deeply_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsersFileError, match="nested too deeply"):
        load_users(path)
