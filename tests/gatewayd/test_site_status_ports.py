"""`gatewayctl status` shows the port an IKE SA really uses (issue 4 interop finding).

After NAT detection both ends float to nat_t_port (RFC 7296 §2.23); the status kept
printing the IKE port (``192.0.2.1:500``) while every message went from 4500, as seen
against strongSwan, whose kernel-libipsec always forces UDP encapsulation.
"""

from __future__ import annotations

from tests.gatewayd import test_site as harness
from tests.gatewayd.test_site import ADDR_A, ADDR_B, World, config_a, established, in_loop

# The in-memory gateways of test_site.py (its fixtures, shared under the same names).
clock = harness.clock
world = harness.world


@in_loop
def test_status_shows_the_nat_t_port_once_the_ike_sa_floated(world: World) -> None:
    a, b = established(world, config_a(encapsulation="udp"))
    ike_a, ike_b = a.site.status(world.now)["ike_sa"], b.site.status(world.now)["ike_sa"]
    assert (ike_a["local"], ike_a["remote"]) == (f"{ADDR_A}:4500", f"{ADDR_B}:4500")
    assert (ike_b["local"], ike_b["remote"]) == (f"{ADDR_B}:4500", f"{ADDR_A}:4500")


@in_loop
def test_status_keeps_the_ike_port_without_a_nat(world: World) -> None:
    a, _ = established(world, config_a(encapsulation="esp"))
    ike_a = a.site.status(world.now)["ike_sa"]
    assert (ike_a["local"], ike_a["remote"]) == (f"{ADDR_A}:500", f"{ADDR_B}:500")
