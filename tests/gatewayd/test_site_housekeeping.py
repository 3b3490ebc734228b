"""SiteRunner.housekeeping(): what the daemon does once a second for each site.

Authenticated ESP from the peer counts as a sign of life (no DPD needed while traffic
flows); a Child SA past 90 % of child_lifetime_kb is rekeyed once; past the whole limit
it is deleted.
"""

from __future__ import annotations

from tests.gatewayd import test_site as harness
from tests.gatewayd.test_site import World, config_a, config_b, established, in_loop

# The in-memory gateways of test_site.py (its fixtures, shared under the same names).
clock = harness.clock
world = harness.world

LIMIT_KB = 4  # child_lifetime_kb: 4096 bytes, soft limit at 90 %


@in_loop
def test_inbound_esp_counts_as_peer_activity(world: World) -> None:
    a, _b = established(world)
    (rec,) = a.site.records.values()
    session = rec.session
    before = session.last_peer_activity
    a.site.housekeeping(world.now + 5)
    assert session.last_peer_activity == before  # no traffic, no sign of life
    rec.inbound.packets += 1  # as the inbound packet loop does for an authentic packet
    a.site.housekeeping(world.now + 7)
    assert session.last_peer_activity == world.now + 7


@in_loop
def test_soft_byte_limit_rekeys_the_child_sa_once(world: World) -> None:
    a, b = established(world, config_a(child_lifetime_kb=LIMIT_KB), config_b())
    (rec,) = a.site.records.values()
    old_spi = rec.info.spi_in
    rec.outbound.bytes = int(LIMIT_KB * 1024 * 0.9) + 1
    a.site.housekeeping(world.now)
    a.site.housekeeping(world.now)  # asked once: the second call starts nothing
    world.pump()
    spis = [r.info.spi_in for r in a.site.records.values()]
    assert len(spis) == 1 and spis[0] != old_spi
    assert a.site.state == b.site.state == "established"


@in_loop
def test_hard_byte_limit_deletes_the_child_sa(world: World) -> None:
    a, b = established(world, config_a(child_lifetime_kb=LIMIT_KB), config_b())
    (rec,) = a.site.records.values()
    rec.rekey_requested = True  # a rekey that never completed
    rec.inbound.bytes = LIMIT_KB * 1024
    a.site.housekeeping(world.now)
    world.pump()
    assert a.site.records == {} and b.site.records == {}
    assert a.sadb.outbound(rec.key) is None
