"""Dead peer detection counts from the peer's last sign of life (issue 4, DPD scenario).

A site's ``dpd_timeout`` is "seconds without an answer from the peer before it is declared
dead"; the liveness check itself only starts after ``dpd_interval`` of silence. Found by
tests/netns/test_interop_multisite.py against a killed strongSwan: with dpd_interval 3 and
dpd_timeout 10 the peer was declared dead 13 s after it vanished, because the give-up
clock started at the liveness check instead of at the last answer.
"""

from __future__ import annotations

from ike.session import events as ev
from ike.session.config import RetransmitPolicy
from ike.session.session import State
from tests.ike.harness import Pair, make_config

INTERVAL, TIMEOUT = 3.0, 10.0


def _pair() -> Pair:
    cfg = {"dpd_interval": INTERVAL, "retransmit": RetransmitPolicy(give_up=TIMEOUT)}
    p = Pair(make_config(**cfg), make_config(local_id="198.51.100.2", remote_id="192.0.2.1", **cfg))
    p.connect()
    assert p.i.state is State.ESTABLISHED
    return p


def test_silent_peer_is_dead_dpd_timeout_after_its_last_answer() -> None:
    p = _pair()
    p.advance(INTERVAL + 0.5)  # one liveness check, answered
    last_answer = p.i.last_peer_activity
    assert last_answer > p.now - 1
    p.filter = lambda d, g: []  # the peer vanishes
    p.advance(TIMEOUT - 0.5 - (p.now - last_answer))
    assert p.i.state is State.ESTABLISHED, "declared dead before dpd_timeout of silence"
    p.advance(1.0)
    assert p.i.state is State.CLOSED
    assert p.of("i", ev.PeerDead)


def test_a_request_sent_while_the_peer_talks_still_gets_the_whole_timeout() -> None:
    """Recent activity never shortens a request's retransmissions below ``give_up``."""
    p = _pair()
    p.filter = lambda d, g: []
    start = p.now
    p.i.rekey_ike(p.now)  # peer answered just now: the full give_up applies
    p.run()
    p.advance(TIMEOUT - 0.5)
    assert p.i.state is State.ESTABLISHED
    p.advance(1.0)
    assert p.i.state is State.CLOSED and p.now - start <= TIMEOUT + 0.5
