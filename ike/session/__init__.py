"""The IKE SA state machine: one IkeSession per IKE SA (per site), sans-I/O."""

from ike.session.config import ChildConfig, SessionConfig
from ike.session.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaRekeyed,
    ChildSaUp,
    Event,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    NegotiationFailed,
)
from ike.session.session import Datagram, IkeSession

__all__ = [
    "AuthFailed",
    "ChildConfig",
    "ChildSaDown",
    "ChildSaRekeyed",
    "ChildSaUp",
    "Datagram",
    "Event",
    "IkeSaDown",
    "IkeSaRekeyed",
    "IkeSaUp",
    "IkeSession",
    "NegotiationFailed",
    "SessionConfig",
]
