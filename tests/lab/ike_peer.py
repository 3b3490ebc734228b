"""Test side of the IKE socket driver: start it in a namespace, read its events, command it.

    peer = IkePeer(lab, site.gw, spec).start()   # waits for the driver's "Ready" line
    up = peer.wait_for("IkeSaUp")                # dicts as tests/lab/ike_spec.py prints them
    peer.command("rekey_child")
    peer.stop()                                  # SIGTERM: the driver sends DELETE first

Its stderr (datagram trace) and every event line go to one log registered with the Lab,
so a failing test prints them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .lab import Lab
from .netns import Netns

REPO = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


class IkePeerError(RuntimeError):
    pass


class IkePeer:
    def __init__(self, lab: Lab, ns: Netns, spec: dict[str, Any], name: str = "gatewayd") -> None:
        self.ns = ns
        self.spec = spec
        self.name = name
        self.dir = lab.workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spec_path = self.dir / "spec.json"
        self.log_path = self.dir / "driver.log"
        lab.register_log(f"ike driver {name}", self.log_path)
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None
        self._reader: threading.Thread | None = None

    # -- process -----------------------------------------------------------------------
    def start(self, timeout: float = 10) -> IkePeer:
        self.spec_path.write_text(json.dumps(self.spec, indent=1))
        self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 - lives with the process
        self.proc = self.ns.popen(
            [sys.executable, "-m", "tests.lab.ike_driver", "--spec", str(self.spec_path)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("Ready", timeout=timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if self._log is not None and not self._log.closed:
                self._log.write(f"{time.time():.3f} EVENT {line}\n")
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def command(self, cmd: str) -> Event:
        """Send a stdin command; return the driver's acknowledgement."""
        assert self.proc is not None and self.proc.stdin is not None
        seen = len(self.events)
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        ack = self.wait_for("Command", lambda e: e["command"] == cmd, since=seen)
        if not ack["ok"]:
            raise IkePeerError(f"driver refused command {cmd!r} (no established IKE SA?)")
        return ack

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait: the driver deletes its SAs first."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self._reader is not None:
            self._reader.join(timeout=5)  # the last lines (Stopped) are read
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
        return p.returncode

    # -- events ------------------------------------------------------------------------
    def of(self, etype: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e["type"] == etype]

    def wait_for(
        self,
        etype: str,
        pred: Callable[[Event], bool] | None = None,
        *,
        timeout: float = 20,
        since: int = 0,
    ) -> Event:
        """The first event of ``etype`` (at index >= ``since``) that ``pred`` accepts."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[since:]:
                    if e["type"] == etype and (pred is None or pred(e)):
                        return e
                left = deadline - time.monotonic()
                exited = self.proc is not None and self.proc.poll() is not None
                if left <= 0 or exited:
                    why = "driver exited" if exited else f"none within {timeout}s"
                    raise IkePeerError(
                        f"{self.name}: no {etype} event ({why}); events: "
                        f"{[e['type'] for e in self.events]}\n{self.log_tail()}"
                    )
                self._cond.wait(min(left, 0.2))

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])
