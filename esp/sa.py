"""ESP security associations in tunnel mode (RFC 4303): per-packet seal and open.

Wire format: SPI | SeqNo | IV | ciphertext(payload | padding 1,2,3.. | pad len | next hdr) | ICV

AEAD (AES-GCM-16, RFC 4106; ChaCha20-Poly1305, RFC 7634): nonce = salt | IV, the IV is
the 64-bit sequence number (unique per key, as RFC 4106 §3.1 recommends), AAD is SPI | seq
or, with ESN, SPI | seq high | seq low (RFC 4106 §5, RFC 7634 §2.1).

AES-CBC with HMAC: the ICV covers SPI | seq | IV | ciphertext, and with ESN also the high
sequence half, which is not sent (RFC 4303 §2.2.1, §3.3.2.1). Building a CBC cipher object
costs ~11 µs, so each SA keeps one CBC context alive and never finalises it:
 - seal feeds R | plaintext with R = the sequence number; the first output block
   E(R xor previous block) is unpredictable without the key (and repeats no more often
   than random IVs would); it is the IV of what follows (NIST SP 800-38A appendix C:
   an IV made by applying the cipher to a nonce);
 - open feeds IV | ciphertext and drops the first output block: in CBC each block is
   chained to the one fed before it, so the IV sets the chain for this packet.

Per-packet functions allocate little, take no lock, log nothing and raise only on a
drop. One SA direction is driven by one thread; counters are plain ints read by others.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from esp.replay import MAX_SEQ, ReplayWindow
from esp.selectors import SelectorSet
from esp.tso import Segments
from ike.constants import EncrId, IntegId

NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59  # dummy packet (RFC 4303 §2.6): authenticated, counted, never delivered

ESP_HEADER_LEN = 8
SALT_LEN = 4
MAX_SEQ_32 = 0xFFFFFFFF
SOFT_FRACTION = 0.9  # needs_rekey once this share of the sequence space is used

_LOW = 0xFFFFFFFF
_HDR = struct.Struct("!II")  # SPI, seq low
_HDR_IV = struct.Struct("!IIQ")  # SPI, seq low, AEAD IV (the whole sequence number)
_NONCE = struct.Struct("!4sQ")  # AEAD nonce: salt, IV
_AAD_ESN = struct.Struct("!III")  # SPI, seq high, seq low
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_CBC_NONCE = struct.Struct("!QQ")

# Padding 1, 2, 3, ... (RFC 4303 §2.4); _TRAILERS[padlen << 8 | next header].
_PADS = tuple(bytes(range(1, n + 1)) for n in range(256))
_TRAILERS = tuple(_PADS[p] + bytes((p, nh)) for p in range(16) for nh in range(256))


class DropReason(StrEnum):
    REPLAY = "replay"
    BAD_ICV = "bad_icv"
    SELECTOR = "selector"
    UNKNOWN_SPI = "unknown_spi"
    MALFORMED = "malformed"  # too short, misaligned, or a bad inner packet / next header
    PADDING = "padding"
    DUMMY = "dummy"  # next header 59: a valid TFC dummy packet, not an error


class EspDrop(Exception):
    """The packet was dropped; ``reason`` says why (already counted on the SA)."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class SequenceExhausted(Exception):
    """The outbound sequence space is used up: the SA must be rekeyed, never wrapped."""


@dataclass(frozen=True, slots=True)
class _Encr:
    key_lens: tuple[int, ...]  # cipher key bytes, salt excluded
    salt_len: int
    iv_len: int
    tag_len: int  # AEAD tag; 0 for a cipher paired with an HMAC
    align: int  # the ciphertext is padded to a multiple of this


_ENCR = {
    EncrId.AES_GCM_16: _Encr((16, 24, 32), SALT_LEN, 8, 16, 4),
    EncrId.CHACHA20_POLY1305: _Encr((32,), SALT_LEN, 8, 16, 4),
    EncrId.AES_CBC: _Encr((16, 24, 32), 0, 16, 0, 16),
}

