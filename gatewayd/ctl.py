"""gatewayctl: talk to a running gatewayd over its control socket.

Exit codes: 0 ok, 1 the daemon answered with an error (or garbage), 2 usage or an
unreadable -c config, 3 cannot connect to the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from typing import Any, TextIO

from gatewayd.control import (
    DEFAULT_SOCKET,
    ControlClient,
    ControlClientError,
    ControlConnectError,
)
from gatewayd.p2s import cli as p2s_cli

DEFAULT_CONFIG = "/etc/gatewayd/gatewayd.toml"
DEFAULT_TIMEOUT = 10.0

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


class UsageError(Exception):
    """Bad invocation or unusable -c config: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatewayctl", description="Control a running gatewayd.")
    p.add_argument(
        "-s", "--socket", help=f"control socket (default: the config's, else {DEFAULT_SOCKET})"
    )
    p.add_argument(
        "-c",
        "--config",
        help=f"config file to take control_socket from (default: {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "-t", "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for an answer"
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    st = sub.add_parser("status", help="sites, their IKE and Child SAs, counters")
    st.add_argument("--json", action="store_true", help="print the daemon's JSON")
    for name, text in (("up", "initiate the tunnel(s) to SITE"), ("down", "tear down SITE")):
        sub.add_parser(name, help=text).add_argument("site", metavar="SITE")
    rk = sub.add_parser("rekey", help="rekey SITE's Child SA (or its IKE SA) now")
    rk.add_argument("site", metavar="SITE")
    rk.add_argument("--ike", action="store_true", help="rekey the IKE SA instead")
    sub.add_parser("reload", help="re-read the configuration")
    rt = sub.add_parser("routes", help="the route table: prefix, site, Child SA, state")
    rt.add_argument("--json", action="store_true", help="print the daemon's JSON")
    p2s_cli.add_parser(sub)  # offline commands: users, client certificates, profiles
    return p


def resolve_socket(socket_opt: str | None, config_opt: str | None) -> str:
    """-s wins; else [gateway].control_socket of the config; else the default path.

    An explicit -c that cannot be read is a usage error; a missing default config is not.
    """
    if socket_opt:
        return socket_opt
    path = config_opt or DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if config_opt:
            raise UsageError(f"config file {path} not found") from None
        return DEFAULT_SOCKET
    except (OSError, tomllib.TOMLDecodeError) as exc:
        if config_opt:
            raise UsageError(f"cannot read config {path}: {exc}") from None
        print(f"gatewayctl: warning: ignoring {path}: {exc}", file=sys.stderr)
        return DEFAULT_SOCKET
    gateway = data.get("gateway")
    value = gateway.get("control_socket") if isinstance(gateway, dict) else None
    if value is None:
        return DEFAULT_SOCKET
    if not isinstance(value, str) or not value:
        raise UsageError(f"{path}: gateway.control_socket must be a non-empty string")
    return value


def request_for(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if ns.cmd in ("up", "down"):
        return ns.cmd, {"site": ns.site}
    if ns.cmd == "rekey":
        return "rekey", {"site": ns.site, "ike": bool(ns.ike)}
    return ns.cmd, {}


# --- rendering ------------------------------------------------------------------

SITE_HEADERS = ("SITE", "STATE", "ROLE", "REMOTE", "IKE PROPOSAL", "ESTABLISHED")
CHILD_HEADERS: tuple[str, ...] = ("SITE", "SPI IN", "SPI OUT", "PROPOSAL", "TRAFFIC SELECTORS")
CHILD_HEADERS += ("BYTES IN", "BYTES OUT", "PKTS IN", "PKTS OUT", "ESTABLISHED")
ROUTE_HEADERS = ("PREFIX", "SITE", "CHILD SA", "STATE")
CLIENT_HEADERS: tuple[str, ...] = ("CLIENT", "VIRTUAL IP", "REMOTE", "AUTH", "SPI IN", "SPI OUT")
CLIENT_HEADERS += ("BYTES IN", "BYTES OUT", "PKTS IN", "PKTS OUT", "ESTABLISHED")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()
) -> str:
    """Columns padded to their widest cell; the `right` columns (counters) right-aligned."""
    cells = [list(headers)] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    rjust = [h in right for h in headers]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, rjust, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: object) -> str:
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def _ts(sa: dict[str, Any]) -> str:
    local = ",".join(sa.get("local_ts") or []) or "-"
    remote = ",".join(sa.get("remote_ts") or []) or "-"
    return f"{local} === {remote}"


