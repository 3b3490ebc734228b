"""Per-packet cost of ESP seal and open, 1400-byte inner packets, one thread: seal() per
packet, and open_packets() over a batch, as the receive loop runs it.

    python bench/esp_micro.py [--packets N]

A measurement, not a test: it prints µs per call, and the bare AEAD call for reference.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from esp.sa import EspParams, InboundSa, OutboundSa
from esp.selectors import Selector, SelectorSet
from ike.constants import EncrId, IntegId

INNER_LEN = 1400

SUITES: list[tuple[str, EncrId, int, IntegId, int]] = [
    ("aes128gcm16", EncrId.AES_GCM_16, 16 + 4, IntegId.NONE, 0),
    ("aes256gcm16", EncrId.AES_GCM_16, 32 + 4, IntegId.NONE, 0),
    ("chacha20poly1305", EncrId.CHACHA20_POLY1305, 32 + 4, IntegId.NONE, 0),
    ("aes128-sha256", EncrId.AES_CBC, 16, IntegId.HMAC_SHA2_256_128, 32),
    ("aes256-sha256", EncrId.AES_CBC, 32, IntegId.HMAC_SHA2_256_128, 32),
    ("aes256-sha512", EncrId.AES_CBC, 32, IntegId.HMAC_SHA2_512_256, 64),
    ("aes128-sha1", EncrId.AES_CBC, 16, IntegId.HMAC_SHA1_96, 20),
]


def inner_packet() -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, INNER_LEN, 1, 0, 64, 17, 0,
        bytes((10, 0, 0, 1)), bytes((10, 0, 1, 1)),
    )  # fmt: skip
    udp = struct.pack("!HHHH", 4000, 5000, INNER_LEN - 20, 0)
    return header + udp + os.urandom(INNER_LEN - 28)


def seal_all(sa: OutboundSa, inners: list[bytes]) -> None:
    seal = sa.seal
    for packet in inners:
        seal(packet, 4)


def open_all(sa: InboundSa, packets: list[bytes]) -> None:
    opened: list[bytes] = []
    sa.open_packets(packets, 0, opened.append)
    if len(opened) != len(packets):
        raise RuntimeError("a packet did not open")


def cpu_us_per_packet(fn: Callable[[list[bytes]], object], batch: list[bytes]) -> float:
    # CPU time of this thread: on a shared machine other processes then cost us cache
    # misses, but not the time we spend descheduled.
    start = time.thread_time()
    fn(batch)
    return (time.thread_time() - start) / len(batch) * 1e6


def bench_suite(name: str, encr: EncrId, klen: int, integ: IntegId, ilen: int, n: int,
                reps: int, esn: bool = False, selectors: SelectorSet | None = None,
                tag: str = "") -> tuple[str, float, float]:  # fmt: skip
    params = EspParams(0x1000, encr, os.urandom(klen), integ, os.urandom(ilen), esn=esn)
    inner = inner_packet()
    best_seal = best_open = float("inf")
    for _ in range(reps):  # the best of many short runs trims noise
        out, inb = OutboundSa(params, selectors), InboundSa(params, selectors=selectors)
        best_seal = min(best_seal, cpu_us_per_packet(partial(seal_all, out), [inner] * n))
        # A small batch read just before, as packets fresh from a socket are in cache.
        batch = [out.seal(inner, 4) for _ in range(n)]
        b"".join(batch)
        best_open = min(best_open, cpu_us_per_packet(partial(open_all, inb), batch))
    label = name + (" esn" if esn else "") + tag
    print(f"{label:32s} seal {best_seal:6.2f} µs   open {best_open:6.2f} µs")
    return label, best_seal, best_open


def run(n: int = 200, reps: int = 60) -> dict[str, dict[str, float]]:
    """Every case, printed as it goes; returns {case: {metric: µs}} for python -m bench."""
    key, nonce, aad, data = os.urandom(16), os.urandom(12), os.urandom(8), os.urandom(1404)
    gcm = AESGCM(key)

    def bare(items: list[bytes]) -> None:
        encrypt = gcm.encrypt
        for item in items:
            encrypt(nonce, item, aad)

    bare_us = min(cpu_us_per_packet(bare, [data] * n) for _ in range(reps))
    print(f"{'(bare AESGCM.encrypt, 1404 B)':32s} {bare_us:6.2f} µs")
    rows = [bench_suite(*suite, n=n, reps=reps) for suite in SUITES]
    narrow = SelectorSet(
        [Selector.from_network("10.0.0.0/24")], [Selector.from_network("10.0.1.0/24", 17)]
    )
    for esn, selectors, tag in ((True, None, ""), (False, SelectorSet.any(), " sel:any"),
                                (False, narrow, " sel:narrow")):  # fmt: skip
        rows.append(bench_suite(*SUITES[0], n=n, reps=reps, esn=esn, selectors=selectors, tag=tag))
    results = {"bare AESGCM.encrypt 1404 B": {"encrypt_us": round(bare_us, 3)}}
    for label, seal_us, open_us in rows:
        results[label] = {"seal_us": round(seal_us, 3), "open_us": round(open_us, 3)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=200, help="packets per run")
    parser.add_argument("--reps", type=int, default=60, help="runs; the fastest counts")
    args = parser.parse_args()
    run(args.packets, args.reps)


if __name__ == "__main__":
    main()