# key length, ICV length, hash (RFC 2404, RFC 4868)
_INTEG: dict[IntegId, tuple[int, int, type[hashes.HashAlgorithm]]] = {
    IntegId.HMAC_SHA1_96: (20, 12, hashes.SHA1),
    IntegId.HMAC_SHA2_256_128: (32, 16, hashes.SHA256),
    IntegId.HMAC_SHA2_384_192: (48, 24, hashes.SHA384),
    IntegId.HMAC_SHA2_512_256: (64, 32, hashes.SHA512),
}


@dataclass(frozen=True, eq=False)
class EspParams:
    """What the control plane hands the data path for one SA direction.

    For AEAD, encr_key is key | 4-byte salt, as RFC 4106 §8.1 / RFC 7634 §2 lay out keying
    material. soft_bytes / soft_packets make needs_rekey turn true early.
    """

    spi: int
    encr_id: EncrId
    encr_key: bytes
    integ_id: IntegId = IntegId.NONE
    integ_key: bytes = b""
    esn: bool = False
    soft_bytes: int | None = None
    soft_packets: int | None = None

    def __post_init__(self) -> None:
        if not 256 <= self.spi <= 0xFFFFFFFF:  # RFC 4303 §2.1: 0..255 are reserved
            raise ValueError(f"SPI {self.spi:#x} is reserved or out of range")
        try:
            encr_id, integ_id = EncrId(self.encr_id), IntegId(self.integ_id)
        except ValueError as exc:
            raise ValueError(f"unknown algorithm id: {exc}") from None
        object.__setattr__(self, "encr_id", encr_id)
        object.__setattr__(self, "integ_id", integ_id)
        spec = _ENCR.get(encr_id)
        if spec is None:
            raise ValueError(f"ESP cipher {encr_id.name} is not supported")
        if len(self.encr_key) - spec.salt_len not in spec.key_lens:
            salt = f" + {spec.salt_len}-byte salt" if spec.salt_len else ""
            raise ValueError(f"{encr_id.name} key must be {spec.key_lens} bytes{salt}")
        if spec.tag_len:
            if integ_id != IntegId.NONE or self.integ_key:
                raise ValueError("an AEAD cipher takes no separate integrity algorithm")
        else:
            integ = _INTEG.get(integ_id)
            if integ is None:
                raise ValueError(f"{encr_id.name} needs a supported integrity algorithm")
            if len(self.integ_key) != integ[0]:
                raise ValueError(f"{integ_id.name} key must be {integ[0]} bytes")
        for limit in (self.soft_bytes, self.soft_packets):
            if limit is not None and limit <= 0:
                raise ValueError("soft limits must be positive")

    @property
    def is_aead(self) -> bool:
        return bool(_ENCR[self.encr_id].tag_len)

    @property
    def iv_len(self) -> int:
        return _ENCR[self.encr_id].iv_len

    @property
    def icv_len(self) -> int:
        spec = _ENCR[self.encr_id]
        return spec.tag_len or _INTEG[self.integ_id][1]

    @property
    def align(self) -> int:
        return _ENCR[self.encr_id].align

    def sealed_len(self, inner_len: int) -> int:
        """ESP packet length for an inner packet of inner_len bytes (for MTU arithmetic)."""
        a = self.align
        return ESP_HEADER_LEN + self.iv_len + (inner_len + 2 + a - 1) // a * a + self.icv_len

    def __repr__(self) -> str:
        # Never print keys: this ends up in logs.
        key_bits = (len(self.encr_key) - _ENCR[self.encr_id].salt_len) * 8
        integ = "" if self.is_aead else f", integ={self.integ_id.name}"
        return (
            f"EspParams(spi={self.spi:#010x}, encr={self.encr_id.name}/{key_bits}"
            f"{integ}, esn={self.esn})"
        )


def _soft_limit(max_seq: int) -> int:
    return int(max_seq * SOFT_FRACTION)


def _over_soft_limits(params: EspParams, packets: int, nbytes: int) -> bool:
    return (params.soft_packets is not None and packets >= params.soft_packets) or (
        params.soft_bytes is not None and nbytes >= params.soft_bytes
    )


