#!/usr/bin/env python3
"""Regenerate tests/ike/vectors/strongswan-<proposal>/ from a real strongSwan exchange.

Two strongSwan peers (site a = initiator, site b = responder) run in the namespace lab
with keymat logging (ike=4, chd=4). One IKE_SA_INIT + IKE_AUTH (PSK, identities by IP),
one ping LAN to LAN (two ESP packets), then an INFORMATIONAL delete, all captured on the
initiator's WAN link. The values read from the log are checked against RFC 7296 math, and
every SK payload and ESP packet is decrypted with them, before anything is written: a
file set either is consistent or is not produced.

    sudo python3 tests/lab/capture_vectors.py            # every case
    sudo python3 tests/lab/capture_vectors.py --case aes256-sha256-modp2048 --out /tmp/v
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import ipaddress
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "tests.lab" importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.lab.capture import Capture, Datagram, read_udp
from tests.lab.ikemsg import NON_ESP_MARKER, PAYLOAD_KE, PAYLOAD_NONCE, first_payload, header
from tests.lab.keylog import Dump, dumps, first
from tests.lab.lab import Lab
from tests.lab.presets import psk_site_to_site
from tests.lab.requires import root_problem, strongswan_problem
from tests.lab.strongswan import KEYMAT_LOG_LEVELS, StrongSwan
from tests.lab.traffic import ping

PSK = "this-is-a-test-psk-for-vectors"
ESP_PROPOSAL = "aes256gcm16"
CASES = ("aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048")
CONN, CHILD = "vectors", "net"
PRF_HASH = {"PRF_HMAC_SHA2_256": "sha256", "PRF_HMAC_SHA2_384": "sha384"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "ike" / "vectors"
# Log lines worth keeping in the excerpt: the exchange, keymat and Child SA install,
# minus the task scheduler's bookkeeping.
_KEEP_SUBSYSTEMS = {"IKE", "CHD", "ENC", "NET", "CFG"}
_NOISE = re.compile(r"(queueing|activating|reinitiating|  [A-Z_]+ task$|vici )")


def run_exchange(proposal: str, workdir: Path) -> dict[str, Any]:
    """Run the exchange; return datagrams, both logs and facts from swanctl."""
    with Lab(workdir) as lab:
        topo = lab.site_to_site(ipv6=False)
        a, b = topo["a"], topo["b"]
        peers: dict[str, StrongSwan] = {}
        for me, other, role in ((a, b, "initiator"), (b, a, "responder")):
            sw = lab.strongswan(me.gw, name=role, log_levels=KEYMAT_LOG_LEVELS)
            conn, secret = psk_site_to_site(
                me,
                other,
                PSK,
                name=CONN,
                child=CHILD,
                ike_proposals=[proposal],
                esp_proposals=[ESP_PROPOSAL],
            )
            sw.connections.append(conn)
            sw.secrets.append(secret)
            peers[role] = sw.start()
        pcap = workdir / "capture.pcap"
        with Capture(a.gw, "wan", pcap, "udp port 500 or udp port 4500"):
            peers["initiator"].initiate(CHILD)
            peers["responder"].wait_established(CONN, CHILD)
            sa = peers["initiator"].list_sas(CONN)[0]
            if ping(a.lan, b.lan_host_v4, count=1, wait=2).received != 1:
                raise RuntimeError("LAN ping through the tunnel failed")
            peers["initiator"].terminate(ike=CONN)
        return {
            "datagrams": read_udp(pcap),
            "pcap": pcap.read_bytes(),
            "log_i": peers["initiator"].log_text(),
            "log_r": peers["responder"].log_text(),
            "version": peers["initiator"].swanctl("--version", "--daemon").stdout.strip(),
            "sa": sa,
            "initiator": a.gw_wan_v4,
            "responder": b.gw_wan_v4,
            "lan_i": a.lan_net_v4,
            "lan_r": b.lan_net_v4,
        }


def describe(d: Datagram, n: int, initiator: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "n": n,
        "dir": "i->r" if d.src == initiator else "r->i",
        "src": d.src,
        "dst": d.dst,
        "sport": d.sport,
        "dport": d.dport,
    }
    p = d.payload
    if p == b"\xff":
        entry["kind"] = "nat-keepalive"
    elif d.dport == 500 or d.sport == 500 or p.startswith(NON_ESP_MARKER):
        h = header(p[4:] if p.startswith(NON_ESP_MARKER) else p)
        entry |= {
            "kind": "ike",
            "non_esp_marker": p.startswith(NON_ESP_MARKER),
            "exchange": h.exchange,
            "response": h.response,
            "message_id": h.message_id,
        }
    else:
        entry |= {"kind": "esp", "spi": p[:4].hex(), "seq": int.from_bytes(p[4:8], "big")}
    entry["hex"] = p.hex()
    return entry


_PAYLOAD_LIST = re.compile(r"(?:generating|parsed) (\w+) (request|response) (\d+) \[(.*)\]")


def add_payload_lists(exchange: list[dict[str, Any]], log: str) -> None:
    """Give each IKE entry strongSwan's own payload list (SK contents included)."""
    seen = {
        (m[1], m[2] == "response", int(m[3])): m[4].strip() for m in _PAYLOAD_LIST.finditer(log)
    }
    for e in exchange:
        if e["kind"] == "ike":
            e["payloads"] = seen.get((e["exchange"], e["response"], e["message_id"]))


