"""pytest plugin for the namespace lab; load it from tests/conftest.py with
``pytest_plugins = ["tests.lab.plugin"]``.

* ``lab`` fixture: a fresh ``Lab`` per test (root required: skip, or fail under
  ``GATEWAYD_REQUIRE_INTEROP=1``), closed after the test whatever happened.
* ``make_netns`` fixture: ``make_netns("host") -> Netns``, deleted after the test.
* On a failing test, the tail of every log registered with a lab is attached to the
  report (shown under the failure as "lab log ...").
* At session start, namespaces left by crashed runs (dead creator pid) are removed, and
  SIGTERM is turned into KeyboardInterrupt so an interrupted run still tears down.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .lab import LOG_LINES, Lab, forget_closed_labs, labs_for_report
from .netns import DEFAULT_PREFIX, Netns, cleanup_stale
from .requires import require_root


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0:
        with contextlib.suppress(Exception):
            cleanup_stale(DEFAULT_PREFIX)
    # A CI timeout sends SIGTERM: unwind like Ctrl-C so fixtures still tear the lab down.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def pytest_runtest_setup(item: pytest.Item) -> None:
    forget_closed_labs()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for lab in labs_for_report():
            for name, tail in lab.log_tails(LOG_LINES).items():
                report.sections.append((f"lab log {name} (last {LOG_LINES} lines)", tail))
    return report


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A Lab whose files live in the test's tmp_path."""
    require_root()
    with Lab(tmp_path / "lab") as the_lab:
        yield the_lab


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], Netns]]:
    """Factory for bare namespaces (loopback up), all deleted after the test."""
    require_root()
    made: list[Netns] = []

    def make(host: str) -> Netns:
        ns = Netns(host)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        with contextlib.suppress(Exception):
            ns.delete()
