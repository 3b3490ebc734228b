"""Anti-replay window (RFC 4303 §3.4.3) and ESN inference (RFC 4303 Appendix A)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esp.replay import MAX_SEQ, ReplayWindow

LOW = 0xFFFFFFFF


def accept(w: ReplayWindow, seq: int) -> bool:
    """What the SA does around a good ICV: check, then update."""
    if not w.check(seq):
        return False
    w.update(seq)
    return True


@pytest.mark.parametrize("size", [0, 31, 65537, -1])
def test_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size)


@pytest.mark.parametrize("size", [32, 1024, 65536])
def test_sizes_at_the_bounds_work(size: int) -> None:
    w = ReplayWindow(size)
    assert accept(w, size + 10)
    assert accept(w, 11)  # oldest slot still inside
    assert not w.check(10)


def test_zero_is_never_accepted() -> None:
    w = ReplayWindow(64)
    assert not w.check(0)
    assert accept(w, 3)
    assert not w.check(0)
    assert not w.check(-1)


def test_first_packet_may_be_anywhere_and_earlier_ones_follow() -> None:
    w = ReplayWindow(64)
    assert accept(w, 5)
    assert [accept(w, s) for s in (1, 2, 3, 4)] == [True] * 4
    assert w.top == 5


def test_duplicates_rejected_inside_window_and_at_top() -> None:
    w = ReplayWindow(64)
    for s in (10, 7, 9):
        assert accept(w, s)
    assert not w.check(10)  # the top itself
    assert not w.check(7)
    assert not w.check(9)
    assert w.check(8)


def test_exact_window_edges() -> None:
    w = ReplayWindow(64)
    assert accept(w, 100)
    assert w.check(100 - 63)  # the 64th slot, counting the top
    assert not w.check(100 - 64)  # just below
    assert accept(w, 37)
    assert not w.check(37)


def test_old_below_window_rejected() -> None:
    w = ReplayWindow(32)
    accept(w, 1000)
    assert not w.check(1)
    assert not w.check(1000 - 32)


def test_slide_by_less_than_window_keeps_history() -> None:
    w = ReplayWindow(64)
    for s in (1, 2, 3):
        accept(w, s)
    accept(w, 3 + 61)  # seq 3 is now at offset 61, seq 2 at 62, seq 1 at 63
    assert w.top == 64
    assert not w.check(1) and not w.check(2) and not w.check(3)
    assert w.check(4)
    accept(w, 65)  # seq 1 falls out of the window: old, still rejected
    assert not w.check(1)
    assert not w.check(2)


def test_far_ahead_clears_history() -> None:
    w = ReplayWindow(64)
    for s in range(1, 65):
        accept(w, s)
    assert accept(w, 10_000)
    assert w.top == 10_000
    # Everything in the new window except the top is unseen.
    assert all(w.check(s) for s in range(10_000 - 63, 10_000))
    assert not w.check(64)


def test_jump_of_exactly_one_window() -> None:
    w = ReplayWindow(32)
    accept(w, 100)
    accept(w, 132)
    assert w.check(101)  # offset 31: inside, never seen
    assert not w.check(100)  # offset 32: outside


def test_check_does_not_change_state() -> None:
    w = ReplayWindow(64)
    accept(w, 50)
    before = (w.top, w.check(49), w.check(51))
    for s in (49, 51, 10**9):
        w.check(s)
    assert (w.top, w.check(49), w.check(51)) == before


def test_forged_high_sequence_without_update_moves_nothing() -> None:
    # The SA verifies the ICV between check and update; a bad ICV skips update.
    w = ReplayWindow(64)
    accept(w, 10)
    assert w.check(2**31)  # would be accepted if it were authentic...
    assert w.top == 10  # ...but without update the window stays put
    assert accept(w, 11)
    assert accept(w, 5)


def test_sequence_space_end() -> None:
    w = ReplayWindow(64)
    assert w.check(MAX_SEQ)
    assert not w.check(MAX_SEQ + 1)
    accept(w, MAX_SEQ)
    assert not w.check(MAX_SEQ)
    assert w.check(MAX_SEQ - 1)


def test_memory_stays_bounded() -> None:
    w = ReplayWindow(64)
    for s in range(1, 5000, 3):
        accept(w, s)
    assert w._bits.bit_length() <= 64


# ESN: RFC 4303 Appendix A2.1


def test_infer_case_a_same_subspace() -> None:
    w = ReplayWindow(64)
    accept(w, (7 << 32) | 1000)
    assert w.infer_high(1000) == (7 << 32) | 1000
    assert w.infer_high(1000 - 63) == (7 << 32) | (1000 - 63)  # window bottom
    assert w.infer_high(5000) == (7 << 32) | 5000  # ahead
    # Below the window means the sender wrapped: next subspace.
    assert w.infer_high(1000 - 64) == (8 << 32) | (1000 - 64)
    assert w.infer_high(0) == 8 << 32


def test_infer_case_b_window_spans_two_subspaces() -> None:
    w = ReplayWindow(64)
    accept(w, (3 << 32) | 10)  # the window reaches back into subspace 2
    assert w.infer_high(LOW) == (2 << 32) | LOW  # late packet from before the wrap
    assert w.infer_high(LOW - 52) == (2 << 32) | (LOW - 52)  # window bottom
    assert w.infer_high(5) == (3 << 32) | 5
    assert w.infer_high(1 << 31) == (3 << 32) | (1 << 31)  # ahead
    assert w.infer_high(LOW - 53) == (3 << 32) | (LOW - 53)  # below bottom: ahead instead


def test_infer_from_fresh_window() -> None:
    w = ReplayWindow(64)
    assert w.infer_high(1) == 1
    assert w.infer_high(LOW) == LOW  # no subspace before 0: far ahead in subspace 0
    assert w.infer_high(0) == 0  # and check() rejects the result
    assert not w.check(w.infer_high(0))


def test_esn_rollover_low_wraps_high_increments() -> None:
    w = ReplayWindow(64)
    for seq in range(2**32 - 5, 2**32):
        assert accept(w, w.infer_high(seq & LOW))
    for low in (0, 1, 2):
        full = w.infer_high(low)
        assert full == (1 << 32) | low
        assert accept(w, full)
    assert w.top == (1 << 32) | 2
    # A straggler from before the wrap is placed in the old subspace and is a replay.
    late = w.infer_high(LOW)
    assert late == LOW
    assert not w.check(late)
    # One still missing from before the wrap is accepted once.
    w2 = ReplayWindow(64)
    accept(w2, 2**32 - 3)
    accept(w2, w2.infer_high(1))
    assert accept(w2, w2.infer_high(LOW - 1))
    assert not w2.check(w2.infer_high(LOW - 1))


def test_infer_past_the_end_is_rejected() -> None:
    w = ReplayWindow(64)
    accept(w, MAX_SEQ - 5)
    full = w.infer_high(3)  # would need high = 2^32
    assert full > MAX_SEQ
    assert not w.check(full)


# Properties against a plain model


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=600), max_size=300))
def test_matches_set_model(seqs: list[int]) -> None:
    size = 64
    w = ReplayWindow(size)
    seen: set[int] = set()
    top = 0
    for s in seqs:
        expected = s > 0 and s not in seen and s > top - size
        assert w.check(s) == expected
        if expected:
            w.update(s)
            seen.add(s)
            top = max(top, s)
    assert w.top == top


@settings(max_examples=300, deadline=None)
@given(
    top=st.integers(min_value=1024, max_value=MAX_SEQ - 2**33),
    delta=st.integers(min_value=-1023, max_value=2**32 - 1024),
)
def test_infer_recovers_any_number_in_or_ahead_of_window(top: int, delta: int) -> None:
    w = ReplayWindow(1024)
    w.update(top)
    seq = top + delta
    assert w.infer_high(seq & LOW) == seq
