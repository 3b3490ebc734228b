"""IKEv2 message fragmentation (RFC 7383): split into SKF messages and reassemble them.

Keep one Reassembler per direction of an IKE SA (incoming requests, incoming responses):
their message IDs are independent sequences.
"""

from __future__ import annotations

import struct

from ike.codec import (
    Header,
    decode,
    decode_payloads,
    encode_payloads,
    encode_protected,
    sealed_parts,
)
from ike.constants import IKE_HEADER_LEN, IKE_VERSION, HeaderFlag, PayloadType
from ike.crypto.base import SkCrypto
from ike.errors import DecodeError
from ike.payloads import Message, SkfPayload

MAX_FRAGMENTS = 32  # per message; more is refused before any decryption
MAX_REASSEMBLY_BYTES = 64 * 1024  # decrypted content held for one message
MAX_SEND_FRAGMENTS = 0xFFFF  # the Total Fragments field is 16 bits

_SKF_HEAD = struct.Struct("!BBHHH")  # generic header, fragment number, total fragments
_SKF_OVERHEAD = IKE_HEADER_LEN + _SKF_HEAD.size


def _largest_chunk(crypto: SkCrypto, max_datagram: int) -> int:
    """Most plaintext octets one SKF message of at most max_datagram octets can carry."""
    room = max_datagram - _SKF_OVERHEAD
    lo, hi = 0, room  # sealed_len(n) > n, so no chunk is larger than room
    while lo < hi:  # sealed_len is non-decreasing: binary search the last n that fits
        mid = (lo + hi + 1) // 2
        if crypto.sealed_len(mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fragment(msg: Message, crypto: SkCrypto, max_datagram: int) -> list[bytes]:
    """Datagrams of at most max_datagram octets (IKE message only: no IP/UDP/non-ESP marker).

    One SK message if it fits; otherwise SKF fragments of the inner payload octets, each
    sealed on its own, all with msg's header fields.
    """
    single = encode_protected(msg, crypto)
    if len(single) <= max_datagram:
        return [single]
    first_inner, inner = encode_payloads(msg.payloads)
    chunk = _largest_chunk(crypto, max_datagram)
    if chunk < 1:
        raise ValueError(f"max_datagram {max_datagram} leaves no room for fragment content")
    total = -(-len(inner) // chunk)
    if total > MAX_SEND_FRAGMENTS:
        raise ValueError(f"{total} fragments needed")
    out: list[bytes] = []
    for number in range(1, total + 1):
        plain = inner[(number - 1) * chunk : number * chunk]
        sealed_len = crypto.sealed_len(len(plain))
        header = Header(
            msg.spi_i,
            msg.spi_r,
            PayloadType.SKF,
            IKE_VERSION,
            msg.exchange,
            msg.flags,
            msg.message_id,
            _SKF_OVERHEAD + sealed_len,
        ).encode()
        # RFC 7383 §2.5: only fragment 1 names the first inner payload.
        nxt = first_inner if number == 1 else PayloadType.NONE
        aad = header + _SKF_HEAD.pack(nxt, 0, _SKF_HEAD.size + sealed_len, number, total)
        sealed = crypto.seal(aad, plain)
        if len(sealed) != sealed_len:
            raise RuntimeError("SkCrypto.seal() disagrees with its sealed_len()")
        out.append(aad + sealed)
    return out


class Reassembler:
    """Collects the SKF fragments of one message at a time (RFC 7383 §2.6).

    Every fragment is verified before it can change any state, so a forged fragment
    never disturbs a collection. Memory is bounded by max_fragments and max_bytes.
    """

    def __init__(
        self, max_fragments: int = MAX_FRAGMENTS, max_bytes: int = MAX_REASSEMBLY_BYTES
    ) -> None:
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.reset()

    def reset(self) -> None:
        self._header: Header | None = None  # of the first stored fragment
        self._total = 0
        self._first_inner = PayloadType.NONE.value
        self._parts: dict[int, bytes] = {}
        self._size = 0

    @property
    def in_progress(self) -> tuple[int, int, int] | None:
        """(message ID, total fragments, fragments held) of the collection, if any."""
        if self._header is None:
            return None
        return self._header.message_id, self._total, len(self._parts)

    def add(self, data: bytes, crypto: SkCrypto) -> Message | None:
        """Take one SKF datagram; the whole message once its last fragment arrives.

        Returns None for fragments that are stale, duplicate or not the last missing one.
        Raises DecodeError for malformed or oversized fragments and CryptoError (from
        crypto.open) for ones that fail verification; neither changes the collection.
        """
        msg = decode(data)
        skf = msg.payloads[-1] if len(msg.payloads) == 1 else None
        if not isinstance(skf, SkfPayload):
            raise DecodeError("not a message with exactly one SKF payload")
        total, number = skf.total_fragments, skf.fragment_number
        if total > self.max_fragments:
            raise DecodeError(f"{total} fragments exceed the limit of {self.max_fragments}")
        if self._is_stale(msg.message_id, total, number):
            return None
        if len(skf.data) < crypto.iv_len + crypto.icv_len:
            raise DecodeError("SKF payload shorter than IV and ICV")
        aad, body = sealed_parts(bytes(data), skf)
        plain = crypto.open(aad, body)  # verified: from here on the peer really sent it

        hdr = self._header
        if hdr is None or msg.message_id > hdr.message_id or total > self._total:
            # RFC 7383 §2.6.1: a newer message, or the same one re-fragmented into more
            # pieces (after a PMTU change), replaces what we have.
            self.reset()
            hdr = self._header = Header(
                msg.spi_i,
                msg.spi_r,
                PayloadType.SKF,
                IKE_VERSION,
                msg.exchange,
                int(msg.flags),
                msg.message_id,
                0,
            )
            self._total = total
        elif (hdr.spi_i, hdr.spi_r, hdr.exchange, hdr.flags) != (
            msg.spi_i,
            msg.spi_r,
            msg.exchange,
            int(msg.flags),
        ):
            raise DecodeError("fragment header differs from the rest of its message")
        if self._size + len(plain) > self.max_bytes:
            self.reset()  # this message can never complete within our budget
            raise DecodeError(f"reassembled message exceeds {self.max_bytes} octets")
        self._parts[number] = plain
        self._size += len(plain)
        if number == 1:
            self._first_inner = skf.first_inner
        if len(self._parts) < self._total:
            return None
        return self._complete(hdr)

    def _is_stale(self, message_id: int, total: int, number: int) -> bool:
        """Old message, fewer fragments than the collection, or a fragment we already hold."""
        hdr = self._header
        if hdr is None or message_id > hdr.message_id:
            return False
        if message_id < hdr.message_id or total < self._total:
            return True
        return total == self._total and number in self._parts

    def _complete(self, hdr: Header) -> Message:
        content = b"".join(self._parts[n] for n in range(1, self._total + 1))
        first_inner = self._first_inner
        self.reset()
        payloads = decode_payloads(first_inner, content)
        return Message(
            hdr.spi_i, hdr.spi_r, hdr.exchange, HeaderFlag(hdr.flags), hdr.message_id, payloads
        )