def _aead_for(params: EspParams) -> AESGCM | ChaCha20Poly1305:
    key = params.encr_key[:-SALT_LEN]
    if params.encr_id == EncrId.CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def _hmac_for(params: EspParams) -> crypto_hmac.HMAC:
    # Keyed once; each packet works on a copy, which skips the key schedule.
    return crypto_hmac.HMAC(params.integ_key, _INTEG[params.integ_id][2]())


def _cbc(params: EspParams) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(params.encr_key), modes.CBC(bytes(16)))


# The per-packet codecs are closures over one SA's keys: locals are the cheapest lookups
# Python has, and each codec is a pure function of its arguments and the cipher state.
#   seal_at(seq, inner, next_header) -> ESP packet; touches no counter, so batched sends
#       can reserve a range of sequence numbers and encode each.
#   seal_run(seq, segments, next_header, out): seal_at for each segment of a TSO
#       super-packet (esp.tso.Segments) in one loop, joining headers and payload only
#       into the plaintext the AEAD needs anyway.
#   decrypt(packet, full seq) -> payload | padding | pad len | next header, or None for a
#       bad ICV; trusts InboundSa.open for the length checks.

Packet = bytes | bytearray | memoryview
SealFn = Callable[[int, bytes, int], bytes]
# seal_run(first seq, segments, next header, out): appends two buffers per ESP packet to
# out, which together are the packet (a sendmsg/sendmmsg iovec pair; no join needed).
SealRunFn = Callable[[int, Segments, int, list[bytes]], None]
IvSource = Callable[[int], bytes]  # sequence number -> IV
DecryptFn = Callable[[Packet, int], bytes | None]


def _bad_next_header(next_header: int) -> ValueError:
    return ValueError(f"next header {next_header} out of range")


def _given_iv(iv_source: IvSource, seq: int, iv_len: int) -> bytes:
    iv = iv_source(seq)
    if len(iv) != iv_len:
        raise ValueError(f"iv_source gave {len(iv)} bytes, the cipher needs {iv_len}")
    return iv


Aead = AESGCM | ChaCha20Poly1305


def _aead_sealer(params: EspParams, iv_source: IvSource | None, cipher: Aead) -> SealFn:
    encrypt = cipher.encrypt
    spi, esn, salt = params.spi, params.esn, params.encr_key[-SALT_LEN:]
    pack_hdr_iv, pack_aad, trailers = _HDR_IV.pack, _AAD_ESN.pack, _TRAILERS

    def seal_at(seq: int, inner: bytes, next_header: int) -> bytes:
        if next_header & ~0xFF:
            raise _bad_next_header(next_header)
        trailer = trailers[(-(len(inner) + 2) & 3) << 8 | next_header]  # 4-byte alignment
        hdr_iv = pack_hdr_iv(spi, seq & _LOW, seq)
        if iv_source is not None:
            hdr_iv = hdr_iv[:8] + _given_iv(iv_source, seq, 8)
        aad = pack_aad(spi, seq >> 32, seq & _LOW) if esn else hdr_iv[:8]
        return hdr_iv + encrypt(salt + hdr_iv[8:], inner + trailer, aad)

    return seal_at


def _aead_run_sealer(params: EspParams, cipher: Aead) -> SealRunFn:
    encrypt = cipher.encrypt
    spi, esn, salt = params.spi, params.esn, params.encr_key[-SALT_LEN:]
    pack_hdr_iv, pack_nonce, pack_aad = _HDR_IV.pack, _NONCE.pack, _AAD_ESN.pack
    trailers, join = _TRAILERS, b"".join

    def seal_run(seq: int, segments: Segments, next_header: int, out: list[bytes]) -> None:
        if next_header & ~0xFF:
            raise _bad_next_header(next_header)
        headers, payload, size = segments.headers, segments.payload, segments.size
        hdr_len = len(headers[0])
        append = out.append
        last = len(headers) - 1
        # All segments but the last carry size bytes: one trailer for all of them.
        full = trailers[(-(hdr_len + size + 2) & 3) << 8 | next_header]
        tail = payload[last * size :]
        pad = trailers[(-(hdr_len + len(tail) + 2) & 3) << 8 | next_header]
        off = 0
        for i, hdr in enumerate(headers):
            if i < last:
                inner = join((hdr, payload[off : off + size], full))
                off += size
            else:
                inner = join((hdr, tail, pad))
            hdr_iv = pack_hdr_iv(spi, seq & _LOW, seq)
            aad = pack_aad(spi, seq >> 32, seq & _LOW) if esn else hdr_iv[:8]
            sealed = encrypt(pack_nonce(salt, seq), inner, aad)
            append(hdr_iv)  # the pair only once the AEAD call succeeded
            append(sealed)
            seq += 1

    return seal_run


