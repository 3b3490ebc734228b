"""Per-packet cost of ESP seal and open, 1400-byte inner packets, one thread.

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


def per_call_us(fn: Callable[[int], object], n: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):  # the best of many short runs trims noise from other processes
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_suite(name: str, encr: EncrId, klen: int, integ: IntegId, ilen: int, n: int,
                reps: int, esn: bool = False, selectors: SelectorSet | None = None,
                tag: str = "") -> None:  # fmt: skip
    params = EspParams(0x1000, encr, os.urandom(klen), integ, os.urandom(ilen), esn=esn)
    inner = inner_packet()
    out = OutboundSa(params, selectors)
    packets = [out.seal(inner, 4) for _ in range(n)]

    def seal(k: int) -> None:
        sa = OutboundSa(params, selectors)
        seal = sa.seal
        for _ in range(k):
            seal(inner, 4)

    def open_(k: int) -> None:
        sa = InboundSa(params, selectors=selectors)
        open_packet = sa.open
        for packet in packets[:k]:
            open_packet(packet)

    label = name + (" esn" if esn else "") + tag
    seal_us, open_us = per_call_us(seal, n, reps), per_call_us(open_, n, reps)
    print(f"{label:32s} seal {seal_us:6.2f} µs   open {open_us:6.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=2000, help="packets per run")
    parser.add_argument("--reps", type=int, default=30, help="runs; the fastest counts")
    args = parser.parse_args()
    n, reps = args.packets, args.reps

    key, nonce, aad, data = os.urandom(16), os.urandom(12), os.urandom(8), os.urandom(1404)
    gcm = AESGCM(key)

    def bare(k: int) -> None:
        encrypt = gcm.encrypt
        for _ in range(k):
            encrypt(nonce, data, aad)

    print(f"{'(bare AESGCM.encrypt, 1404 B)':32s} {per_call_us(bare, n, reps):6.2f} µs")
    for suite in SUITES:
        bench_suite(*suite, n=n, reps=reps)
    narrow = SelectorSet(
        [Selector.from_network("10.0.0.0/24")], [Selector.from_network("10.0.1.0/24", 17)]
    )
    bench_suite(*SUITES[0], n=n, reps=reps, esn=True)
    bench_suite(*SUITES[0], n=n, reps=reps, selectors=SelectorSet.any(), tag=" sel:any")
    bench_suite(*SUITES[0], n=n, reps=reps, selectors=narrow, tag=" sel:narrow")


if __name__ == "__main__":
    main()
