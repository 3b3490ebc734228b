"""The algorithms of a negotiated (chosen) proposal, in the form key derivation needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ike.constants import EsnId, IntegId, KeId, ProtocolId, TransformType
from ike.crypto.algs import encr_spec, integ_spec
from ike.crypto.base import Prf, RandomSource, SkCrypto
from ike.crypto.keymat import key_lengths
from ike.crypto.prf import get_prf
from ike.crypto.sk import make_sk_crypto
from ike.errors import ProposalError
from ike.payloads import Proposal, Transform

T = TransformType


def _optional(proposal: Proposal, ttype: TransformType) -> Transform | None:
    found = [t for t in proposal.transforms if t.type == ttype]
    if len(found) > 1:
        raise ProposalError(f"chosen proposal has {len(found)} {ttype.name} transforms")
    return found[0] if found else None


def _required(proposal: Proposal, ttype: TransformType) -> Transform:
    found = _optional(proposal, ttype)
    if found is None:
        raise ProposalError(f"chosen proposal has no {ttype.name} transform")
    return found


def _check_pair(encr_id: int, key_bits: int | None, integ_id: int) -> None:
    """AEAD ciphers take no integrity algorithm, the others need one."""
    aead = encr_spec(encr_id, key_bits).aead
    if aead and integ_id != IntegId.NONE:
        raise ProposalError("an AEAD cipher was chosen together with an integrity algorithm")
    if not aead:
        integ_spec(integ_id)  # raises ProposalError for NONE or unsupported


def _additional_ke(proposal: Proposal) -> tuple[int, ...]:
    """Groups of ADDKE1..7 in order, skipping NONE (the peer declined that round)."""
    groups = []
    for ttype in range(T.ADDKE1, T.ADDKE7 + 1):
        t = _optional(proposal, T(ttype))
        if t is not None and t.id != KeId.NONE:
            groups.append(t.id)
    return tuple(groups)


@dataclass(frozen=True)
class IkeSuite:
    encr_id: int
    key_bits: int | None
    integ_id: int  # IntegId.NONE for AEAD
    prf_id: int
    ke_group: int
    additional_ke: tuple[int, ...] = ()

    @classmethod
    def from_proposal(cls, proposal: Proposal) -> IkeSuite:
        """From a chosen IKE proposal (one transform per type); ProposalError otherwise."""
        if proposal.protocol != ProtocolId.IKE:
            raise ProposalError("not an IKE proposal")
        encr = _required(proposal, T.ENCR)
        prf = _required(proposal, T.PRF)
        ke = _required(proposal, T.KE)
        integ = _optional(proposal, T.INTEG)
        suite = cls(
            encr_id=encr.id,
            key_bits=encr.key_length,
            integ_id=integ.id if integ is not None else IntegId.NONE,
            prf_id=prf.id,
            ke_group=ke.id,
            additional_ke=_additional_ke(proposal),
        )
        _check_pair(suite.encr_id, suite.key_bits, suite.integ_id)
        get_prf(suite.prf_id)  # unsupported PRF: ProposalError now, not at key derivation
        return suite

    @property
    def prf(self) -> Prf:
        return get_prf(self.prf_id)

    @property
    def key_lengths(self) -> tuple[int, int]:
        """(SK_e bytes including salt, SK_a bytes)."""
        return key_lengths(self.encr_id, self.key_bits, self.integ_id)

    def sk_crypto(self, sk_e: bytes, sk_a: bytes, random: RandomSource = os.urandom) -> SkCrypto:
        """SK protection for one direction (pass SK_ei/SK_ai or SK_er/SK_ar)."""
        return make_sk_crypto(self.encr_id, self.key_bits, self.integ_id, sk_e, sk_a, random)


@dataclass(frozen=True)
class ChildSuite:
    encr_id: int
    key_bits: int | None
    integ_id: int  # IntegId.NONE for AEAD
    esn: bool
    ke_group: int  # KeId.NONE without PFS
    additional_ke: tuple[int, ...] = ()

    @classmethod
    def from_proposal(cls, proposal: Proposal) -> ChildSuite:
        """From a chosen ESP proposal; an absent ESN transform means no ESN."""
        if proposal.protocol != ProtocolId.ESP:
            raise ProposalError("not an ESP proposal")
        encr = _required(proposal, T.ENCR)
        integ = _optional(proposal, T.INTEG)
        esn = _optional(proposal, T.ESN)
        ke = _optional(proposal, T.KE)
        suite = cls(
            encr_id=encr.id,
            key_bits=encr.key_length,
            integ_id=integ.id if integ is not None else IntegId.NONE,
            esn=esn is not None and esn.id == EsnId.ESN,
            ke_group=ke.id if ke is not None else KeId.NONE,
            additional_ke=_additional_ke(proposal),
        )
        _check_pair(suite.encr_id, suite.key_bits, suite.integ_id)
        return suite

    @property
    def key_lengths(self) -> tuple[int, int]:
        """(encryption key bytes including salt, integrity key bytes) per direction."""
        return key_lengths(self.encr_id, self.key_bits, self.integ_id)
