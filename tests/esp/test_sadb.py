"""SA table: lookups, make-before-break rekey, counters, concurrent readers."""

from __future__ import annotations

import threading

import pytest

from esp.sa import DropReason, EspDrop, InboundSa, OutboundSa
from esp.sadb import SaDatabase
from tests.esp.packets import make_params, v4_udp


def sa_pair(spi: int, soft_packets: int | None = None) -> tuple[OutboundSa, InboundSa]:
    params = make_params("aes128gcm16", spi=spi, soft_packets=soft_packets)
    return OutboundSa(params), InboundSa(params)


def test_install_lookup_remove() -> None:
    db = SaDatabase()
    out, inb = sa_pair(0x1001)
    db.install_inbound(inb)
    assert db.install_outbound("child-1", out) is None
    assert db.inbound(0x1001) is inb
    assert db.outbound("child-1") is out
    assert db.inbound(0x9999) is None and db.outbound("nope") is None
    assert db.inbound_spis() == [0x1001] and db.outbound_keys() == ["child-1"]
    assert db.remove_inbound(0x1001) is inb
    assert db.remove_inbound(0x1001) is None
    assert db.remove_outbound("child-1") is out
    assert db.remove_outbound("child-1") is None
    assert db.inbound(0x1001) is None and db.outbound("child-1") is None


def test_duplicate_inbound_spi_refused() -> None:
    db = SaDatabase()
    db.install_inbound(sa_pair(0x1001)[1])
    with pytest.raises(ValueError, match="already"):
        db.install_inbound(sa_pair(0x1001)[1])


def test_open_dispatches_by_spi() -> None:
    db = SaDatabase()
    out_a, in_a = sa_pair(0x1001)
    out_b, in_b = sa_pair(0x1002)
    db.install_inbound(in_a)
    db.install_inbound(in_b)
    inner = v4_udp()
    sa, nh, got = db.open(out_b.seal(inner, 4))
    assert (sa, nh, got) == (in_b, 4, inner)
    assert db.open(memoryview(out_a.seal(inner, 4)))[0] is in_a


def test_unknown_spi_and_runt_packets_counted() -> None:
    db = SaDatabase()
    out, _ = sa_pair(0x1001)
    for packet, reason in [(out.seal(v4_udp(), 4), DropReason.UNKNOWN_SPI), (b"\x00\x01", None)]:
        with pytest.raises(EspDrop) as info:
            db.open(packet)
        assert info.value.reason is (reason or DropReason.MALFORMED)
    assert (db.unknown_spi, db.malformed) == (1, 1)
    totals = db.counters()
    assert totals.drops[DropReason.UNKNOWN_SPI] == 1
    assert totals.drops[DropReason.MALFORMED] == 1


def test_make_before_break_rekey() -> None:
    db = SaDatabase()
    old_out, old_in = sa_pair(0x1001)
    db.install_inbound(old_in)
    db.install_outbound("child", old_out)
    inner = v4_udp()
    in_flight = old_out.seal(inner, 4)  # sealed before the switch, arrives after

    new_out, new_in = sa_pair(0x2002)
    db.install_inbound(new_in)  # 1: both inbound SAs accepted
    assert db.open(new_out.seal(inner, 4))[0] is new_in
    assert db.open(old_out.seal(inner, 4))[0] is old_in
    assert db.install_outbound("child", new_out) is old_out  # 2: switch sending
    current = db.outbound("child")
    assert current is new_out
    assert db.open(current.seal(inner, 4))[0] is new_in
    assert db.open(in_flight)[0] is old_in  # late old packets still decrypt
    assert db.remove_inbound(0x1001) is old_in  # 3: retire the old SA
    with pytest.raises(EspDrop) as info:
        db.open(old_out.seal(inner, 4))
    assert info.value.reason is DropReason.UNKNOWN_SPI


def test_counters_include_retired_sas() -> None:
    db = SaDatabase()
    out1, in1 = sa_pair(0x1001)
    db.install_inbound(in1)
    db.install_outbound("c", out1)
    packets = [out1.seal(v4_udp(size=100), 4) for _ in range(3)]
    for p in packets:
        db.open(p)
    with pytest.raises(EspDrop):
        db.open(packets[0])  # replay
    out2, in2 = sa_pair(0x1002)
    db.install_inbound(in2)
    db.install_outbound("c", out2)  # out1 retired
    db.open(out2.seal(v4_udp(size=50), 4))
    db.remove_inbound(0x1001)  # in1 retired
    t = db.counters()
    assert (t.out_packets, t.out_bytes) == (4, 350)
    assert (t.in_packets, t.in_bytes) == (4, 350)
    assert t.drops[DropReason.REPLAY] == 1
    # Retired totals are not counted twice.
    assert db.counters() == t


def test_needing_rekey() -> None:
    db = SaDatabase()
    soon_out, soon_in = sa_pair(0x1001, soft_packets=1)
    later_out, later_in = sa_pair(0x1002)
    for key, (out, inb) in {"soon": (soon_out, soon_in), "later": (later_out, later_in)}.items():
        db.install_inbound(inb)
        db.install_outbound(key, out)
        inb.open(out.seal(v4_udp(), 4))
    assert db.needing_rekey() == (["soon"], [0x1001])


def test_readers_see_whole_tables_while_the_control_plane_writes() -> None:
    db = SaDatabase()
    out, inb = sa_pair(0x1001)
    db.install_inbound(inb)
    db.install_outbound("stable", out)
    packets = [out.seal(v4_udp(size=60), 4) for _ in range(3000)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for p in packets:
                sa, nh, _ = db.open(p)
                assert sa is inb and nh == 4
                assert db.outbound("stable") is out
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=reader)
    thread.start()
    spi = 0x5000
    while not stop.is_set():  # churn other SAs, and iterate snapshots meanwhile
        churn_out, churn_in = sa_pair(spi)
        db.install_inbound(churn_in)
        db.install_outbound(spi, churn_out)
        db.counters()
        db.remove_inbound(spi)
        db.remove_outbound(spi)
        spi += 1
    thread.join()
    assert not errors
    assert inb.packets == 3000
    assert db.counters().in_packets == 3000
    assert db.inbound_spis() == [0x1001]
