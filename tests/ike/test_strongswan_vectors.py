"""A real exchange captured from strongSwan 5.9.8, decoded by our codec and re-derived by our
key schedule (tests/ike/vectors, made by tests/lab/capture_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ike.auth.psk import psk_auth_data, signed_octets
from ike.codec import decode, encode, open_protected
from ike.constants import ExchangeType, PayloadType
from ike.crypto.keymat import derive_ike_keys, key_lengths
from ike.crypto.prf import get_prf
from ike.crypto.sk import make_sk_crypto
from ike.crypto.suite import IkeSuite
from ike.payloads import IdPayload, KePayload, NoncePayload, SaPayload

VECTORS = sorted((Path(__file__).parent / "vectors").glob("strongswan-*"))


def load(d: Path) -> tuple[dict, list[dict]]:
    return json.loads((d / "keys.json").read_text()), json.loads((d / "exchange.json").read_text())


def ike_datagrams(exchange: list[dict]) -> list[bytes]:
    out = []
    for e in exchange:
        if e["kind"] != "ike":
            continue
        raw = bytes.fromhex(e["hex"])
        out.append(raw[4:] if e["non_esp_marker"] else raw)
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=lambda d: d.name)
def test_decode_and_rederive_strongswan_exchange(vector: Path) -> None:
    keys, exchange = load(vector)
    init_req, init_resp, auth_req, auth_resp = ike_datagrams(exchange)[:4]
    m1, m2 = decode(init_req), decode(init_resp)
    assert encode(m1) == init_req and encode(m2) == init_resp  # byte-exact both ways
    assert m1.exchange == ExchangeType.IKE_SA_INIT and m2.is_response
    assert m1.spi_i.hex() == keys["spi_i"] and m2.spi_r.hex() == keys["spi_r"]
    assert m1.get(NoncePayload).nonce.hex() == keys["ni"]
    assert m2.get(NoncePayload).nonce.hex() == keys["nr"]
    assert m1.get(KePayload).data.hex() == keys["ke_i"]["data"]

    chosen = m2.get(SaPayload).proposals[0]
    suite = IkeSuite.from_proposal(chosen)
    prf = get_prf(suite.prf_id)
    encr_len, integ_len = key_lengths(suite.encr_id, suite.key_bits, suite.integ_id)
    skeyseed, k = derive_ike_keys(
        prf,
        encr_len,
        integ_len,
        bytes.fromhex(keys["g_ir"]),
        m1.get(NoncePayload).nonce,
        m2.get(NoncePayload).nonce,
        m1.spi_i,
        m2.spi_r,
    )
    assert skeyseed.hex() == keys["skeyseed"]
    for name in ("sk_d", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        assert getattr(k, name).hex() == keys[name], name
    assert (k.sk_ai.hex() or None) == keys["sk_ai"]

    # Our SK decryption opens strongSwan's IKE_AUTH messages, and our PSK AUTH matches theirs.
    c_i = make_sk_crypto(suite.encr_id, suite.key_bits, suite.integ_id, k.sk_ei, k.sk_ai)
    c_r = make_sk_crypto(suite.encr_id, suite.key_bits, suite.integ_id, k.sk_er, k.sk_ar)
    a1, a2 = open_protected(auth_req, c_i), open_protected(auth_resp, c_r)
    idi, idr = a1.get(IdPayload, PayloadType.IDi), a2.get(IdPayload, PayloadType.IDr)
    psk = keys["psk"].encode()
    octets_i = signed_octets(init_req, m2.get(NoncePayload).nonce, prf, k.sk_pi, idi.body())
    octets_r = signed_octets(init_resp, m1.get(NoncePayload).nonce, prf, k.sk_pr, idr.body())
    assert octets_i.hex() == keys["auth_octets_i"] and octets_r.hex() == keys["auth_octets_r"]
    assert psk_auth_data(prf, psk, octets_i).hex() == keys["auth_i"]
    assert psk_auth_data(prf, psk, octets_r).hex() == keys["auth_r"]