def render_status(result: Any) -> str:
    if not isinstance(result, dict):
        return json.dumps(result)
    out: list[str] = []
    gw = result.get("gateway") or {}
    out.append(
        f"gateway {gw.get('name', '?')}  address {gw.get('address', '-')}"
        f"  up {duration(gw.get('uptime_s'))}"
    )
    sites = [s for s in result.get("sites") or [] if isinstance(s, dict)]
    p2s = result.get("p2s")
    if not sites:
        out.append("\nno sites configured")
        if isinstance(p2s, dict):
            out += ["", render_p2s(p2s)]
        return "\n".join(out)

    site_rows: list[list[object]] = []
    child_rows: list[list[object]] = []
    for site in sites:
        ike = site.get("ike_sa") or {}
        site_rows.append(
            [
                site.get("name"),
                site.get("state"),
                ike.get("role"),
                ike.get("remote") or site.get("address"),
                ike.get("proposal"),
                duration(ike.get("established_s")) if ike else None,
            ]
        )
        for sa in site.get("child_sas") or []:
            child_rows.append(
                [
                    site.get("name"),
                    sa.get("spi_in"),
                    sa.get("spi_out"),
                    sa.get("proposal"),
                    _ts(sa),
                    size(sa.get("bytes_in")),
                    size(sa.get("bytes_out")),
                    sa.get("packets_in"),
                    sa.get("packets_out"),
                    duration(sa.get("established_s")),
                ]
            )
    out.append("")
    out.append(table(SITE_HEADERS, site_rows, right=("ESTABLISHED",)))
    out.append("")
    if child_rows:
        out.append(table(CHILD_HEADERS, child_rows, right=CHILD_HEADERS[5:]))
    else:
        out.append("no Child SAs")
    if isinstance(p2s, dict):
        out += ["", render_p2s(p2s)]
    return "\n".join(out)


def render_p2s(p2s: dict[str, Any]) -> str:
    """The remote clients: one row each, with the virtual IPs, address and counters."""
    pool = p2s.get("pool") or {}
    clients = [c for c in p2s.get("clients") or [] if isinstance(c, dict)]
    head = (
        f"point-to-site: {len(clients)} clients (max {p2s.get('max_clients', '-')}),"
        f" pool {','.join(pool.get('prefixes') or []) or '-'}"
        f" {pool.get('used', 0)}/{pool.get('size', '-')} in use"
    )
    if not clients:
        return head + "\nno clients connected"
    rows: list[list[object]] = []
    for c in clients:
        first: dict[str, Any] = next(iter(c.get("child_sas") or []), {})
        rows.append(
            [
                c.get("identity"),
                ",".join(c.get("virtual_ips") or []) or None,
                c.get("remote"),
                c.get("auth"),
                first.get("spi_in"),
                first.get("spi_out"),
                size(c.get("bytes_in")),
                size(c.get("bytes_out")),
                c.get("packets_in"),
                c.get("packets_out"),
                duration(c.get("established_s")),
            ]
        )
    return head + "\n\n" + table(CLIENT_HEADERS, rows, right=CLIENT_HEADERS[6:])


def _child_sa_label(value: Any) -> object:
    # A route's Child SA may come as an SPI string or as {"spi_in": ..., "spi_out": ...}.
    if isinstance(value, dict):
        spis = [value.get("spi_in"), value.get("spi_out")]
        return "/".join(str(s) for s in spis if s) or None
    return value


def render_routes(result: Any) -> str:
    routes = result.get("routes") if isinstance(result, dict) else result
    if not isinstance(routes, list):
        return json.dumps(result)
    if not routes:
        return "no routes"
    rows = [
        [r.get("prefix"), r.get("site"), _child_sa_label(r.get("child_sa")), r.get("state")]
        for r in routes
        if isinstance(r, dict)
    ]
    return table(ROUTE_HEADERS, rows)


def render_simple(ns: argparse.Namespace, result: Any) -> str:
    if isinstance(result, str) and result:
        return result
    if isinstance(result, dict) and isinstance(result.get("message"), str):
        return str(result["message"])
    target = f" {ns.site}" if getattr(ns, "site", None) else ""
    what = "rekey --ike" if ns.cmd == "rekey" and ns.ike else ns.cmd
    return f"{what}{target}: ok"


def render(ns: argparse.Namespace, result: Any) -> str:
    if getattr(ns, "json", False):
        return json.dumps(result, indent=2)
    if ns.cmd == "status":
        return render_status(result)
    if ns.cmd == "routes":
        return render_routes(result)
    return render_simple(ns, result)


# --- entry point -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad usage
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if ns.cmd == "p2s":  # works on files, not on the daemon
        return p2s_cli.run(ns, out)
    try:
        path = resolve_socket(ns.socket, ns.config)
    except UsageError as exc:
        print(f"gatewayctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cmd, args = request_for(ns)
    try:
        result = ControlClient.request(path, cmd, args, timeout=ns.timeout)
    except ControlConnectError as exc:
        print(f"gatewayctl: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except ControlClientError as exc:
        print(f"gatewayctl: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        print(render(ns, result), file=out)
        out.flush()
    except BrokenPipeError:
        # `gatewayctl status | head`: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
