"""Anti-replay sliding window (RFC 4303 §3.4.3) with ESN inference (RFC 4303 Appendix A).

The window is a Python int used as a bitmap: bit i set means sequence number ``top - i``
was accepted. check() and update() are split so that the caller verifies the ICV between
them: a forged packet must never move the window.

Not thread-safe: one inbound SA is driven by one data-path thread.
"""

from __future__ import annotations

MIN_WINDOW = 32
MAX_WINDOW = 65536
MAX_SEQ = (1 << 64) - 1  # the largest ESN; 32-bit SAs never get past 2^32 - 1 anyway

_LOW_MASK = 0xFFFFFFFF


class ReplayWindow:
    """Sliding window over full (64-bit when ESN) sequence numbers."""

    __slots__ = ("_bits", "_mask", "size", "top")

    def __init__(self, size: int = 1024) -> None:
        if not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"replay window size {size} not in {MIN_WINDOW}..{MAX_WINDOW}")
        self.size = size
        self.top = 0  # highest sequence number accepted so far; 0 = none yet
        self._bits = 0
        self._mask = (1 << size) - 1

    def check(self, seq: int) -> bool:
        """True when seq is new and inside or ahead of the window. Does not change state."""
        top = self.top
        if seq > top:
            return seq <= MAX_SEQ
        diff = top - seq
        if seq <= 0 or diff >= self.size:
            return False
        return not (self._bits >> diff) & 1

    def update(self, seq: int) -> None:
        """Mark seq as received; call only after check(seq) and a good ICV."""
        top = self.top
        if seq > top:
            shift = seq - top
            # A jump of a whole window or more leaves nothing of the old bitmap.
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        else:
            self._bits |= 1 << (top - seq)

    def infer_high(self, seq_low: int) -> int:
        """Full 64-bit sequence number for the 32 low bits seen on the wire (ESN).

        RFC 4303 Appendix A2.1: pick the high half that puts seq_low inside the window or
        just ahead of it. The guess is only confirmed by the ICV, which covers the high bits.
        The result can be 0 or past MAX_SEQ, which check() rejects.
        """
        top = self.top
        th = top >> 32
        tl = top & _LOW_MASK
        w = self.size
        if tl >= w - 1:
            # Case A: the window lies within one 2^32 subspace.
            if seq_low >= tl - w + 1:
                return (th << 32) | seq_low
            return ((th + 1) << 32) | seq_low
        # Case B: the window straddles the subspace boundary.
        if seq_low >= (tl - w + 1) & _LOW_MASK:
            # Belongs to the previous subspace; before any wrap there is none, so the
            # packet can only be far ahead in this one.
            return ((th - 1) << 32) | seq_low if th else seq_low
        return (th << 32) | seq_low

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, top={self.top})"
