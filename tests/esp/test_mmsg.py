"""esp.mmsg: recvmmsg/sendmmsg through ctypes, on loopback UDP sockets (no root needed).

The data path uses them on its raw ESP socket; tests/esp/test_datapath.py covers that
(its "offload" rigs), these pin the batching itself: order, lengths, addresses, limits.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from esp import mmsg
from esp.mmsg import SLOT_SIZE, MmsgReceiver, MmsgSender

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="libc without recvmmsg")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx2.bind(("127.0.0.1", 0))
    rx2.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield rx, rx2, tx
    for s in (rx, rx2, tx):
        s.close()


def test_a_batch_arrives_whole_and_in_order(pair: tuple[socket.socket, ...]) -> None:
    rx, _, tx = pair
    packets = [bytes([i]) * (1 + i * 37) for i in range(40)]
    assert MmsgSender(tx).send(packets, rx.getsockname()) == 40
    got = MmsgReceiver(rx).receive()
    assert [bytes(v) for v in got if v is not None] == packets


def test_more_than_the_slots_takes_several_calls(pair: tuple[socket.socket, ...]) -> None:
    rx, _, tx = pair
    sender, receiver = MmsgSender(tx, slots=8), MmsgReceiver(rx, slots=8)
    packets = [i.to_bytes(2, "big") for i in range(20)]
    sent = 0
    while sent < len(packets):
        sent += sender.send(packets[sent:], rx.getsockname())
    got: list[bytes] = []
    while batch := receiver.receive():
        assert len(batch) <= 8
        got += [bytes(v) for v in batch if v is not None]
    assert got == packets
    assert receiver.receive() == []  # nothing waiting: empty, not an error


def test_the_address_can_change_between_batches(pair: tuple[socket.socket, ...]) -> None:
    rx, rx2, tx = pair
    sender = MmsgSender(tx)
    assert sender.send([b"one", b"two"], rx.getsockname()) == 2
    assert sender.send([b"three"], rx2.getsockname()) == 1
    assert [bytes(v) for v in MmsgReceiver(rx).receive() if v] == [b"one", b"two"]
    assert [bytes(v) for v in MmsgReceiver(rx2).receive() if v] == [b"three"]


def test_a_datagram_longer_than_a_slot_is_reported_not_cut(
    pair: tuple[socket.socket, ...],
) -> None:
    rx, _, tx = pair
    tx.sendto(b"x" * (SLOT_SIZE + 1), rx.getsockname())
    tx.sendto(b"fine", rx.getsockname())
    got = MmsgReceiver(rx).receive()
    assert got[0] is None and bytes(got[1]) == b"fine"  # type: ignore[arg-type]


def test_bytearrays_and_memoryviews_are_sent_too(pair: tuple[socket.socket, ...]) -> None:
    rx, _, tx = pair
    packets = [bytearray(b"array"), memoryview(b"view-of-bytes")[8:], b"plain"]
    assert MmsgSender(tx).send(packets, rx.getsockname()) == 3  # type: ignore[arg-type]
    got = [bytes(v) for v in MmsgReceiver(rx).receive() if v]
    assert got == [b"array", b"bytes", b"plain"]


def test_ipv6_batches() -> None:
    rx6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx6.bind(("::1", 0))
        rx6.setblocking(False)
        assert MmsgSender(tx6).send([b"v6-a", b"v6-b"], rx6.getsockname()[:2]) == 2
        assert [bytes(v) for v in MmsgReceiver(rx6).receive() if v] == [b"v6-a", b"v6-b"]
    finally:
        rx6.close()
        tx6.close()


def test_packets_in_two_pieces(pair: tuple[socket.socket, ...]) -> None:
    """parts=2: each datagram is two consecutive buffers (esp.sa seal_run's pairs); whole
    packets sent after that still go out whole (the second iovec is emptied)."""
    rx, _, tx = pair
    sender, receiver = MmsgSender(tx, slots=8), MmsgReceiver(rx)
    pieces = [p for i in range(10) for p in (bytes([i]) * 16, bytes([100 + i]) * (i + 1))]
    assert sender.send(pieces, rx.getsockname(), parts=2) == 8  # the slots bound it
    assert sender.send(pieces[16:], rx.getsockname(), parts=2) == 2
    assert sender.send([b"whole"], rx.getsockname()) == 1
    got = [bytes(v) for v in receiver.receive() if v is not None]
    want = [pieces[i] + pieces[i + 1] for i in range(0, 20, 2)]
    assert got == [*want, b"whole"]
    with pytest.raises(ValueError):
        sender.send(pieces, rx.getsockname(), parts=3)
