"""Configuration payload attributes (RFC 7296 §3.15) and the address provider protocol.

The engine asks a provider (SessionConfig.address_provider) for an Assignment when a
client sends CFG_REQUEST; ``PoolProvider`` is the usual one, backed by AddressPools.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ike.constants import CfgAttr, CfgType
from ike.p2s.pool import AddressPool, IPAddress, Network
from ike.payloads import CfgAttribute, CpPayload

ADDRESS_ATTRS = {4: CfgAttr.INTERNAL_IP4_ADDRESS, 6: CfgAttr.INTERNAL_IP6_ADDRESS}


@dataclass(frozen=True)
class Assignment:
    """What the gateway hands one client: its addresses, resolvers and reachable subnets."""

    addresses: tuple[IPAddress, ...]
    dns: tuple[IPAddress, ...] = ()
    subnets: tuple[Network, ...] = ()


class AddressProvider(Protocol):
    def assign(self, identity: str, families: frozenset[int], now: float) -> Assignment | None:
        """Addresses of the requested families (4, 6) for a client, or None when exhausted."""
        ...


@dataclass
class PoolProvider:
    """An AddressProvider over one pool per family, with fixed DNS servers and subnets."""

    pools: Sequence[AddressPool]
    dns: tuple[IPAddress, ...] = ()
    subnets: tuple[Network, ...] = field(default_factory=tuple)

    def assign(self, identity: str, families: frozenset[int], now: float) -> Assignment | None:
        addresses: list[IPAddress] = []
        for pool in self.pools:
            if pool.version in families:
                address = pool.acquire(identity, now)
                if address is not None:
                    addresses.append(address)
        if not addresses:
            return None
        return Assignment(tuple(addresses), self.dns, self.subnets)

    def release(self, identity: str, now: float) -> None:
        for pool in self.pools:
            pool.release(identity, now)


def build_request(families: Sequence[int]) -> CpPayload:
    """A client's CFG_REQUEST: empty attributes ask for any value (§3.15.1)."""
    attrs = [CfgAttribute(ADDRESS_ATTRS[f]) for f in families]
    if 4 in families:
        attrs += [CfgAttribute(CfgAttr.INTERNAL_IP4_DNS), CfgAttribute(CfgAttr.INTERNAL_IP4_SUBNET)]
    if 6 in families:
        attrs += [CfgAttribute(CfgAttr.INTERNAL_IP6_DNS), CfgAttribute(CfgAttr.INTERNAL_IP6_SUBNET)]
    return CpPayload(CfgType.CFG_REQUEST, attrs)


def requested_families(cp: CpPayload) -> frozenset[int]:
    """Which address families a CFG_REQUEST asks an address for."""
    wanted = {a.type for a in cp.attributes}
    return frozenset(f for f, attr in ADDRESS_ATTRS.items() if attr in wanted)


def build_reply(a: Assignment) -> CpPayload:
    attrs: list[CfgAttribute] = []
    for addr in a.addresses:
        if addr.version == 4:
            attrs.append(CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, addr.packed))
        else:  # an IPv6 address carries a prefix length; a host route is what clients expect
            attrs.append(CfgAttribute(CfgAttr.INTERNAL_IP6_ADDRESS, addr.packed + bytes([128])))
    for dns in a.dns:
        attr = CfgAttr.INTERNAL_IP4_DNS if dns.version == 4 else CfgAttr.INTERNAL_IP6_DNS
        attrs.append(CfgAttribute(attr, dns.packed))
    for net in a.subnets:
        if net.version == 4:
            value = net.network_address.packed + net.netmask.packed
            attrs.append(CfgAttribute(CfgAttr.INTERNAL_IP4_SUBNET, value))
        else:
            value = net.network_address.packed + bytes([net.prefixlen])
            attrs.append(CfgAttribute(CfgAttr.INTERNAL_IP6_SUBNET, value))
    return CpPayload(CfgType.CFG_REPLY, attrs)


def parse_reply(cp: CpPayload) -> Assignment:
    """The values of a CFG_REPLY; attributes of the wrong length are ignored."""
    addresses: list[IPAddress] = []
    dns: list[IPAddress] = []
    subnets: list[Network] = []
    for attr in cp.attributes:
        v = attr.value
        if attr.type == CfgAttr.INTERNAL_IP4_ADDRESS and len(v) == 4:
            addresses.append(ipaddress.IPv4Address(v))
        elif attr.type == CfgAttr.INTERNAL_IP6_ADDRESS and len(v) == 17:
            addresses.append(ipaddress.IPv6Address(v[:16]))
        elif attr.type == CfgAttr.INTERNAL_IP4_DNS and len(v) == 4:
            dns.append(ipaddress.IPv4Address(v))
        elif attr.type == CfgAttr.INTERNAL_IP6_DNS and len(v) == 16:
            dns.append(ipaddress.IPv6Address(v))
        elif attr.type == CfgAttr.INTERNAL_IP4_SUBNET and len(v) == 8:
            net = f"{ipaddress.IPv4Address(v[:4])}/{ipaddress.IPv4Address(v[4:])}"
            subnets.append(ipaddress.IPv4Network(net, strict=False))
        elif attr.type == CfgAttr.INTERNAL_IP6_SUBNET and len(v) == 17 and v[16] <= 128:
            subnets.append(ipaddress.IPv6Network((v[:16], v[16]), strict=False))
    return Assignment(tuple(addresses), tuple(dns), tuple(subnets))