def _run_by_packets(seal_at: SealFn) -> SealRunFn:
    """seal_run for ciphers without a fused loop (CBC, a test's iv_source)."""

    def seal_run(seq: int, segments: Segments, next_header: int, out: list[bytes]) -> None:
        for inner in segments.packets():
            out.append(seal_at(seq, inner, next_header))
            out.append(b"")
            seq += 1

    return seal_run


def _cbc_sealer(params: EspParams, iv_source: IvSource | None) -> SealFn:
    encrypt = _cbc(params).encryptor().update
    base_mac = _hmac_for(params)
    spi, esn, icv_len = params.spi, params.esn, params.icv_len
    pack_hdr, pack_nonce, pack_high = _HDR.pack, _CBC_NONCE.pack, _U32.pack
    trailers = _TRAILERS

    def seal_at(seq: int, inner: bytes, next_header: int) -> bytes:
        if next_header & ~0xFF:
            raise _bad_next_header(next_header)
        trailer = trailers[(-(len(inner) + 2) & 15) << 8 | next_header]  # whole blocks
        if iv_source is None:
            # Output: IV (the encrypted nonce block) | ciphertext; see the module docstring.
            body = pack_hdr(spi, seq & _LOW) + encrypt(pack_nonce(0, seq) + inner + trailer)
        else:  # slow path: a cipher object per packet
            iv = _given_iv(iv_source, seq, 16)
            cbc = Cipher(algorithms.AES(params.encr_key), modes.CBC(iv)).encryptor()
            body = pack_hdr(spi, seq & _LOW) + iv + cbc.update(inner + trailer)
        mac = base_mac.copy()
        mac.update(body)
        if esn:
            mac.update(pack_high(seq >> 32))
        return body + mac.finalize()[:icv_len]

    return seal_at


def _aead_decrypter(params: EspParams, cipher: Aead) -> DecryptFn:
    decrypt = cipher.decrypt
    spi, esn, salt = params.spi, params.esn, params.encr_key[-SALT_LEN:]
    pack_aad = _AAD_ESN.pack

    def decrypt_packet(packet: Packet, seq: int) -> bytes | None:
        aad = pack_aad(spi, seq >> 32, seq & _LOW) if esn else packet[:ESP_HEADER_LEN]
        try:
            return decrypt(salt + packet[8:16], packet[16:], aad)
        except InvalidTag:
            return None

    return decrypt_packet


def _cbc_decrypter(params: EspParams) -> DecryptFn:
    decrypt = _cbc(params).decryptor().update
    base_mac = _hmac_for(params)
    esn, icv_len = params.esn, params.icv_len
    pack_high, compare = _U32.pack, hmac.compare_digest

    def decrypt_packet(packet: Packet, seq: int) -> bytes | None:
        icv_at = len(packet) - icv_len
        if icv_at < ESP_HEADER_LEN + 32 or (icv_at - ESP_HEADER_LEN) & 15:
            return None  # a partial block would desync the kept CBC context for good
        mac = base_mac.copy()
        mac.update(packet[:icv_at])
        if esn:
            mac.update(pack_high(seq >> 32))
        if not compare(mac.finalize()[:icv_len], packet[icv_at:]):
            return None
        # Feed IV | ciphertext and drop the block decrypted from the IV (module docstring).
        return decrypt(packet[ESP_HEADER_LEN:icv_at])[16:]

    return decrypt_packet


