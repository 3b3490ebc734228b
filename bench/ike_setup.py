"""IKE SA + first Child SA set-ups per second, both peers in one process, in memory.

    python bench/ike_setup.py [--seconds S] [--profile COMBO]

Real crypto and os.urandom; the responder is admitted by a Dispatcher, as in the daemon.
A measurement, not a test: for ECP-256 and X25519, with PSK and ECDSA P-256 certificates,
it prints the CPU time of one set-up (both peers, IKE_SA_INIT + IKE_AUTH, one core) and
the set-ups per second that makes. Like esp_micro, the fastest of many short batches
counts, which trims the noise of a shared machine; the mean is reported beside it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ike.auth.certs import TrustStore
from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposal
from ike.dispatcher import Dispatcher
from ike.session import ChildConfig, IkeSession, SessionConfig
from ike.session.session import State
from ike.session.ts import any_selectors
from tests.ike import pki

ADDR_I, ADDR_R = ("192.0.2.1", 500), ("198.51.100.2", 500)
ID_I, ID_R = "hub.example.net", "branch.example.net"
PSK = b"a-benchmark-pre-shared-key-of-reasonable-length"
GROUPS = {"ecp256": "aes256gcm16-prfsha256-ecp256", "x25519": "aes256gcm16-prfsha256-x25519"}
AUTHS = ("psk", "ecdsa-p256")


BATCH = 20  # set-ups per timed batch


@dataclass(frozen=True)
class Result:
    setups: int
    cpu_s: float  # all batches
    best_s: float  # CPU seconds per set-up in the fastest batch

    def as_dict(self) -> dict[str, float | int]:
        return {
            "setups_per_s": round(1 / self.best_s, 1),
            "cpu_ms_per_setup": round(self.best_s * 1e3, 3),
            "mean_cpu_ms_per_setup": round(self.cpu_s / self.setups * 1e3, 3),
            "setups": self.setups,
        }


def configs(group: str, auth: str) -> tuple[SessionConfig, SessionConfig]:
    ike = [parse_proposal(GROUPS[group], ProtocolId.IKE)]
    esp = (parse_proposal("aes256gcm16", ProtocolId.ESP),)

    def one(local: str, remote: str, creds: dict[str, object]) -> SessionConfig:
        child = ChildConfig("net", any_selectors(), any_selectors(), esp)
        return SessionConfig(
            name=local,
            local_id=Identity.parse(local),
            remote_id=Identity.parse(remote),
            ike_proposals=ike,
            children=[child],
            **creds,  # type: ignore[arg-type]
        )

    if auth == "psk":
        return one(ID_I, ID_R, {"psk": PSK}), one(ID_R, ID_I, {"psk": PSK})
    ca = pki.make_ca("CN=Bench Root,O=gatewayd", "p256")
    trust = TrustStore([ca.cert])

    def creds(ident: str) -> dict[str, object]:
        leaf = pki.issue(ca, f"CN={ident}", "p256", sans=[ident])
        chain = leaf.chain()
        return {"private_key": leaf.key, "certificates": chain, "trust": trust,
                "remote_auth": "pubkey"}  # fmt: skip

    return one(ID_I, ID_R, creds(ID_I)), one(ID_R, ID_I, creds(ID_R))


def make_setup(cfg_i: SessionConfig, cfg_r: SessionConfig) -> Callable[[], None]:
    """One complete set-up per call; raises if it does not establish."""

    def new_responder(remote: tuple[str, int], local: tuple[str, int], now: float) -> IkeSession:
        return IkeSession(cfg_r, initiator=False, local_addr=ADDR_R, remote_addr=remote, now=now)

    dispatcher = Dispatcher(new_responder)

    def setup() -> None:
        now = time.time()  # certificates are checked against it
        i = IkeSession(cfg_i, initiator=True, local_addr=ADDR_I, remote_addr=ADDR_R, now=now)
        i.initiate(now)
        r = None
        while out := i.datagrams_to_send():
            for g in out:
                r = dispatcher.receive(g.data, ADDR_I, now)
            assert r is not None
            for g in r.datagrams_to_send():
                i.receive_datagram(g.data, ADDR_R, now)
        if r is None or i.state is not State.ESTABLISHED or r.state is not State.ESTABLISHED:
            raise RuntimeError(f"set-up failed: {i.close_reason or (r and r.close_reason)}")
        if len(i.children) != 1 or len(r.children) != 1:
            raise RuntimeError("no Child SA")
        dispatcher.forget(r)  # keep the tables as small as a steady state has them

    return setup


def measure(setup: Callable[[], None], seconds: float) -> Result:
    """Batches of set-ups until ``seconds`` of CPU time are spent."""
    for _ in range(BATCH):  # warm caches (and fail early if the set-up does not work)
        setup()
    total, best, n = 0.0, float("inf"), 0
    while total < seconds:
        start = time.process_time()
        for _ in range(BATCH):
            setup()
        spent = time.process_time() - start
        total, best, n = total + spent, min(best, spent / BATCH), n + BATCH
    return Result(n, total, best)


def run(seconds: float = 3.0) -> dict[str, dict[str, float | int]]:
    """Every combination, printed as it goes; the results keyed by 'group/auth'."""
    print(f"{'combination':20s} {'set-ups/s':>10s} {'CPU ms/set-up':>14s} {'(mean)':>8s}")
    out: dict[str, dict[str, float | int]] = {}
    for auth in AUTHS:
        for group in GROUPS:
            combo = f"{group}/{auth}"
            r = out[combo] = measure(make_setup(*configs(group, auth)), seconds).as_dict()
            print(
                f"{combo:20s} {r['setups_per_s']:10.0f} {r['cpu_ms_per_setup']:14.3f}"
                f" {r['mean_cpu_ms_per_setup']:8.3f}",
                flush=True,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per combination")
    parser.add_argument("--profile", metavar="GROUP/AUTH", help="cProfile one combination")
    args = parser.parse_args()
    if args.profile:
        group, auth = args.profile.split("/")
        setup = make_setup(*configs(group, auth))
        profiler = cProfile.Profile()
        profiler.runcall(measure, setup, args.seconds)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    run(args.seconds)


if __name__ == "__main__":
    main()
