"""The algorithms of a negotiated (chosen) proposal, in the form key derivation needs."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
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


_ADDKE = range(T.ADDKE1, T.ADDKE7 + 1)


def _one_each(transforms: Iterable[Transform]) -> dict[int, Transform]:
    """The chosen transform of each type; a chosen proposal has at most one per type."""
    by_type: dict[int, Transform] = {}
    for t in transforms:
        if t.type in by_type:
            name = getattr(t.type, "name", t.type)  # an int when the type is unknown
            raise ProposalError(f"chosen proposal has several {name} transforms")
        by_type[t.type] = t
    return by_type


def _required(by_type: dict[int, Transform], ttype: TransformType) -> Transform:
    found = by_type.get(ttype)
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


def _additional_ke(by_type: dict[int, Transform]) -> tuple[int, ...]:
    """Groups of ADDKE1..7 in order, skipping NONE (the peer declined that round)."""
    found = (by_type.get(ttype) for ttype in _ADDKE)
    return tuple(t.id for t in found if t is not None and t.id != KeId.NONE)


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
        return _ike_suite(tuple(proposal.transforms))

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
        return _child_suite(tuple(proposal.transforms))

    @property
    def key_lengths(self) -> tuple[int, int]:
        """(encryption key bytes including salt, integrity key bytes) per direction."""
        return key_lengths(self.encr_id, self.key_bits, self.integ_id)


# Every set-up looks the same few chosen proposals up several times: remember the suites.
# Only successes are kept (errors are raised afresh), so no check is skipped.


@functools.lru_cache(maxsize=256)
def _ike_suite(transforms: tuple[Transform, ...]) -> IkeSuite:
    by_type = _one_each(transforms)
    encr = _required(by_type, T.ENCR)
    integ = by_type.get(T.INTEG)
    suite = IkeSuite(
        encr_id=encr.id,
        key_bits=encr.key_length,
        integ_id=integ.id if integ is not None else IntegId.NONE,
        prf_id=_required(by_type, T.PRF).id,
        ke_group=_required(by_type, T.KE).id,
        additional_ke=_additional_ke(by_type),
    )
    _check_pair(suite.encr_id, suite.key_bits, suite.integ_id)
    get_prf(suite.prf_id)  # unsupported PRF: ProposalError now, not at key derivation
    return suite


@functools.lru_cache(maxsize=256)
def _child_suite(transforms: tuple[Transform, ...]) -> ChildSuite:
    by_type = _one_each(transforms)
    encr = _required(by_type, T.ENCR)
    integ, esn, ke = by_type.get(T.INTEG), by_type.get(T.ESN), by_type.get(T.KE)
    suite = ChildSuite(
        encr_id=encr.id,
        key_bits=encr.key_length,
        integ_id=integ.id if integ is not None else IntegId.NONE,
        esn=esn is not None and esn.id == EsnId.ESN,
        ke_group=ke.id if ke is not None else KeId.NONE,
        additional_ke=_additional_ke(by_type),
    )
    _check_pair(suite.encr_id, suite.key_bits, suite.integ_id)
    return suite
