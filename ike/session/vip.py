"""Virtual IPs in IKE_AUTH (RFC 7296 §2.19): CFG_REQUEST from clients, CFG_REPLY from gateways.

The gateway asks ``SessionConfig.address_provider`` for addresses; the first Child SA's
TSi is then narrowed to them. Without addresses it answers INTERNAL_ADDRESS_FAILURE and
creates no Child SA (§3.10.1); the IKE SA itself stands.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from ike.constants import CfgType, NotifyType
from ike.p2s import cp
from ike.payloads import CpPayload, Message, NotifyPayload, Payload, TrafficSelector
from ike.session import events as ev
from ike.session.ts import from_network

if TYPE_CHECKING:
    from ike.session.session import IkeSession


def request_payloads(s: IkeSession) -> list[Payload]:
    """The client's CFG_REQUEST, if this config asks for a virtual IP."""
    families = s.config.request_virtual_ip
    return [cp.build_request(families)] if families else []


def respond(
    s: IkeSession, identity: str, msg: Message, now: float
) -> tuple[list[Payload], tuple[TrafficSelector, ...] | None, bool]:
    """Answer a CFG_REQUEST: (payloads, selectors TSi must narrow to, child allowed)."""
    request = msg.get(CpPayload)
    provider = s.config.address_provider
    if request is None or request.cfg_type != CfgType.CFG_REQUEST or provider is None:
        return [], None, True  # nothing asked, or we do not assign: ignore it (§3.15)
    families = cp.requested_families(request)
    if not families:
        return [], None, True
    assignment = provider.assign(identity, families, now)
    if assignment is None or not assignment.addresses:
        wanted = "/".join(f"IPv{f}" for f in sorted(families))
        s.emit(ev.VirtualIpFailed(identity, f"address pool exhausted: no {wanted} address left"))
        return [NotifyPayload(NotifyType.INTERNAL_ADDRESS_FAILURE)], None, False
    for address in assignment.addresses:
        s.emit(ev.VirtualIpAssigned(address, identity, assignment.dns, assignment.subnets))
    hosts = tuple(from_network(ipaddress.ip_network(a)) for a in assignment.addresses)
    return [cp.build_reply(assignment)], hosts, True


def finish(s: IkeSession, msg: Message) -> None:
    """The client's side: report the assigned addresses, or why there are none."""
    if not s.config.request_virtual_ip:
        return
    identity = str(s.remote_identity)
    if msg.notify(NotifyType.INTERNAL_ADDRESS_FAILURE) is not None:
        s.emit(ev.VirtualIpFailed(identity, "gateway answered INTERNAL_ADDRESS_FAILURE"))
        return
    reply = msg.get(CpPayload)
    ok = reply is not None and reply.cfg_type == CfgType.CFG_REPLY
    assignment = cp.parse_reply(reply) if ok else cp.Assignment(())
    if not assignment.addresses:
        s.emit(ev.VirtualIpFailed(identity, "gateway assigned no virtual IP"))
        return
    for address in assignment.addresses:
        s.emit(ev.VirtualIpAssigned(address, identity, assignment.dns, assignment.subnets))
