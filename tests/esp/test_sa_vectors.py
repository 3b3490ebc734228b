"""Known answers: the ESP packets of draft-mcgrew-gcm-test-01 (AES-GCM-16, RFC 4106).

Each case gives key, nonce = salt | IV, AAD = SPI | seq (or SPI | seq high | seq low with
ESN), plaintext = payload | padding | pad length | next header, ciphertext | tag. The next
header in these packets is 1, and in two cases the inner IPv4 length counts the trailer,
so they cannot pass tunnel-mode open() whole: open() must get as far as verifying the
ICV (the window moves) and then drop them as MALFORMED; decrypt() must give the exact
plaintext, and seal() must give the exact packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from esp.sa import DropReason, EspDrop, EspParams, InboundSa, OutboundSa
from ike.constants import EncrId


@dataclass(frozen=True)
class Case:
    name: str
    key: str
    nonce: str
    aad: str
    plaintext: str
    ciphertext: str  # including the 16-byte tag


CASES = [
    Case(
        "aes128-esn-spi4321",
        "4c80cdefbb5d10da906ac73c3613a634",
        "2e443b684956ed7e3b244cfe",
        "000043218765432100000000",
        "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f7369"
        "70045f756470037369700963796265726369747902646b000021000101020201",
        "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf"
        "65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732"
        "459018148f6cbe722fd04796562dfdb4",
    ),
    Case(
        "aes256-spi4a2cbfe3",
        "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        "112233440102030405060708",
        "4a2cbfe300000002",
        "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000"
        "020405b40101040201020201",
        "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d34"
        "7f0545659f14e99def842d8e"
        "b335f4eecfdbf831824b4c4915956c96",
    ),
    Case(
        "aes192-spia5f8",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c",
        "cafebabefacedbaddecaf888",
        "0000a5f80000000a",
        "45000028a4ad4000400678800a01038f0a010612802306b8cb712602dd6bb03e501016d075680001",
        "a5b1f8066029aea40e598b8122de02420938b3ab33f828e687b8858b5bfbdbd0315b27452144cc77"
        "95457b9652037f5318027b5b4cd7a636",
    ),
    Case(
        "aes128-esn-spi100",
        "abbccddef00112233445566778899aab",
        "decaf888cafedebaceface74",
        "000001000000000000000001",
        "4500004933ba00007f119106c3fb1d10c2b1d326c02831ce0035dd7b800302d500004e20001e8c18"
        "d75b81dc91baa0476b91b924b280389d92c963bac046ec959b6266c04722b14923010101",
        "18a6fd42f72cbf4ab2a2ea901f73d814e3e7f243d95412e1c349c1d2fbec168f9190feebaf2cb019"
        "84e65863965d7472b79da345e0e780191f0d2f0e0f496c226f2127b27db35724e7845d68"
        "651f57e65f354f75ff17015769623436",
    ),
    Case(
        "aes128-esn-spi42f67e3f",
        "3de09874b388e6491988d0c3607eae1f",
        "57690e434e280000a2fca1a3",
        "42f67e3f1010101010101010",
        "4500003c99c300008001cb7c40679318010101010800085c02004300616263646566676869"
        "6a6b6c6d6e6f707172737475767761626364656667686901020201",
        "fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c35791765acbd8701ad7984"
        "5bf9fe3fba487bc91755e6662b4c8d0d1f5e22739530320a"
        "e0d731cc978ecafaeae88f00e80d6e48",
    ),
    Case(
        "aes128-empty-payload-seq-2^32-1",
        "7d773d00c144c525ac619d18c84a3f47",
        "d966426743457e9182443bc6",
        "335467aeffffffff",
        "01020201",
        "437f866bcb3f699fe9b0822bac961c4504bef270",
    ),
    Case(
        "aes256-esn-seq-2^64-1",
        "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
        "7475726e333021696765746d",
        "796b6963ffffffffffffffff",
        "45000030da3a00008001df3bc0a80005c0a800010800c6cd02000700616263646566676869"
        "6a6b6c6d6e6f707172737401020201",
        "f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a864cd3d78ca4ae68a3"
        "2b42458fb57dbe821dcc63b9"
        "d0937ba2945f669368661a329fb4c053",
    ),
]


@dataclass(frozen=True)
class Parsed:
    params: EspParams
    seq: int
    iv: bytes
    plaintext: bytes
    packet: bytes  # SPI | seq low | IV | ciphertext | tag


def parse(case: Case) -> Parsed:
    key, nonce, aad = (bytes.fromhex(x) for x in (case.key, case.nonce, case.aad))
    plaintext, ciphertext = bytes.fromhex(case.plaintext), bytes.fromhex(case.ciphertext)
    esn = len(aad) == 12
    if esn:
        spi, high, low = struct.unpack("!III", aad)
    else:
        (spi, low), high = struct.unpack("!II", aad), 0
    params = EspParams(spi, EncrId.AES_GCM_16, key + nonce[:4], esn=esn)
    packet = struct.pack("!II", spi, low) + nonce[4:] + ciphertext
    return Parsed(params, high << 32 | low, nonce[4:], plaintext, packet)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vector_is_consistent_with_plain_aes_gcm(case: Case) -> None:
    # Guards the typing-in: the draft's numbers through cryptography alone.
    key, nonce, aad = (bytes.fromhex(x) for x in (case.key, case.nonce, case.aad))
    out = AESGCM(key).encrypt(nonce, bytes.fromhex(case.plaintext), aad)
    assert out == bytes.fromhex(case.ciphertext)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_seal_is_byte_exact(case: Case) -> None:
    v = parse(case)
    pad_len, next_header = v.plaintext[-2], v.plaintext[-1]
    inner = v.plaintext[: len(v.plaintext) - 2 - pad_len]
    out = OutboundSa(v.params, last_seq=v.seq - 1, iv_source=lambda seq: v.iv)
    assert out.seal(inner, next_header) == v.packet
    assert out.seq == v.seq


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decrypt_is_byte_exact(case: Case) -> None:
    v = parse(case)
    inb = InboundSa(v.params)
    assert inb.decrypt(v.packet, v.seq) == v.plaintext
    forged = bytearray(v.packet)
    forged[-1] ^= 0x80
    assert inb.decrypt(bytes(forged), v.seq) is None
    if v.params.esn:  # the high half is in the AAD though never sent
        assert inb.decrypt(v.packet, v.seq ^ (1 << 40)) is None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_open_verifies_icv_then_drops_non_tunnel_payload(case: Case) -> None:
    v = parse(case)
    inb = InboundSa(v.params)
    if v.seq > 1:
        inb.replay.update(v.seq - 1)  # traffic so far, so ESN infers the right high half
    with pytest.raises(EspDrop) as info:
        inb.open(v.packet)
    assert info.value.reason is DropReason.MALFORMED  # next header 1: not tunnel mode
    assert inb.replay.top == v.seq  # the ICV passed, so the window moved
    assert inb.drops[DropReason.BAD_ICV] == 0
    with pytest.raises(EspDrop) as again:
        inb.open(v.packet)
    assert again.value.reason is DropReason.REPLAY
