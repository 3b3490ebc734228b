"""Structured logging for gatewayd: structlog to stderr, one event per line.

`configure_logging()` once at start-up (and again on reload to change the level);
`get_logger(site=..., spi=...)` everywhere else. Fields whose names look like key
material are replaced by "<redacted>" unless debug_keys is set.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LogFormat = Literal["console", "json"]

REDACTED = "<redacted>"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Name tokens (split on '_', '-', '.') that mark a field as secret.
_SECRET_TOKENS = frozenset(
    {
        *("psk", "secret", "secrets", "password", "passwd", "passphrase", "token"),
        *("key", "keys", "keymat", "skeyseed", "privkey", "private", "shared", "gir", "seed"),
    }
)
# sk_d, sk_ai, sk_ei, sk_pr, ... (RFC 7296 §2.14) and e.g. "enckey", "authkey".
_SECRET_NAME = re.compile(r"^sk(_|$)|key$|secret|passw|keymat|psk|g\^?_?ir$")
# Names that contain a secret-looking token but only describe it: paths and sizes.
_PUBLIC_NAME = re.compile(
    r"(_file|_path|_len|_length|_size|_bits|_id|_count)$|^key_exchange$|^ke_?group$"
)
_TOKEN_SPLIT = re.compile(r"[_\-.]")


def is_secret_name(name: str) -> bool:
    """True when a field called `name` probably holds key material or a password.

    Errs on the side of redaction; nonces, SPIs and public KE values are kept.
    """
    lowered = name.lower()
    if _PUBLIC_NAME.search(lowered):
        return False
    if _SECRET_NAME.search(lowered):
        return True
    return any(tok in _SECRET_TOKENS for tok in _TOKEN_SPLIT.split(lowered))


def _redact(value: Any) -> Any:
    # Nested mappings (e.g. sa={"sk_ei": ...}) are redacted by the same rule.
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) else _redact(v) for k, v in value.items()}
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace secret-looking fields by REDACTED."""
    for name in list(event_dict):
        if name == "event":
            continue
        if is_secret_name(name):
            event_dict[name] = REDACTED
        else:
            event_dict[name] = _redact(event_dict[name])
    return event_dict


def _json_default(obj: Any) -> Any:
    # bytes (SPIs, nonces) as hex; enums by name; addresses, paths etc. as their text.
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, Enum):
        return obj.name
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)


def _bytes_to_hex(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for name, value in event_dict.items():
        if isinstance(value, bytes | bytearray):
            event_dict[name] = bytes(value).hex()
    return event_dict


def parse_level(level: str | int) -> int:
    """'info' / 'DEBUG' / logging.INFO -> the stdlib level number."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r} (use one of: debug, info, warning, error, critical)"
        ) from None


class _StdlibBridge(logging.Handler):
    """Sends stdlib records (pyroute2, asyncio, ...) through the structlog pipeline,
    so there is one format and one writer lock for the whole process."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger().bind(logger=record.name)
            kw: dict[str, Any] = {}
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            log.log(record.levelno, record.getMessage(), **kw)
        except Exception:
            self.handleError(record)


def configure_logging(
    fmt: LogFormat = "console",
    level: str | int = "info",
    debug_keys: bool = False,
    *,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and the stdlib root logger) to write to `stream` (stderr).

    fmt "json" writes one JSON object per line with timestamp (ISO 8601, UTC), level,
    event and every bound field; "console" is the human-readable form. Can be called
    again (e.g. on reload) to change format or level.
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r} (use 'console' or 'json')")
    levelno = parse_level(level)
    out = stream if stream is not None else sys.stderr

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not debug_keys:
        processors.append(redact_secrets)
    processors.append(_bytes_to_hex)
    if fmt == "json":
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=_json_default),
        ]
    else:
        colors = bool(getattr(out, "isatty", lambda: False)())
        processors.append(structlog.dev.ConsoleRenderer(colors=colors))

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Not cached, so that a later configure_logging() (reload) takes effect.
        cache_logger_on_first_use=False,
    )

    # Libraries log through stdlib logging; only their warnings and errors matter.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(max(logging.WARNING, levelno))

    if debug_keys:
        get_logger().warning("debug_keys enabled: key material will be written to the log")


def get_logger(**bind: Any) -> FilteringBoundLogger:
    """A logger with `bind` fields (site=..., spi=..., exchange=...) on every event."""
    logger: FilteringBoundLogger = structlog.get_logger(**bind)
    return logger
