"""The algorithm keywords of strongSwan-style proposal strings, and display names.

Keywords follow strongSwan's documented list so that configurations carry over. Known but
unsupported keywords map to the reason, so users get a better error than "unknown".
"""

from __future__ import annotations

from ike.constants import EncrId, EsnId, IntegId, KeId, PrfId, TransformType
from ike.crypto.ke import mlkem_supported
from ike.payloads import Transform

T = TransformType

_KE_WORDS: dict[str, KeId] = {
    "modp2048": KeId.MODP_2048,
    "modp3072": KeId.MODP_3072,
    "modp4096": KeId.MODP_4096,
    "ecp256": KeId.ECP_256,
    "ecp384": KeId.ECP_384,
    "ecp521": KeId.ECP_521,
    "x25519": KeId.CURVE25519,
    "curve25519": KeId.CURVE25519,
}
_MLKEM_WORDS: dict[str, KeId] = {"mlkem768": KeId.ML_KEM_768, "mlkem1024": KeId.ML_KEM_1024}


def _build_words() -> dict[str, Transform]:
    words: dict[str, Transform] = {
        "aes": Transform(T.ENCR, EncrId.AES_CBC, 128),
        "chacha20poly1305": Transform(T.ENCR, EncrId.CHACHA20_POLY1305),
        "sha": Transform(T.INTEG, IntegId.HMAC_SHA1_96),
        "sha1": Transform(T.INTEG, IntegId.HMAC_SHA1_96),
        "sha256": Transform(T.INTEG, IntegId.HMAC_SHA2_256_128),
        "sha2_256": Transform(T.INTEG, IntegId.HMAC_SHA2_256_128),
        "sha384": Transform(T.INTEG, IntegId.HMAC_SHA2_384_192),
        "sha2_384": Transform(T.INTEG, IntegId.HMAC_SHA2_384_192),
        "sha512": Transform(T.INTEG, IntegId.HMAC_SHA2_512_256),
        "sha2_512": Transform(T.INTEG, IntegId.HMAC_SHA2_512_256),
        "prfsha1": Transform(T.PRF, PrfId.HMAC_SHA1),
        "prfsha256": Transform(T.PRF, PrfId.HMAC_SHA2_256),
        "prfsha384": Transform(T.PRF, PrfId.HMAC_SHA2_384),
        "prfsha512": Transform(T.PRF, PrfId.HMAC_SHA2_512),
        "esn": Transform(T.ESN, EsnId.ESN),
        "noesn": Transform(T.ESN, EsnId.NO_ESN),
    }
    for bits in (128, 192, 256):
        words[f"aes{bits}"] = Transform(T.ENCR, EncrId.AES_CBC, bits)
        # strongSwan accepts the ICV length in octets (16) or bits (128).
        words[f"aes{bits}gcm16"] = Transform(T.ENCR, EncrId.AES_GCM_16, bits)
        words[f"aes{bits}gcm128"] = Transform(T.ENCR, EncrId.AES_GCM_16, bits)
    ke_words = dict(_KE_WORDS)
    if mlkem_supported():
        ke_words.update(_MLKEM_WORDS)
    for word, group in ke_words.items():
        words[word] = Transform(T.KE, group)
    return words


def _build_unsupported() -> dict[str, str]:
    reasons: dict[str, str] = {}
    for bits in ("", "128", "192", "256"):
        for icv in ("8", "64", "12", "96"):
            reasons[f"aes{bits}gcm{icv}"] = "short AES-GCM ICVs are not offered; use aes*gcm16"
        for icv in ("8", "64", "12", "96", "16", "128"):
            reasons[f"aes{bits}ccm{icv}"] = "AES-CCM is not implemented"
        reasons[f"aes{bits}ctr"] = "AES-CTR is not implemented"
        reasons[f"aes{bits}gmac"] = "NULL_AUTH_AES_GMAC gives no confidentiality"
    for word in ("3des", "des", "blowfish", "blowfish128", "blowfish256", "cast128", "null"):
        reasons[word] = "weak or obsolete cipher"
    for bits in ("", "128", "192", "256"):
        reasons[f"camellia{bits}"] = "Camellia is not implemented"
    for word in ("md5", "md5_128", "sha1_160", "sha256_96", "aesxcbc", "aescmac"):
        reasons[word] = "integrity algorithm not implemented or too weak"
    for word in ("prfmd5", "prfaesxcbc", "prfaescmac"):
        reasons[word] = "PRF not implemented or too weak"
    for word in ("modp768", "modp1024", "modp1536"):
        reasons[word] = "MODP group too small"
    for word in ("modp6144", "modp8192", "ecp192", "ecp224", "x448", "curve448"):
        reasons[word] = "key exchange method not implemented"
    for word in ("modp1024s160", "modp2048s224", "modp2048s256"):
        reasons[word] = "RFC 5114 groups are not trusted"
    for word in ("ecp224bp", "ecp256bp", "ecp384bp", "ecp512bp"):
        reasons[word] = "Brainpool curves are not implemented"
    reasons["mlkem512"] = "ML-KEM-512 is not provided by the cryptography package"
    if not mlkem_supported():
        for word in _MLKEM_WORDS:
            reasons[word] = "the installed cryptography package lacks ML-KEM"
    return reasons


WORDS: dict[str, Transform] = _build_words()
UNSUPPORTED: dict[str, str] = _build_unsupported()
KE_PREFIXES: dict[str, TransformType] = {f"ke{n}_": T(T.ADDKE1 + n - 1) for n in range(1, 8)}


def _enum_name(enum: type[EncrId] | type[IntegId] | type[PrfId] | type[KeId], v: int) -> str:
    try:
        return enum(v).name
    except ValueError:
        return f"{enum.__name__.upper()}_{v}"


def _ke_name(group: int) -> str:
    if group == KeId.CURVE25519:
        return "CURVE_25519"
    if group == KeId.CURVE448:
        return "CURVE_448"
    return _enum_name(KeId, group)


def transform_name(t: Transform) -> str:
    """strongSwan-like name: AES_GCM_16_256, HMAC_SHA2_256_128, PRF_HMAC_SHA2_384, ECP_384."""
    if t.type == T.ENCR:
        name = _enum_name(EncrId, t.id)
        return f"{name}_{t.key_length}" if t.key_length else name
    if t.type == T.INTEG:
        return _enum_name(IntegId, t.id)
    if t.type == T.PRF:
        return "PRF_" + _enum_name(PrfId, t.id)
    if t.type == T.KE:
        return _ke_name(t.id)
    if T.ADDKE1 <= t.type <= T.ADDKE7:
        return f"KE{t.type - T.ADDKE1 + 1}_{_ke_name(t.id)}"
    if t.type == T.ESN:
        names: dict[int, str] = {EsnId.NO_ESN: "NO_EXT_SEQ", EsnId.ESN: "EXT_SEQ"}
        return names.get(t.id, f"ESN_{t.id}")
    return f"TRANSFORM{t.type}_{t.id}"
