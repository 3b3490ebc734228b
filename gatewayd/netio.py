"""The gateway's network endpoints: UDP for IKE (500) and IKE + ESP-in-UDP (4500), and a
raw socket for plain ESP (IP protocol 50).

Every socket carries the bypass fwmark, so the gateway's own IKE and ESP packets never
enter the tunnel routes, even when a site's networks cover the peer's address.

Why not asyncio-dgram for port 500: its receive queue is unbounded, and a flood of
datagrams is exactly what a peer must not be able to make us store. The daemon reads the
socket with loop.add_reader and a bounded drain instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass

from gatewayd.kernel import DEFAULT_FWMARK, mark_socket

IPPROTO_ESP = 50
IP_MTU_DISCOVER = 10  # <linux/in.h>; Python's socket module lacks the name
IP_PMTUDISC_DONT = 0  # let the kernel fragment ESP packets bigger than the path MTU
SOCKET_BUFFER = 4 << 20


class EndpointError(OSError):
    """A socket could not be opened; the message names the address and port."""


@dataclass
class Endpoints:
    ike: socket.socket  # UDP ike_port
    nat_t: socket.socket  # UDP nat_t_port: IKE with the non-ESP marker, and ESP
    esp: socket.socket  # raw IP protocol 50: plain ESP

    def close(self) -> None:
        for sock in (self.ike, self.nat_t, self.esp):
            sock.close()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _tune(sock: socket.socket, fwmark: int) -> None:
    mark_socket(sock, fwmark)
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    sock.setblocking(False)


def _udp(address: str, port: int, fwmark: int) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: UDP has no TIME_WAIT to skip, and with it a second gatewayd
        # would share our ports instead of failing with "Address already in use".
        _tune(sock, fwmark)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        why = f"cannot open UDP {address} port {port}: {exc.strerror}"
        raise EndpointError(exc.errno, why) from None
    return sock


def _raw_esp(address: str, fwmark: int) -> socket.socket:
    family = _family(address)
    sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
    try:
        _tune(sock, fwmark)
        sock.bind((address, 0))
    except OSError as exc:
        sock.close()
        why = f"cannot open raw ESP socket on {address}: {exc.strerror}"
        raise EndpointError(exc.errno, why) from None
    return sock


def open_endpoints(
    address: str, ike_port: int, nat_t_port: int, fwmark: int = DEFAULT_FWMARK
) -> Endpoints:
    """Bind the three sockets on the gateway's address (EndpointError says which failed)."""
    ike = _udp(address, ike_port, fwmark)
    try:
        nat_t = _udp(address, nat_t_port, fwmark)
    except OSError:
        ike.close()
        raise
    try:
        esp = _raw_esp(address, fwmark)
    except OSError:
        ike.close()
        nat_t.close()
        raise
    return Endpoints(ike, nat_t, esp)
