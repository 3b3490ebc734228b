"""Per-SA state: an IKE SA's keys and message IDs, and the Child SAs it carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ike.constants import HeaderFlag
from ike.crypto.base import Prf, RandomSource, SkCrypto
from ike.crypto.keymat import IkeKeys
from ike.crypto.suite import ChildSuite, IkeSuite
from ike.fragments import Reassembler
from ike.payloads import Proposal, TrafficSelector


class IkeSaKeys:
    """The keys and SK crypto of one IKE SA, seen from our side."""

    def __init__(self, suite: IkeSuite, keys: IkeKeys, we_initiated: bool, rng: RandomSource):
        self.suite = suite
        self.prf: Prf = suite.prf
        self.sk_d = keys.sk_d
        if we_initiated:
            self.sk_p_ours, self.sk_p_peer = keys.sk_pi, keys.sk_pr
            out_e, out_a, in_e, in_a = keys.sk_ei, keys.sk_ai, keys.sk_er, keys.sk_ar
        else:
            self.sk_p_ours, self.sk_p_peer = keys.sk_pr, keys.sk_pi
            out_e, out_a, in_e, in_a = keys.sk_er, keys.sk_ar, keys.sk_ei, keys.sk_ai
        self.crypto_out: SkCrypto = suite.sk_crypto(out_e, out_a, rng)
        self.crypto_in: SkCrypto = suite.sk_crypto(in_e, in_a, rng)

    def __repr__(self) -> str:
        return f"IkeSaKeys({self.suite})"


@dataclass
class ResponseCache:
    """The last response we sent, to answer a retransmitted request without reprocessing."""

    message_id: int
    request_digest: bytes
    datagrams: list[bytes]


@dataclass(eq=False)
class IkeSa:
    """One IKE SA: SPIs, keys, message IDs. An IkeSession holds one (two while rekeying)."""

    spi_i: bytes
    spi_r: bytes
    initiator: bool  # we are the original initiator of this IKE SA (the I flag)
    keys: IkeSaKeys | None = None
    proposal: Proposal | None = None
    ni: bytes = b""
    nr: bytes = b""
    next_request_id: int = 0  # the message ID our next request gets
    expected_request_id: int = 0  # the message ID the peer's next request must carry
    last_response: ResponseCache | None = None
    pending: Any = None  # ike.session.session.Pending: our outstanding request on this SA
    request_fragments: Reassembler = field(default_factory=Reassembler)
    response_fragments: Reassembler = field(default_factory=Reassembler)
    established_at: float | None = None
    rekey_at: float | None = None
    expire_at: float | None = None

    @property
    def flags_i(self) -> int:
        return HeaderFlag.INITIATOR if self.initiator else 0


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # we sent a rekey request
    REKEYED = "rekeyed"  # replaced; waiting for its delete
    DELETING = "deleting"  # we sent a delete request


@dataclass(eq=False)
class ChildSa:
    child_id: int
    name: str
    spi_in: int
    spi_out: int
    suite: ChildSuite
    proposal_text: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    established_at: float
    rekey_at: float
    expire_at: float
    state: ChildState = ChildState.INSTALLED
    successor: int | None = None  # the child that replaced this one on rekey
    collision: Any = None  # a peer's rekey of this child that crossed ours (child, ni, nr)
