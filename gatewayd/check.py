"""``gatewayd check -c FILE``: validate a config without touching the system."""

from __future__ import annotations

import sys
from typing import TextIO

from gatewayd.config import ConfigError, load_config


def run_check(path: str, *, check_files: bool = True, out: TextIO | None = None) -> int:
    """Print every problem (one line each) and return 1, or print ``ok`` and return 0.

    With ``check_files`` (the default) psk_file, certificate, private_key and ca are read
    and verified as ``gatewayd run`` would; without it only the file's content is checked.
    """
    out = out if out is not None else sys.stdout
    try:
        load_config(path, check_files=check_files)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=out)
        return 1
    print("ok", file=out)
    return 0