def ike_messages(exchange: list[dict[str, Any]]) -> list[bytes]:
    msgs = []
    for e in exchange:
        if e["kind"] == "ike":
            raw = bytes.fromhex(e["hex"])
            msgs.append(raw[4:] if e["non_esp_marker"] else raw)
    return msgs


def _selected(log: str, kind: str) -> str:
    m = re.search(rf"selected proposal: {kind}:(\S+)", log)
    if not m:
        raise RuntimeError(f"no selected {kind} proposal in the log")
    return m[1]


def _child_keys(ds: list[Dump]) -> dict[str, str | None]:
    chd = {d.label: d.data.hex() for d in ds if d.subsystem == "CHD"}
    return {
        "keymat_seed": chd.get("seed"),
        "encr_key_i2r": chd.get("encryption initiator key"),
        "encr_key_r2i": chd.get("encryption responder key"),
        "integ_key_i2r": chd.get("integrity initiator key"),
        "integ_key_r2i": chd.get("integrity responder key"),
    }


def build_keys(run: dict[str, Any], proposal: str, exchange: list[dict[str, Any]]) -> dict:
    log = run["log_i"]
    ds = dumps(log)
    init_req, init_resp = ike_messages(exchange)[:2]
    ke_i, ke_r = first_payload(init_req, PAYLOAD_KE), first_payload(init_resp, PAYLOAD_KE)
    ni, nr = first_payload(init_req, PAYLOAD_NONCE), first_payload(init_resp, PAYLOAD_NONCE)
    assert ke_i and ke_r and ni and nr
    octets = [d.data for d in ds if d.label.startswith("octets = ")]
    auths = [d.data for d in ds if d.label.startswith("AUTH = ")]
    hdr = header(init_resp)
    sa = run["sa"]
    child = sa.child(CHILD)

    def key(label: str) -> str | None:
        v = first(ds, label)
        return v.hex() if v is not None else None

    return {
        "source": f"{run['version']}, kernel-libipsec; tests/lab/capture_vectors.py",
        "captured": dt.date.today().isoformat(),
        "ike_proposal": proposal,
        "esp_proposal": ESP_PROPOSAL,
        "selected_ike": _selected(log, "IKE"),
        "selected_esp": _selected(log, "ESP"),
        "psk": PSK,
        "initiator": {"address": run["initiator"], "id_type": "ID_IPV4_ADDR"},
        "responder": {"address": run["responder"], "id_type": "ID_IPV4_ADDR"},
        "spi_i": hdr.spi_i.hex(),
        "spi_r": hdr.spi_r.hex(),
        "ni": ni.hex(),
        "nr": nr.hex(),
        "ke_i": {"group": int.from_bytes(ke_i[:2], "big"), "data": ke_i[4:].hex()},
        "ke_r": {"group": int.from_bytes(ke_r[:2], "big"), "data": ke_r[4:].hex()},
        "g_ir": key("shared Diffie Hellman secret"),
        "skeyseed": key("SKEYSEED"),
        "sk_d": key("Sk_d secret"),
        "sk_ai": key("Sk_ai secret"),
        "sk_ar": key("Sk_ar secret"),
        "sk_ei": key("Sk_ei secret"),
        "sk_er": key("Sk_er secret"),
        "sk_pi": key("Sk_pi secret"),
        "sk_pr": key("Sk_pr secret"),
        "auth_octets_i": octets[0].hex(),
        "auth_i": auths[0].hex(),
        "auth_octets_r": octets[1].hex(),
        "auth_r": auths[1].hex(),
        "child_sa": {
            "name": CHILD,
            "proposal": _selected(log, "ESP"),
            "spi_i": child.spi_in if child else None,
            "spi_r": child.spi_out if child else None,
            "ts_i": [run["lan_i"]],
            "ts_r": [run["lan_r"]],
            **_child_keys(ds),
        },
    }