class OutboundSa:
    """Sealing side of one SA. Not thread-safe: one sending thread per SA."""

    __slots__ = (
        "_cipher",
        "_seal_run",
        "_seq",
        "_seq_max",
        "bytes",
        "packets",
        "params",
        "seal_at",
        "selector_drops",
        "selectors",
        "spi",
        "transport",
    )

    def __init__(
        self,
        params: EspParams,
        selectors: SelectorSet | None = None,
        *,
        last_seq: int = 0,
        iv_source: IvSource | None = None,
        transport: object = None,
    ) -> None:
        """last_seq: the sequence number last sent (0 for a new SA; RFC 6311 resumes).

        iv_source: seq -> IV, for known-answer tests only. The default IV is the sequence
        number (AEAD) or an encrypted counter (CBC); an IV repeated under an AEAD key
        breaks it, so never pass one in production.
        """
        self.params = params
        self.spi = params.spi
        self.selectors = selectors
        self.packets = 0
        self.bytes = 0  # inner bytes
        self.selector_drops = 0
        self.transport = transport  # opaque here: where the packet loop sends sealed packets
        self._seq_max = MAX_SEQ if params.esn else MAX_SEQ_32
        if not 0 <= last_seq <= self._seq_max:
            raise ValueError("last_seq out of range")
        self._seq = last_seq
        # One cipher object per SA: each holds OpenSSL state (a few KiB per site).
        cipher = _aead_for(params) if params.is_aead and iv_source is None else None
        self._cipher = cipher
        self.seal_at: SealFn = (
            _aead_sealer(params, iv_source, cipher or _aead_for(params))
            if params.is_aead
            else _cbc_sealer(params, iv_source)
        )
        self._seal_run: SealRunFn | None = None  # built at the first super-packet

    @property
    def seq(self) -> int:
        """The sequence number last used."""
        return self._seq

    @property
    def needs_rekey(self) -> bool:
        return self._seq >= _soft_limit(self._seq_max) or _over_soft_limits(
            self.params, self.packets, self.bytes
        )

    def seal(self, inner: bytes, next_header: int) -> bytes:
        """The ESP packet (SPI through ICV) carrying inner.

        Raises SequenceExhausted once the last sequence number (2^32 - 1, or 2^64 - 1 with
        ESN) has been sent, and EspDrop(SELECTOR) when selectors are set and inner is
        outside them.
        """
        seq = self._seq + 1
        if seq > self._seq_max:
            raise SequenceExhausted(f"SPI {self.spi:#x}: sequence number space used up")
        sel = self.selectors
        if sel is not None and not sel.allows_packet(inner):
            self.selector_drops += 1
            raise EspDrop(DropReason.SELECTOR)
        packet = self.seal_at(seq, inner, next_header)
        self._seq = seq
        self.packets += 1
        self.bytes += len(inner)
        return packet

    def seal_segments(self, segments: Segments, next_header: int, out: list[bytes]) -> int:
        """seal() for each segment of a TSO super-packet; appends two buffers per ESP
        packet to out (together they are the packet) and returns how many packets.

        The segments share addresses, protocol and ports, so the selectors are checked
        once (EspDrop(SELECTOR) drops them all). If the sequence space ends inside the
        super-packet, the segments that still fit are appended, then SequenceExhausted.
        """
        headers = segments.headers
        count = len(headers)
        sel = self.selectors
        if sel is not None and not sel.allows_packet(headers[0]):
            self.selector_drops += count
            raise EspDrop(DropReason.SELECTOR)
        room = self._seq_max - self._seq
        if count > room:
            if room:
                size = segments.size
                fits = Segments(headers[:room], segments.payload[: room * size], size)
                self.seal_segments(fits, next_header, out)
            raise SequenceExhausted(f"SPI {self.spi:#x}: sequence number space used up")
        seal_run = self._seal_run
        if seal_run is None:  # lazily: an SA that never sees TSO traffic never pays for it
            cipher = self._cipher
            seal_run = self._seal_run = (
                _aead_run_sealer(self.params, cipher)
                if cipher is not None
                else _run_by_packets(self.seal_at)
            )
        # The sequence numbers are taken before sealing: if sealing fails half-way, what
        # it used is never used again (a repeated AEAD nonce would break the key).
        first = self._seq + 1
        self._seq += count
        seal_run(first, segments, next_header, out)
        self.packets += count
        self.bytes += len(headers[0]) * count + len(segments.payload)
        return count


