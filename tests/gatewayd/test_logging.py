"""gatewayd.logging: JSON lines, console output, redaction, stdlib bridge."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from gatewayd.logging import REDACTED, configure_logging, get_logger, is_secret_name


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_have_timestamp_level_event_and_bound_fields() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    log = get_logger(site="branch1")
    log.info("child sa established", spi=b"\xc1\xa2\x00\x01", exchange="CREATE_CHILD_SA")
    log.warning("peer slow", rtt_ms=812)

    first, second = lines(buf)
    assert first["event"] == "child sa established"
    assert first["level"] == "info"
    assert first["site"] == "branch1"
    assert first["spi"] == "c1a20001"  # bytes as hex
    assert first["exchange"] == "CREATE_CHILD_SA"
    stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert second["level"] == "warning" and second["rtt_ms"] == 812


def test_level_filters_events() -> None:
    buf = io.StringIO()
    configure_logging("json", "warning", stream=buf)
    log = get_logger()
    log.info("hidden")
    log.debug("hidden too")
    log.error("shown")
    assert [e["event"] for e in lines(buf)] == ["shown"]


def test_reconfigure_changes_level_of_existing_logger() -> None:
    buf = io.StringIO()
    configure_logging("json", "error", stream=buf)
    log = get_logger(site="a")
    log.info("before")
    configure_logging("json", "debug", stream=buf)
    log.debug("after")
    assert [e["event"] for e in lines(buf)] == ["after"]


def test_secrets_redacted_nonces_and_spis_kept() -> None:
    buf = io.StringIO()
    configure_logging("json", "debug", stream=buf)
    get_logger(psk="hunter2").info(
        "keys derived",
        sk_ei=b"\x01" * 32,
        SK_ar="abcd",
        skeyseed=b"\x02" * 32,
        keymat=b"\x03" * 64,
        password="pw",
        shared_secret=b"\x04" * 32,
        private_key="-----BEGIN",
        nonce_i=b"\xaa\xbb",
        spi_i="8f0c",
        psk_file="/etc/gatewayd/branch1.psk",
        key_length=256,
        sa={"sk_d": "x", "proposal": "AES_GCM_16_256"},
    )
    (event,) = lines(buf)
    for name in (
        "psk",
        "sk_ei",
        "SK_ar",
        "skeyseed",
        "keymat",
        "password",
        "shared_secret",
        "private_key",
    ):
        assert event[name] == REDACTED, name
    assert event["sa"] == {"sk_d": REDACTED, "proposal": "AES_GCM_16_256"}
    assert event["nonce_i"] == "aabb"
    assert event["spi_i"] == "8f0c"
    assert event["psk_file"] == "/etc/gatewayd/branch1.psk"
    assert event["key_length"] == 256
    raw = buf.getvalue()
    assert "hunter2" not in raw and "0101010101" not in raw


def test_debug_keys_keeps_secrets_and_warns() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", debug_keys=True, stream=buf)
    get_logger().info("keys derived", sk_ei=b"\x01\x02")
    warning, event = lines(buf)
    assert warning["level"] == "warning" and "debug_keys" in warning["event"]
    assert event["sk_ei"] == "0102"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("psk", True),
        ("sk_pi", True),
        ("auth_key", True),
        ("keys", True),
        ("g_ir", True),
        ("nonce", False),
        ("nonce_r", False),
        ("spi_out", False),
        ("site", False),
        ("key_exchange", False),
        ("ke_group", False),
        ("psk_file", False),
        ("peer_id", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_console_format_is_human_readable_and_redacts() -> None:
    buf = io.StringIO()
    configure_logging("console", "info", stream=buf)
    get_logger(site="branch1").info("tunnel up", psk="hunter2")
    out = buf.getvalue()
    assert len(out.splitlines()) == 1
    assert "tunnel up" in out and "site=branch1" in out and "info" in out
    assert "hunter2" not in out and REDACTED in out
    assert "\x1b[" not in out  # no colours when not a terminal


def test_stdlib_logging_goes_through_structlog_at_warning() -> None:
    buf = io.StringIO()
    configure_logging("json", "debug", stream=buf)
    lib = logging.getLogger("pyroute2.test")
    lib.info("netlink chatter")
    lib.warning("netlink %s", "trouble")
    try:
        raise ValueError("bad")
    except ValueError:
        lib.exception("with traceback")
    events = lines(buf)
    assert [e["event"] for e in events] == ["netlink trouble", "with traceback"]
    assert events[0]["logger"] == "pyroute2.test" and events[0]["level"] == "warning"
    assert "ValueError: bad" in events[1]["exception"]


def test_configure_twice_keeps_one_stdlib_bridge() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    configure_logging("json", "info", stream=buf)
    logging.getLogger("x").error("once")
    assert [e["event"] for e in lines(buf)] == ["once"]


def test_bad_level_and_format_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("json", "verbose")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml", "info")  # type: ignore[arg-type]


def test_exception_is_one_json_line() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger().exception("failed")
    (event,) = lines(buf)
    assert "RuntimeError: boom" in event["exception"]
