"""recvmmsg(2) and sendmmsg(2) through ctypes: many datagrams per system call.

Python's socket module has neither. For plain ESP (a raw IP socket, where UDP GSO/GRO do
not exist) they are the batching that is left: one call receives or sends up to
``slots`` packets. ``available()`` says whether libc has them; callers fall back to
recvfrom/sendto otherwise.

Receive buffers are reused: the memoryviews that ``MmsgReceiver.receive`` returns are
valid until its next call, so a caller must finish with (or copy) each packet first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

__all__ = ["MmsgReceiver", "MmsgSender", "available"]

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SLOT_SIZE = 16384  # an ESP packet of the largest MTU (9000) with its IP header, and more


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_AT = _MMsgHdr.msg_len.offset
_FLAGS_AT = _MsgHdr.msg_flags.offset  # msg_hdr is the first member of mmsghdr
_U32 = struct.Struct("=I")


def _libc() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.recvmmsg.restype = ctypes.c_int
        lib.sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class MmsgReceiver:
    """Receives up to ``slots`` datagrams per call on one socket (addresses not kept)."""

    def __init__(self, sock: socket.socket, slots: int = 64) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        self._fd = sock.fileno()
        self._slots = slots
        self._buf = (ctypes.c_char * (SLOT_SIZE * slots))()
        self._view = memoryview(self._buf).cast("B")
        self._iov = (_IoVec * slots)()
        self._msgs = (_MMsgHdr * slots)()
        base = ctypes.addressof(self._buf)
        for i in range(slots):
            self._iov[i].iov_base = base + i * SLOT_SIZE
            self._iov[i].iov_len = SLOT_SIZE
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
        self._hdrs = memoryview(self._msgs).cast("B")
        self._call = _LIBC.recvmmsg

    def receive(self) -> list[memoryview | None]:
        """The datagrams waiting now (maybe none); OSError on a socket error. None stands
        for a datagram longer than SLOT_SIZE (cut by the kernel: unusable)."""
        n = self._call(self._fd, self._msgs, self._slots, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        view, hdrs, unpack = self._view, self._hdrs, _U32.unpack_from
        out: list[memoryview | None] = []
        for i in range(n):
            at = i * _MMSG_SIZE
            if unpack(hdrs, at + _FLAGS_AT)[0] & MSG_TRUNC:
                out.append(None)
                continue
            start = i * SLOT_SIZE
            out.append(view[start : start + unpack(hdrs, at + _LEN_AT)[0]])
        return out


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts, from its id() (CPython's layout), checked."""
    offset = bytes.__basicsize__ - 1  # PyBytesObject: header, then ob_sval
    probe = b"gatewayd-sendmmsg-probe"
    if ctypes.string_at(id(probe) + offset, len(probe)) != probe:
        return None
    return offset


_DATA_AT = _bytes_data_offset()
_IOVEC = struct.Struct("=QQ")  # iov_base, iov_len on a 64-bit host


class MmsgSender:
    """Sends many datagrams to one address per call (a raw ESP socket: port 0).

    The iovecs point straight into the bytes objects (CPython keeps a bytes object's data
    at a fixed offset from its id(), checked once at import), so a batch costs one
    struct.pack_into per packet and one system call."""

    def __init__(self, sock: socket.socket, slots: int = 64) -> None:
        if _LIBC is None or _DATA_AT is None or ctypes.sizeof(ctypes.c_void_p) != 8:
            raise OSError(errno.ENOSYS, "sendmmsg is not available")
        self._fd = sock.fileno()
        self._family = sock.family
        self._slots = slots
        # Two iovecs per message: a packet given in two pieces (esp.sa seal_run) needs no
        # join; a whole packet leaves the second one empty.
        self._iov = (_IoVec * (2 * slots))()
        self._iov_view = memoryview(self._iov).cast("B")
        self._msgs = (_MMsgHdr * slots)()
        self._name = ctypes.create_string_buffer(28)  # sockaddr_in6 is the larger
        self._name_len = 0
        self._addr: Any = None
        for i in range(slots):
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._iov[2 * i])
            hdr.msg_iovlen = 2
            hdr.msg_name = ctypes.addressof(self._name)
        self._call = _LIBC.sendmmsg
        self._data_at: int = _DATA_AT

    def _set_address(self, addr: Any) -> None:
        if self._family == socket.AF_INET:
            raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", addr[1])
            raw += socket.inet_pton(socket.AF_INET, addr[0]) + bytes(8)
        else:
            raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", addr[1], 0)
            raw += socket.inet_pton(socket.AF_INET6, addr[0]) + struct.pack("=I", 0)
        ctypes.memmove(self._name, raw, len(raw))
        self._name_len = len(raw)
        for i in range(self._slots):
            self._msgs[i].msg_hdr.msg_namelen = len(raw)
        self._addr = addr

    def send(self, packets: Sequence[bytes], addr: Any, parts: int = 1) -> int:
        """Send packets (at most ``slots``) to addr; returns how many the kernel took.
        With parts=2 each packet is two consecutive buffers of ``packets``. OSError if
        not even the first could be sent."""
        if parts not in (1, 2):
            raise ValueError("a packet is one or two buffers")
        if addr != self._addr:
            self._set_address(addr)
        count = min(len(packets) // parts, self._slots)
        view, pack, at = self._iov_view, _IOVEC.pack_into, self._data_at
        held = []  # copies of anything not bytes, alive until the call returns
        for i in range(count * parts):
            p = packets[i]
            if type(p) is not bytes:  # only a bytes object's data sits at id() + at
                p = bytes(p)
                held.append(p)
            # packets keeps p alive during the call
            slot = i if parts == 2 else 2 * i
            pack(view, slot * 16, id(p) + at, len(p))
            if parts == 1:
                pack(view, slot * 16 + 16, 0, 0)
        sent = self._call(self._fd, self._msgs, count, MSG_DONTWAIT, None)
        del held
        if sent < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(sent)