# open_packets(packets, start, deliver, on_error, strict) -> where it stopped; see _opener.
OpenPacketsFn = Callable[..., int]


def _opener(sa: InboundSa) -> OpenPacketsFn:
    """The opening loop of one SA as a closure over locals: what the packet loop runs over
    one receive call's packets, and what InboundSa.open runs for one (strict).

    From packets[start] on, while the packets carry this SA's SPI: open each and hand the
    inner packet to deliver(); a drop is counted on the SA and the next packet follows
    (strict: the EspDrop is raised instead), another exception goes to on_error. Returns
    the index of the first packet not taken: None, shorter than the ESP header, or another
    SPI (strict: raised as a drop). No method calls per packet but the cipher's, the
    replay window's, the selectors' and deliver.

    Order: length, replay check, ICV (before any byte is used), window update, padding,
    next header and inner length, selectors."""
    params = sa.params
    decrypt = sa._cipher.decrypt if sa._cipher is not None else None
    decrypt_cbc = sa.decrypt  # CBC + HMAC: returns None for a bad ICV
    spi_, esn, salt = params.spi, params.esn, params.encr_key[-SALT_LEN:]
    min_len, icv_len, ct_mask = sa._min_len, params.icv_len, sa._ct_mask
    unpack_hdr, pack_aad, unpack16 = _HDR.unpack_from, _AAD_ESN.pack, _U16.unpack_from
    replay = sa.replay
    check, update, infer_high = replay.check, replay.update, replay.infer_high
    drop, pads, selectors = sa._drop, _PADS, sa.selectors
    allows = selectors.allows_packet if selectors is not None else None

    def open_packets(
        packets: Sequence[Packet | None],
        start: int,
        deliver: Callable[[bytes], object],
        on_error: Callable[[Exception], object] | None = None,
        strict: bool = False,
    ) -> int:
        end = len(packets)
        i = start
        while i < end:
            item = packets[i]
            n = len(item) if item is not None else 0
            if n < ESP_HEADER_LEN:
                if strict:
                    raise drop(DropReason.MALFORMED)
                return i
            packet: Packet = item  # type: ignore[assignment]  # not None: n >= 8
            spi, seq = unpack_hdr(packet)
            malformed = n < min_len or (n - ESP_HEADER_LEN - icv_len) & ct_mask
            if spi != spi_:
                if strict:  # InboundSa.open's order: the length before the SPI
                    raise drop(DropReason.MALFORMED if malformed else DropReason.UNKNOWN_SPI)
                return i
            i += 1
            try:
                if malformed:
                    raise drop(DropReason.MALFORMED)
                if esn:
                    seq = infer_high(seq)
                # Ahead of the window (the common, in-order case) needs no bitmap probe.
                if (seq <= replay.top or esn) and not check(seq):
                    raise drop(DropReason.REPLAY)
                if decrypt is not None:
                    aad = pack_aad(spi, seq >> 32, seq & _LOW) if esn else packet[:ESP_HEADER_LEN]
                    try:
                        plain = decrypt(salt + packet[8:16], packet[16:], aad)
                    except InvalidTag:
                        raise drop(DropReason.BAD_ICV) from None
                else:
                    cbc_plain = decrypt_cbc(packet, seq)
                    if cbc_plain is None:
                        raise drop(DropReason.BAD_ICV)
                    plain = cbc_plain
                update(seq)  # authentic from here on, whatever it carries

                m = len(plain)
                padlen = plain[m - 2]
                next_header = plain[m - 1]
                stop = m - 2 - padlen
                if stop < 0 or not plain.startswith(pads[padlen], stop):
                    raise drop(DropReason.PADDING)
                # Tunnel mode: the inner header gives the true length; past it is TFC
                # padding.
                if next_header == NH_IPV4:
                    if stop < 20 or plain[0] >> 4 != 4:
                        raise drop(DropReason.MALFORMED)
                    length = unpack16(plain, 2)[0]
                    if length < 20:
                        raise drop(DropReason.MALFORMED)
                elif next_header == NH_IPV6:
                    if stop < 40 or plain[0] >> 4 != 6:
                        raise drop(DropReason.MALFORMED)
                    length = 40 + unpack16(plain, 4)[0]
                elif next_header == NH_NONE:
                    raise drop(DropReason.DUMMY)
                else:
                    raise drop(DropReason.MALFORMED)
                if length > stop:
                    raise drop(DropReason.MALFORMED)
                inner = plain[:length]
                if allows is not None and not allows(inner):
                    raise drop(DropReason.SELECTOR)
                sa.packets += 1
                sa.bytes += length
                deliver(inner)
            except EspDrop:
                if strict:
                    raise
            except Exception as exc:  # a bug costs this packet, never the others
                if strict or on_error is None:
                    raise
                on_error(exc)
        return end

    return open_packets


