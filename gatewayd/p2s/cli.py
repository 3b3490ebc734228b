"""`gatewayctl p2s ...`: remote-access users, client certificates and client profiles.

These commands work on files (the config's [p2s] users file, issuer, ...), not on the
running daemon; a running gatewayd picks changes up on `gatewayctl reload`.

    gatewayctl [-c CONFIG] p2s user add NAME [--users-file F] [--password-stdin]
    gatewayctl [-c CONFIG] p2s user del NAME [--users-file F]
    gatewayctl [-c CONFIG] p2s user list [--users-file F]
    gatewayctl [-c CONFIG] p2s issue NAME [--days N] [--out DIR] [--p12-password-stdin]
    gatewayctl [-c CONFIG] p2s profile NAME --format swanctl|mobileconfig|nm [--out PATH]

Passwords are read with getpass (twice) on a terminal, or as one line from stdin with
--password-stdin; they are never echoed, printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the heavy imports wait until a p2s command actually runs
    from gatewayd.config import Config
    from gatewayd.p2s.profile import ProfileInput

DEFAULT_CONFIG = "/etc/gatewayd/gatewayd.toml"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
FORMATS = ("swanctl", "mobileconfig", "nm")


class CliError(Exception):
    """A refusal with a message for the operator; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- argparse ---------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Add `p2s` to gatewayctl's subcommands (``sub`` is its add_subparsers() object)."""
    p2s = sub.add_parser("p2s", help="remote-access users, client certificates and profiles")
    cmds = p2s.add_subparsers(dest="p2s_cmd", required=True, metavar="COMMAND")

    user = cmds.add_parser("user", help="EAP-MSCHAPv2 users (the [p2s] users file)")
    ucmds = user.add_subparsers(dest="user_cmd", required=True, metavar="ACTION")
    add = ucmds.add_parser("add", help="add a user or set a new password (NT hash stored)")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line from stdin"
    )
    dele = ucmds.add_parser("del", help="remove a user")
    dele.add_argument("name", metavar="NAME")
    lst = ucmds.add_parser("list", help="list the user names")
    for q in (add, dele, lst):
        q.add_argument("--users-file", help="default: the config's [p2s].users_file")

    issue = cmds.add_parser("issue", help="issue a client certificate with [p2s].issuer")
    issue.add_argument("name", metavar="NAME")
    issue.add_argument("--days", type=int, default=365, help="validity (default 365)")
    issue.add_argument("--out", help="directory (default /etc/gatewayd/p2s-clients/NAME)")
    issue.add_argument(
        "--p12-password-stdin",
        action="store_true",
        help="read the PKCS#12 password from stdin instead of generating one",
    )
    issue.add_argument("--force", action="store_true", help="replace existing files")

    prof = cmds.add_parser("profile", help="write a ready client configuration")
    prof.add_argument("name", metavar="NAME")
    prof.add_argument("--format", required=True, choices=FORMATS)
    prof.add_argument(
        "--out",
        help="swanctl: a directory (or its swanctl.conf path); nm: the .nmconnection file; "
        "mobileconfig: the file (default: stdout)",
    )
    prof.add_argument(
        "--auth", choices=("certificate", "eap"), help="default: certificate when issued"
    )
    prof.add_argument("--ca", help="the CA certificate that signs the gateway's certificate")
    prof.add_argument("--cert", help="the user's certificate (default: from `p2s issue`)")
    prof.add_argument("--key", help="the user's private key (default: from `p2s issue`)")
    prof.add_argument("--client-dir", help="where `p2s issue` wrote NAME.crt and NAME.key")
    prof.add_argument("--server", help="address clients dial (default [p2s].server)")
    prof.add_argument("--files-dir", help="nm: where the certificate files will be on the client")
    prof.add_argument(
        "--p12-password-stdin",
        action="store_true",
        help="mobileconfig: read the PKCS#12 password from stdin instead of generating one",
    )


# -- helpers ----------------------------------------------------------------------------


def _load_config(ns: argparse.Namespace) -> Config:
    from gatewayd.config import ConfigError, load_config

    path = getattr(ns, "config", None) or DEFAULT_CONFIG
    try:
        config = load_config(path, check_files=False)
    except ConfigError as e:
        raise CliError(f"{path}:\n  " + "\n  ".join(e.lines()), EXIT_USAGE) from None
    if getattr(config, "p2s", None) is None:
        raise CliError(f"{path}: no [p2s] table: point-to-site is not configured", EXIT_USAGE)
    return config


def _read_line(stdin: TextIO, what: str) -> str:
    line = stdin.readline()
    if not line:
        raise CliError(f"no {what} on stdin", EXIT_USAGE)
    return line.removesuffix("\n").removesuffix("\r")


def read_p12_password(stdin: TextIO) -> str:
    password = _read_line(stdin, "PKCS#12 password")
    if not password:
        raise CliError("the PKCS#12 password is empty", EXIT_USAGE)
    return password


