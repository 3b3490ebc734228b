"""strongSwan-style proposal strings, and proposal selection (RFC 7296 §2.7, §3.3).

A proposal string is algorithm keywords joined by dashes, e.g. ``aes256gcm16-prfsha384-
ecp384``; several keywords of one kind are alternatives in order of preference. Additional
key exchanges (RFC 9370) use strongSwan's ``ke1_`` ... ``ke7_`` prefixes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ike.constants import EsnId, IntegId, PrfId, ProtocolId, TransformType
from ike.crypto.algs import ENCR_SPECS
from ike.crypto.proposal_words import KE_PREFIXES, UNSUPPORTED, WORDS, transform_name
from ike.errors import ProposalError
from ike.payloads import Proposal, Transform

T = TransformType

DEFAULT_IKE_PROPOSALS: list[str] = [
    "aes256gcm16-prfsha384-ecp384",
    "aes256gcm16-prfsha256-x25519-ecp256",
    "aes256-sha256-modp2048",
]
"""IKE proposals used when a connection configures none: AEAD first, CBC for old peers."""

DEFAULT_ESP_PROPOSALS: list[str] = ["aes256gcm16", "aes128gcm16", "aes256-sha256"]
"""ESP proposals used when a connection configures none (no PFS, no ESN)."""

# Order of transform types in the proposals we build (the order RFC 7296 lists them).
_TYPE_ORDER: tuple[TransformType, ...] = (
    T.ENCR,
    T.PRF,
    T.INTEG,
    T.KE,
    *(T(n) for n in range(T.ADDKE1, T.ADDKE7 + 1)),
    T.ESN,
)
# Order strongSwan prints them in.
_DESCRIBE_ORDER: tuple[TransformType, ...] = (
    T.ENCR,
    T.INTEG,
    T.PRF,
    T.KE,
    *(T(n) for n in range(T.ADDKE1, T.ADDKE7 + 1)),
    T.ESN,
)
# strongSwan adds the PRF that matches the integrity algorithm when an IKE proposal has none.
_PRF_FOR_INTEG: dict[int, PrfId] = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}
NONE_ID = 0  # Transform ID 0 is NONE (or NO_ESN): "this type is optional to me" (§3.3.6)


def _lookup(word: str, text: str) -> Transform:
    prefix_type = None
    for prefix, ttype in KE_PREFIXES.items():
        if word.startswith(prefix):
            prefix_type, word = ttype, word[len(prefix) :]
            break
    if prefix_type is not None and word == "none":
        return Transform(prefix_type, NONE_ID)
    if word in UNSUPPORTED:
        raise ProposalError(f"'{word}' is not supported ({UNSUPPORTED[word]})")
    transform = WORDS.get(word)
    if transform is None:
        raise ProposalError(f"unknown algorithm '{word}' in proposal '{text}'")
    if prefix_type is not None:
        if transform.type != T.KE:
            raise ProposalError(f"'{word}' is not a key exchange method in proposal '{text}'")
        transform = Transform(prefix_type, transform.id)
    return transform


def _is_aead(t: Transform) -> bool:
    spec = ENCR_SPECS.get(t.id)
    return spec is not None and spec.aead


def parse_proposal(text: str, protocol: ProtocolId) -> Proposal:
    """Parse one proposal string for IKE or ESP; raises ProposalError naming the problem."""
    if protocol not in (ProtocolId.IKE, ProtocolId.ESP):
        raise ProposalError(f"proposals for {ProtocolId(protocol).name} are not supported")
    by_type: dict[int, list[Transform]] = {}
    for word in text.strip().lower().split("-"):
        if not word:
            raise ProposalError(f"empty algorithm keyword in proposal '{text}'")
        t = _lookup(word, text)
        chosen = by_type.setdefault(t.type, [])
        if t not in chosen:
            chosen.append(t)

    encrs = by_type.get(T.ENCR, [])
    if not encrs:
        raise ProposalError(f"proposal '{text}' has no encryption algorithm")
    aead = any(_is_aead(t) for t in encrs)
    if aead and not all(_is_aead(t) for t in encrs):
        raise ProposalError(f"proposal '{text}' mixes AEAD and non-AEAD ciphers; split it")
    if aead and T.INTEG in by_type:
        raise ProposalError(f"proposal '{text}' mixes AEAD and integrity algorithms; split it")
    if not aead and T.INTEG not in by_type:
        raise ProposalError(f"proposal '{text}' needs an integrity algorithm")
    has_addke = any(T.ADDKE1 <= ttype <= T.ADDKE7 for ttype in by_type)
    if has_addke and T.KE not in by_type:
        raise ProposalError(f"proposal '{text}' has additional key exchanges but no first one")

    if protocol == ProtocolId.IKE:
        if T.ESN in by_type:
            raise ProposalError(f"proposal '{text}': ESN is only for ESP")
        if T.PRF not in by_type:
            if aead:
                raise ProposalError(f"IKE proposal '{text}' needs a PRF (e.g. prfsha256)")
            prfs = [Transform(T.PRF, _PRF_FOR_INTEG[t.id]) for t in by_type[T.INTEG]]
            by_type[T.PRF] = list(dict.fromkeys(prfs))
        if T.KE not in by_type:
            raise ProposalError(f"IKE proposal '{text}' needs a key exchange method")
    else:
        if T.PRF in by_type:
            raise ProposalError(f"ESP proposal '{text}' cannot have a PRF")
        by_type.setdefault(T.ESN, [Transform(T.ESN, EsnId.NO_ESN)])

    transforms = [t for ttype in _TYPE_ORDER for t in by_type.get(ttype, [])]
    return Proposal(num=1, protocol=protocol, spi=b"", transforms=transforms)


def parse_proposals(texts: Iterable[str], protocol: ProtocolId) -> list[Proposal]:
    """Parse several proposal strings, numbered 1, 2, ... as an SA payload needs them."""
    proposals = [parse_proposal(text, protocol) for text in texts]
    for num, proposal in enumerate(proposals, start=1):
        proposal.num = num
    return proposals


def _types(proposal: Proposal) -> list[int]:
    return list(dict.fromkeys(t.type for t in proposal.transforms))


def _usable(t: Transform) -> bool:
    """RFC 7296 §3.3.6: a transform with an attribute we do not understand is unacceptable
    (other transforms of its type still count)."""
    return not t.unknown_attributes


def _by_type(proposal: Proposal) -> dict[int, list[Transform]]:
    """Usable transforms by type, types in proposal order (a type whose transforms are all
    unusable stays, with none: it still has to be agreed)."""
    out: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        usable = out.setdefault(t.type, [])
        if _usable(t):
            usable.append(t)
    return out


def _match(offer: Proposal, offered: dict[int, list[Transform]], ours: Proposal) -> Proposal | None:
    """One transform of every type the peer offered, chosen in our order of preference."""
    wanted_by_type = _by_type(ours)
    chosen: list[Transform] = []
    for ttype, candidates in offered.items():
        # A type we do not use is acceptable only if the peer made it optional (NONE).
        wanted = wanted_by_type.get(ttype) or [Transform(ttype, NONE_ID)]
        pick = next((t for t in wanted if t in candidates), None)
        if pick is None:
            return None
        chosen.append(pick)
    for ttype in wanted_by_type:
        # The peer omitted a type we have: fine only if NONE is among ours (an absent ESN
        # in ESP means NO_ESN, which is id 0 too).
        if ttype not in offered and Transform(ttype, NONE_ID) not in ours.transforms:
            return None
    return Proposal(num=offer.num, protocol=offer.protocol, spi=offer.spi, transforms=chosen)


def select_proposal(offered: list[Proposal], configured: list[Proposal]) -> Proposal | None:
    """The responder's choice: our configured order first, then the peer's (as strongSwan's
    prefer_configured_proposals). The result carries the peer's number and SPI and exactly
    one transform of each type the peer offered; None if nothing matches.
    """
    offers = [(offer, _by_type(offer)) for offer in offered]
    for ours in configured:
        for offer, by_type in offers:
            if offer.protocol != ours.protocol:
                continue
            result = _match(offer, by_type, ours)
            if result is not None:
                return result
    return None


def check_choice(chosen: Proposal, offered_by_us: list[Proposal]) -> bool:
    """True if the responder's choice is one of our proposals, reduced to one transform of
    each type (§3.3.6). Types we offered with a NONE option may be left out.
    """
    ours = next((p for p in offered_by_us if p.num == chosen.num), None)
    if ours is None or ours.protocol != chosen.protocol:
        return False
    chosen_types = [t.type for t in chosen.transforms]
    if len(chosen_types) != len(set(chosen_types)):
        return False
    if any(not _usable(t) or t not in ours.transforms for t in chosen.transforms):
        return False
    for ttype in _types(ours):
        if ttype not in chosen_types and Transform(ttype, NONE_ID) not in ours.transforms:
            return False
    return True


_DESCRIBE_RANK: dict[int, int] = {ttype: n for n, ttype in enumerate(_DESCRIBE_ORDER)}


def describe(proposal: Proposal) -> str:
    """strongSwan's notation, e.g. AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384."""
    return _describe(tuple(proposal.transforms))


@functools.lru_cache(maxsize=256)  # every SA event names its proposal; few distinct ones
def _describe(transforms: tuple[Transform, ...]) -> str:
    last = len(_DESCRIBE_RANK)
    ordered = sorted(transforms, key=lambda t: _DESCRIBE_RANK.get(t.type, last))
    return "/".join(transform_name(t) for t in ordered)