class InboundSa:
    """Opening side of one SA. Not thread-safe: one receiving thread per SA."""

    __slots__ = (
        "_batch_opener",
        "_cipher",
        "_ct_mask",
        "_min_len",
        "_soft_seq",
        "bytes",
        "decrypt",
        "drops",
        "packets",
        "params",
        "replay",
        "selectors",
        "spi",
    )

    def __init__(
        self,
        params: EspParams,
        replay_window: int = 1024,
        selectors: SelectorSet | None = None,
    ) -> None:
        self.params = params
        self.spi = params.spi
        self.selectors = selectors
        self.replay = ReplayWindow(replay_window)
        self.packets = 0
        self.bytes = 0  # inner bytes delivered
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self._soft_seq = _soft_limit(MAX_SEQ if params.esn else MAX_SEQ_32)
        if params.is_aead:
            self._min_len = ESP_HEADER_LEN + params.iv_len + 2 + params.icv_len
            self._ct_mask = 0  # counter-mode: no length alignment to insist on
            self._cipher: Aead | None = _aead_for(params)  # shared with open_packets
            self.decrypt: DecryptFn = _aead_decrypter(params, self._cipher)
        else:
            # IV, one block, ICV; and whole blocks, or the kept CBC context would desync.
            self._min_len = ESP_HEADER_LEN + params.iv_len + params.align + params.icv_len
            self._ct_mask = params.align - 1
            self._cipher = None
            self.decrypt = _cbc_decrypter(params)
        self._batch_opener: OpenPacketsFn | None = None  # built at the first packet

    @property
    def needs_rekey(self) -> bool:
        return self.replay.top >= self._soft_seq or _over_soft_limits(
            self.params, self.packets, self.bytes
        )

    def _drop(self, reason: DropReason) -> EspDrop:
        self.drops[reason] += 1
        return EspDrop(reason)

    def open_packets(
        self,
        packets: Sequence[Packet | None],
        start: int,
        deliver: Callable[[bytes], object],
        on_error: Callable[[Exception], object] | None = None,
        strict: bool = False,
    ) -> int:
        """Open packets[start:] while they carry this SA's SPI, handing each inner packet
        to deliver(); returns where it stopped (see _opener). The packet loop's call."""
        run = self._batch_opener
        if run is None:  # lazily: an idle SA keeps no closure (memory per site)
            run = self._batch_opener = _opener(self)
        return run(packets, start, deliver, on_error, strict)

    def open(self, packet: Packet) -> tuple[int, bytes]:
        """(next header, inner packet) of an ESP packet (SPI through ICV); raises EspDrop.

        Order: length, replay check, ICV (before any byte is used), window update,
        padding, next header and inner length, selectors.
        """
        got: list[bytes] = []
        self.open_packets((packet,), 0, got.append, strict=True)
        inner = got[0]
        return (NH_IPV4 if inner[0] >> 4 == 4 else NH_IPV6), inner  # checked to agree