def read_new_password(
    stdin: TextIO, from_stdin: bool, prompt: Callable[[str], str] = getpass.getpass
) -> str:
    """From stdin (one line) or from two terminal prompts that must agree."""
    if from_stdin:
        return _read_line(stdin, "password")
    if not stdin.isatty():
        raise CliError("stdin is not a terminal: use --password-stdin", EXIT_USAGE)
    first = prompt("New password: ")
    if prompt("Repeat password: ") != first:
        raise CliError("the passwords do not match")
    return first


# -- user -------------------------------------------------------------------------------


def _users_file(ns: argparse.Namespace) -> Path:
    if ns.users_file:
        return Path(ns.users_file)
    config = _load_config(ns)
    assert config.p2s is not None
    if not config.p2s.users_file:
        raise CliError("[p2s].users_file is not set; pass --users-file", EXIT_USAGE)
    return Path(config.p2s.users_file)


def cmd_user(ns: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from gatewayd.p2s.users import UsersFileError, add_user, check_name, load_users, remove_user

    path = _users_file(ns)
    try:
        if ns.user_cmd == "list":
            if not path.exists():
                print(f"{path}: no users yet", file=sys.stderr)
                return EXIT_OK
            for name in sorted(load_users(path)):
                print(name, file=out)
            return EXIT_OK
        if ns.user_cmd == "del":
            if not remove_user(path, ns.name):
                raise CliError(f"no user {ns.name!r} in {path}")
            print(f"removed {ns.name} from {path}", file=out)
        else:
            check_name(ns.name)  # before asking for a password
            password = read_new_password(stdin, ns.password_stdin)
            existed = add_user(path, ns.name, password)
            what = "new password for" if existed else "added"
            print(f"{what} {ns.name} in {path}", file=out)
    except (UsersFileError, ValueError) as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None
    print("a running gatewayd uses it after `gatewayctl reload`", file=out)
    return EXIT_OK


# -- issue ------------------------------------------------------------------------------


def cmd_issue(ns: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from gatewayd.p2s import profile_issue as pi

    config = _load_config(ns)
    p2s = config.p2s
    assert p2s is not None
    if p2s.issuer is None:
        raise CliError(
            "[p2s].issuer is not set: gatewayd has no CA to sign client certificates with. "
            "Add issuer = { certificate = ..., key = ... } to [p2s], or issue them with "
            "your own CA (EKU clientAuth, subjectAltName = the user's identity)."
        )
    try:
        pi.check_client_name(ns.name)
        issuer = pi.load_issuer(p2s.issuer.certificate, p2s.issuer.key)
        if not pi.issuer_in_client_ca(issuer, tuple(p2s.client_ca)):
            print(
                "gatewayctl: warning: the issuer is not in [p2s].client_ca: the gateway "
                "will refuse these certificates until it is",
                file=sys.stderr,
            )
        generated = not ns.p12_password_stdin
        password = pi.new_p12_password() if generated else read_p12_password(stdin)
        cert, key = pi.make_client_certificate(issuer, ns.name, ns.days)
        out_dir = Path(ns.out) if ns.out else pi.default_client_dir(ns.name)
        files = pi.write_client_files(
            out_dir, ns.name, cert, key, issuer.chain, password.encode(), force=ns.force
        )
    except pi.IssueError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{e.filename or ''}: {e.strerror}") from None
    print(f"issued a client certificate for {ns.name}", file=out)
    for line in pi.describe_issued(files):
        print(f"  {line}", file=out)
    if generated:
        print(f"  PKCS#12 password: {password}  (shown once; not stored)", file=out)
    return EXIT_OK


# -- profile ----------------------------------------------------------------------------


def _candidate_cas(config: Config, ca_opt: str | None) -> list[Any]:
    from ike.auth.certs import load_certificates

    if ca_opt:
        try:
            return load_certificates(ca_opt)
        except (OSError, ValueError) as e:
            raise CliError(f"--ca: {e}") from None
    p2s = config.p2s
    assert p2s is not None
    paths = [*config.gateway.ca, *p2s.client_ca]
    if p2s.issuer is not None:
        paths.append(p2s.issuer.certificate)
    from gatewayd.p2s.profile import certs_of

    return certs_of([str(x) for x in paths])


def build_profile_input(ns: argparse.Namespace, config: Config) -> ProfileInput:
    from gatewayd.p2s import profile as pr
    from gatewayd.p2s.profile_issue import IssueError, check_client_name, default_client_dir
    from ike.auth.certs import load_certificates

    try:  # the name becomes file names and profile text: the issue command's rules
        check_client_name(ns.name)
    except IssueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    p2s = config.p2s
    assert p2s is not None
    gw = config.gateway
    if not gw.certificate:
        raise CliError("gateway.certificate is not set: required with [p2s]", EXIT_USAGE)
    try:
        gateway_chain = load_certificates(gw.certificate)
    except (OSError, ValueError) as e:
        raise CliError(f"gateway.certificate: {e}") from None
    ca = pr.find_server_ca(gateway_chain, _candidate_cas(config, ns.ca))

    client_dir = Path(ns.client_dir) if ns.client_dir else default_client_dir(ns.name)
    cert_path = Path(ns.cert) if ns.cert else client_dir / f"{ns.name}.crt"
    key_path = Path(ns.key) if ns.key else client_dir / f"{ns.name}.key"
    eap_ok = any(a in p2s.auth for a in ("eap-mschapv2", "eap-radius"))
    auth = ns.auth
    if auth is None:
        have_files = bool(ns.cert or ns.key) or cert_path.exists()
        auth = "certificate" if "certificate" in p2s.auth and (have_files or not eap_ok) else "eap"
    if auth == "certificate" and "certificate" not in p2s.auth:
        raise CliError('[p2s].auth does not include "certificate"', EXIT_USAGE)
    if auth == "eap" and not eap_ok:
        raise CliError('[p2s].auth includes neither "eap-mschapv2" nor "eap-radius"', EXIT_USAGE)
    creds = pr.load_client_credentials(cert_path, key_path) if auth == "certificate" else None
    ipv4, ipv6 = pr.networks_of(tuple(p2s.address_pool))
    return pr.ProfileInput(
        name=ns.name,
        connection=gw.name,
        server=ns.server or p2s.server or str(gw.address),
        server_id=str(gw.identity),
        ca=ca,
        ike_proposals=tuple(p2s.ike_proposals),
        esp_proposals=tuple(p2s.esp_proposals),
        routes=tuple(config.p2s_routes()),
        ipv4=ipv4,
        ipv6=ipv6,
        auth=auth,
        credentials=creds,
    )


def _write_tree(base: Path, files: dict[str, tuple[bytes, int]]) -> list[Path]:
    from gatewayd.p2s.fileio import atomic_write

    written = []
    for rel, (data, mode) in files.items():
        path = base / rel
        path.parent.mkdir(mode=0o700 if mode == 0o600 else 0o755, parents=True, exist_ok=True)
        atomic_write(path, data, mode)
        written.append(path)
    return written


def cmd_profile(ns: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from gatewayd.p2s.profile import ProfileError

    config = _load_config(ns)
    try:
        p = build_profile_input(ns, config)
        if ns.format == "mobileconfig":
            return _profile_apple(ns, p, out, stdin)
        if not ns.out:
            raise CliError(f"--format {ns.format} writes several files: give --out", EXIT_USAGE)
        if ns.format == "swanctl":
            from gatewayd.p2s import profile_swanctl

            target = Path(ns.out)
            base = target.parent if target.suffix == ".conf" else target
            files = profile_swanctl.render(p)
            if target.suffix == ".conf":
                files[target.name] = files.pop("swanctl.conf")
            written = _write_tree(base, files)
        else:
            from gatewayd.p2s import profile_nm

            target = Path(ns.out)
            files_dir = ns.files_dir or str(target.parent.resolve())
            text, files = profile_nm.render(p, files_dir)
            written = _write_tree(target.parent, files)
            written += _write_tree(target.parent, {target.name: (text.encode(), 0o600)})
    except ProfileError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{e.filename or ''}: {e.strerror}") from None
    print(f"{ns.format} profile for {p.name} ({p.auth}):", file=out)
    for path in written:
        print(f"  {path}", file=out)
    return EXIT_OK


def _profile_apple(ns: argparse.Namespace, p: ProfileInput, out: TextIO, stdin: TextIO) -> int:
    from gatewayd.p2s import profile_apple
    from gatewayd.p2s.fileio import atomic_write
    from gatewayd.p2s.profile_issue import new_p12_password

    password = None
    if p.auth == "certificate":
        from_stdin = ns.p12_password_stdin
        password = read_p12_password(stdin) if from_stdin else new_p12_password()
    data = profile_apple.render(p, password.encode() if password is not None else None)
    # The profile holds the user's private key (inside the password-protected PKCS#12).
    if ns.out:
        atomic_write(ns.out, data, 0o600)
        print(f"mobileconfig profile for {p.name} ({p.auth}): {ns.out}", file=out)
    else:
        out.write(data.decode())
        out.flush()
    if password is not None and not ns.p12_password_stdin:
        # stderr: stdout may be the profile itself.
        print(
            f"PKCS#12 password for the identity in the profile: {password}  (shown once)",
            file=sys.stderr,
        )
    return EXIT_OK


# -- entry ------------------------------------------------------------------------------


def run(ns: argparse.Namespace, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run a parsed `gatewayctl p2s ...` command; the exit status."""
    out = out if out is not None else sys.stdout
    stdin = stdin if stdin is not None else sys.stdin
    handlers = {"user": cmd_user, "issue": cmd_issue, "profile": cmd_profile}
    try:
        return handlers[ns.p2s_cmd](ns, out, stdin)
    except CliError as e:
        print(f"gatewayctl: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return EXIT_ERROR
