"""TrustStore's revocation hook: a revoked end entity or intermediate fails validation."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gatewayd.p2s.revocation import parse_revocation_list
from ike.auth.certs import TrustStore
from ike.errors import AuthenticationError
from tests.ike import pki

NOW = pki.NOW


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_ca("CN=Rev Root, O=Example", key=pki.cached_key("p256", 10))


@pytest.fixture(scope="module")
def sub(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, "CN=Rev Sub, O=Example", key=pki.cached_key("p256", 11))


@pytest.fixture(scope="module")
def alice(sub: pki.Issued) -> pki.Issued:
    return pki.issue(sub, "CN=alice, O=Example", key=pki.cached_key("p256", 12))


def listing(*certs: x509.Certificate) -> set[int]:
    return {c.serial_number for c in certs}


def store_revoking(root: pki.Issued, *revoked: x509.Certificate) -> TrustStore:
    serials = listing(*revoked)
    return TrustStore([root.cert], revoked=lambda c: c.serial_number in serials)


def test_no_hook_and_empty_hook_accept(
    root: pki.Issued, sub: pki.Issued, alice: pki.Issued
) -> None:
    expected = [alice.cert, sub.cert, root.cert]
    assert TrustStore([root.cert]).validate(alice.cert, [sub.cert], NOW) == expected
    assert store_revoking(root).validate(alice.cert, [sub.cert], NOW) == expected


def test_revoked_end_entity(root: pki.Issued, sub: pki.Issued, alice: pki.Issued) -> None:
    store = store_revoking(root, alice.cert)
    with pytest.raises(AuthenticationError, match=r"certificate revoked: CN=alice, O=Example"):
        store.validate(alice.cert, [sub.cert], NOW)


def test_revoked_intermediate(root: pki.Issued, sub: pki.Issued, alice: pki.Issued) -> None:
    store = store_revoking(root, sub.cert)
    with pytest.raises(AuthenticationError, match=r"certificate revoked: CN=Rev Sub, O=Example"):
        store.validate(alice.cert, [sub.cert], NOW)


def test_trust_anchor_is_not_checked(root: pki.Issued, sub: pki.Issued, alice: pki.Issued) -> None:
    # Listing the root does nothing: the operator distrusts a root by removing it.
    store = store_revoking(root, root.cert)
    assert store.validate(alice.cert, [sub.cert], NOW)[-1] == root.cert


def test_other_path_through_unrevoked_intermediate(root: pki.Issued, alice: pki.Issued) -> None:
    # Two intermediates with the same name and key (a re-issued CA certificate): revoking
    # the old one must not block the path through the new one.
    key = pki.cached_key("p256", 11)
    old = pki.make_intermediate(root, "CN=Rev Sub, O=Example", key=key)
    new = pki.make_intermediate(root, "CN=Rev Sub, O=Example", key=key)
    store = store_revoking(root, old.cert)
    path = store.validate(alice.cert, [old.cert, new.cert], NOW)
    assert path[1] == new.cert
    with pytest.raises(AuthenticationError, match="certificate revoked: CN=Rev Sub"):
        store.validate(alice.cert, [old.cert], NOW)


def test_forged_revoked_intermediate_reports_the_signature(
    root: pki.Issued, alice: pki.Issued
) -> None:
    other = pki.make_ca("CN=Other Root", key=pki.cached_key("p256", 13))
    forged = pki.issue(
        root,
        "CN=Rev Sub, O=Example",
        is_ca=True,
        key=pki.cached_key("p256", 11),
        signer=other.key,
    )
    store = store_revoking(root, forged.cert)
    with pytest.raises(AuthenticationError, match="does not verify"):
        store.validate(alice.cert, [forged.cert], NOW)


def test_broken_hook_fails_closed(root: pki.Issued, sub: pki.Issued, alice: pki.Issued) -> None:
    def broken(cert: x509.Certificate) -> bool:
        raise RuntimeError("db gone")

    store = TrustStore([root.cert], revoked=broken)
    with pytest.raises(AuthenticationError, match=r"revocation check failed .*RuntimeError"):
        store.validate(alice.cert, [sub.cert], NOW)


def test_with_the_p2s_revocation_list(root: pki.Issued, sub: pki.Issued, alice: pki.Issued) -> None:
    fp = alice.cert.fingerprint(hashes.SHA256())
    rl = parse_revocation_list(f"sha256:{fp.hex()}\n")
    store = TrustStore([root.cert], revoked=rl)
    with pytest.raises(AuthenticationError, match="certificate revoked: CN=alice"):
        store.validate(alice.cert, [sub.cert], NOW)
    rl_sub = parse_revocation_list(f"serial:{sub.cert.serial_number:x}\n")
    with pytest.raises(AuthenticationError, match="certificate revoked: CN=Rev Sub"):
        TrustStore([root.cert], revoked=rl_sub.is_revoked).validate(alice.cert, [sub.cert], NOW)


def test_revoked_end_entity_issued_by_the_root(root: pki.Issued) -> None:
    bob = pki.issue(root, "CN=bob", key=pki.cached_key("p256", 14))
    with pytest.raises(AuthenticationError, match="certificate revoked: CN=bob"):
        store_revoking(root, bob.cert).validate(bob.cert, [], NOW)


def test_revoked_certificate_of_an_unknown_ca_is_an_unknown_ca(alice: pki.Issued) -> None:
    stranger = pki.make_ca("CN=Stranger", key=pki.cached_key("p256", 15))
    with pytest.raises(AuthenticationError, match="unknown CA"):
        store_revoking(stranger, alice.cert).validate(alice.cert, [], NOW)