def _prf_plus(h: str, key: bytes, seed: bytes, n: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.digest(key, t + seed + bytes([i]), h)
        out, i = out + t, i + 1
    return out[:n]


def verify(k: dict[str, Any], exchange: list[dict[str, Any]]) -> None:
    """RFC 7296 2.14/2.15/2.17 recomputed from the captured values; raises on mismatch."""
    prf = next(t for t in k["selected_ike"].split("/") if t.startswith("PRF_"))
    h = PRF_HASH[prf]
    hex_fields = ["ni", "nr", "spi_i", "spi_r", "g_ir", "skeyseed", "sk_d", "sk_ai", "sk_ar"]
    hex_fields += ["sk_ei", "sk_er", "sk_pi", "sk_pr", "auth_octets_i", "auth_i"]
    hex_fields += ["auth_octets_r", "auth_r"]
    x = {n: bytes.fromhex(k[n]) for n in hex_fields if k[n] is not None}
    ni_nr = x["ni"] + x["nr"]
    skeyseed = hmac.digest(ni_nr, x["g_ir"], h)
    assert skeyseed == x["skeyseed"], "SKEYSEED != prf(Ni | Nr, g^ir)"
    names = ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"]
    lens = [len(x[n]) if n in x else 0 for n in names]
    stream = _prf_plus(h, skeyseed, ni_nr + x["spi_i"] + x["spi_r"], sum(lens))
    off = 0
    for n, ln in zip(names, lens, strict=True):
        assert ln == 0 or stream[off : off + ln] == x[n], f"{n} != its prf+ slice"
        off += ln
    pad = hmac.digest(k["psk"].encode(), b"Key Pad for IKEv2", h)
    init_req, init_resp = ike_messages(exchange)[:2]
    sides = (
        ("i", init_req, x["nr"], x["sk_pi"], k["initiator"]["address"]),
        ("r", init_resp, x["ni"], x["sk_pr"], k["responder"]["address"]),
    )
    for me, msg, nonce, sk_p, addr in sides:
        ident = bytes([1, 0, 0, 0]) + ipaddress.ip_address(addr).packed  # ID_IPV4_ADDR
        octets = msg + nonce + hmac.digest(sk_p, ident, h)
        assert octets == x[f"auth_octets_{me}"], f"AUTH octets ({me}) differ"
        assert hmac.digest(pad, octets, h) == x[f"auth_{me}"], f"AUTH_{me} mismatch"
    c = k["child_sa"]
    assert bytes.fromhex(c["keymat_seed"]) == ni_nr, "Child SA seed is not Ni | Nr"
    ei, er = bytes.fromhex(c["encr_key_i2r"]), bytes.fromhex(c["encr_key_r2i"])
    assert _prf_plus(h, x["sk_d"], ni_nr, len(ei) + len(er)) == ei + er, "KEYMAT mismatch"
    esp = [e for e in exchange if e["kind"] == "esp"]
    assert {e["spi"] for e in esp if e["dir"] == "i->r"} == {c["spi_r"]}, "ESP i->r SPI"
    assert {e["spi"] for e in esp if e["dir"] == "r->i"} == {c["spi_i"]}, "ESP r->i SPI"


def _open_sk(msg: bytes, sk_e: bytes, sk_a: bytes | None) -> bytes:
    """Decrypt the SK payload of an IKE message whose SK payload is the first one."""
    if sk_a is None:  # AES-GCM-16: key | 4-byte salt; AAD = header + SK payload header
        return AESGCM(sk_e[:-4]).decrypt(sk_e[-4:] + msg[32:40], msg[40:], msg[:32])
    if not hmac.compare_digest(hmac.digest(sk_a, msg[:-16], "sha256")[:16], msg[-16:]):
        raise AssertionError("SK payload ICV mismatch")
    dec = Cipher(algorithms.AES(sk_e), modes.CBC(msg[32:48])).decryptor()
    return dec.update(msg[48:-16]) + dec.finalize()


def check_decrypt(k: dict[str, Any], exchange: list[dict[str, Any]]) -> None:
    """Every SK payload and ESP packet opens with the logged keys (authenticated)."""
    c = k["child_sa"]
    for e in exchange:
        raw, i2r = bytes.fromhex(e["hex"]), e["dir"] == "i->r"
        if e["kind"] == "ike" and e["exchange"] != "IKE_SA_INIT":
            sk_a = k["sk_ai" if i2r else "sk_ar"]
            _open_sk(
                raw[4:] if e["non_esp_marker"] else raw,
                bytes.fromhex(k["sk_ei" if i2r else "sk_er"]),
                bytes.fromhex(sk_a) if sk_a else None,
            )
        elif e["kind"] == "esp":  # RFC 4106: nonce = salt | IV, AAD = SPI | seq
            key = bytes.fromhex(c["encr_key_i2r" if i2r else "encr_key_r2i"])
            AESGCM(key[:-4]).decrypt(key[-4:] + raw[8:16], raw[16:], raw[:8])


def excerpt(log: str, start_marker: str) -> str:
    """The log from ``start_marker`` on, without kernel/job/library chatter."""
    lines = log.splitlines()
    start = next((i for i, ln in enumerate(lines) if start_marker in ln), 0)
    keep = []
    for ln in lines[start:]:
        m = re.search(r" \d+\[([A-Z]{3})\] ", ln)
        if m and m[1] in _KEEP_SUBSYSTEMS and not _NOISE.search(ln):
            keep.append(ln)
    return "\n".join(keep) + "\n"


def capture_case(proposal: str, out_root: Path, keep: bool = False) -> Path:
    work = Path(tempfile.mkdtemp(prefix="gwd-vectors-"))
    try:
        run = run_exchange(proposal, work)
        exchange = [describe(d, n, run["initiator"]) for n, d in enumerate(run["datagrams"], 1)]
        add_payload_lists(exchange, run["log_i"])
        keys = build_keys(run, proposal, exchange)
        verify(keys, exchange)
        check_decrypt(keys, exchange)
        out = out_root / f"strongswan-{proposal}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "exchange.json").write_text(json.dumps(exchange, indent=1) + "\n")
        (out / "keys.json").write_text(json.dumps(keys, indent=1) + "\n")
        (out / "capture.pcap").write_bytes(run["pcap"])
        (out / "charon-initiator.log").write_text(excerpt(run["log_i"], "vici initiate"))
        (out / "charon-responder.log").write_text(excerpt(run["log_r"], "received packet"))
        return out
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--case", action="append", choices=CASES, help="default: all")
    ap.add_argument("--keep-workdir", action="store_true", help="keep full logs for debugging")
    args = ap.parse_args(argv)
    if problem := root_problem() or strongswan_problem():
        print(f"cannot run the lab: {problem}", file=sys.stderr)
        return 2
    for case in args.case or CASES:
        out = capture_case(case, args.out, args.keep_workdir)
        n = len(json.loads((out / "exchange.json").read_text()))
        print(f"{case}: {n} datagrams, keys verified -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
