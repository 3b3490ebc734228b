"""`gatewayd` command line: `run` the gateway, `check` a config."""

from __future__ import annotations

import argparse
import sys

DEFAULT_CONFIG = "/etc/gatewayd/gatewayd.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatewayd", description="IPsec/IKEv2 VPN gateway")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument("--log-format", choices=["console", "json"], default="console")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--debug-keys", action="store_true", help="log key material (never in production)"
    )
    check = sub.add_parser("check", help="validate a config without touching the system")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from gatewayd.check import run_check

        return run_check(args.config)
    try:
        from gatewayd.daemon import run_daemon  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("gatewayd: the daemon is not built yet (issue 3); `check` works", file=sys.stderr)
        return 2
    return int(run_daemon(args))


if __name__ == "__main__":
    sys.exit(main())
