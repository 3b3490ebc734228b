"""EAP pass-through to RADIUS, engine to engine: a client session (our EapClient) logs in
to a gateway session whose EAP backend relays to a RADIUS server (RFC 3579).

The server here is an in-memory one built on our codec and our EAP-MSCHAPv2 server; the
same paths run against a real FreeRADIUS in tests/netns/test_radius_freeradius.py.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from ike.codec import open_protected
from ike.constants import NotifyType
from ike.eap.method import EapAnswer, EapServer, RelayEapBackend, backend_factory, relay_backend
from ike.eap.mschapv2 import nt_password_hash
from ike.eap.packets import FAILURE, SUCCESS, Eap
from ike.errors import AuthenticationError
from ike.payloads import EapPayload, Message
from ike.radius import authenticator as ra
from ike.radius import packet as rp
from ike.radius.client import RadiusClient
from ike.radius.relay import Outcome, RadiusEapRelay
from ike.session import events as ev
from ike.session.session import IkeSession, State
from tests.ike import pki
from tests.ike.harness import Pair
from tests.ike.test_p2s_eap import client, gateway, pool

SECRET = b"radius-secret"
SERVER = ("10.1.0.5", 1812)
USERS = {"alice": nt_password_hash("alice-secret")}


class FakeRadius:
    """A RADIUS server: EAP-MSCHAPv2 with our EapServer, real authenticators and keys."""

    def __init__(self, secret: bytes = SECRET, seed: int = 7) -> None:
        self.secret = secret
        self.rng = random.Random(seed).randbytes
        self.conversations: dict[bytes, EapServer] = {}
        self.requests: list[rp.Packet] = []
        self.msk: bytes | None = None

    def answer(self, data: bytes) -> bytes:
        req = rp.decode(data)
        assert ra.verify_request(req, SECRET), "Message-Authenticator of the request"
        assert req.attributes[0][0] == rp.MESSAGE_AUTHENTICATOR  # first, against Blast-RADIUS
        self.requests.append(req)
        eap = rp.join_eap(req)
        assert eap is not None
        state = req.get(rp.STATE)
        if state is None:  # a new conversation, starting with the client's identity
            server = EapServer(USERS.get, self.rng, b"radius")
            server.identifier = Eap.decode(eap).identifier
        else:
            server = self.conversations.pop(state)
        try:
            out = server.step(eap)
        except AuthenticationError:
            return self._reply(rp.ACCESS_REJECT, req, Eap(FAILURE, server.identifier).encode())
        if out.code == SUCCESS:
            assert server.msk is not None
            self.msk = server.msk
            keys = [
                rp.vsa(311, rp.MS_MPPE_RECV_KEY, self._key(server.msk[:16], req)),
                rp.vsa(311, rp.MS_MPPE_SEND_KEY, self._key(server.msk[16:32], req)),
            ]
            return self._reply(rp.ACCESS_ACCEPT, req, out.encode(), keys)
        state = self.rng(8)
        self.conversations[state] = server
        return self._reply(rp.ACCESS_CHALLENGE, req, out.encode(), [(rp.STATE, state)])

    def _key(self, key: bytes, req: rp.Packet) -> bytes:
        return ra.encrypt_mppe_key(key, self.secret, req.authenticator, b"\x80" + self.rng(1))

    def _reply(
        self,
        code: int,
        req: rp.Packet,
        eap: bytes,
        extra: list[tuple[int, bytes]] = [],  # noqa: B006
    ) -> bytes:
        attrs = [(rp.MESSAGE_AUTHENTICATOR, bytes(16)), *rp.split_eap(eap), *extra]
        packet = rp.Packet(code, req.identifier, bytes(16), attrs)
        return ra.sign_response(packet, self.secret, req.authenticator)


def relay(tries: int = 3) -> RadiusEapRelay:
    rc = RadiusClient(SERVER, SECRET, timeout=3.0, tries=tries, rng=random.Random(1).randbytes)
    return RadiusEapRelay(rc, nas_identifier="gw-test")


class RadiusPair:
    """A client/gateway Pair whose gateway relays EAP through ``relay`` to ``server``."""

    def __init__(
        self,
        ca: pki.Issued,
        password: str,
        server: FakeRadius | None,
        user: str = "alice",
        factory: Callable[[IkeSession], Any] = relay_backend,
    ) -> None:
        self.backends: list[Any] = []

        def backend(s: IkeSession) -> Any:
            self.backends.append(factory(s))
            return self.backends[-1]

        gw = gateway(ca, pool())
        gw.eap_users, gw.eap_backend = None, backend
        self.p = Pair(client(ca, user, password), gw, now=pki.NOW.timestamp())
        self.relay = relay()
        self.server = server
        self.seen = 0
        self.pending: list[ev.EapPending] = []
        self.relayed: list[bytes] = []  # Access-Requests on the wire

    def step(self) -> None:
        """Deliver IKE, relay new EapPending events, feed server answers back."""
        p = self.p
        while True:
            p.run()
            new = [e for e in p.events_r[self.seen :] if isinstance(e, ev.EapPending)]
            self.seen = len(p.events_r)
            if not new:
                return
            for e in new:
                self.pending.append(e)
                assert self.relay.submit(p.r, e, p.now) is None
            self.flush()

    def flush(self) -> None:
        for d in self.relay.datagrams_to_send():
            self.relayed.append(d)
            if self.server is not None:
                out = self.relay.receive(self.server.answer(d), SERVER, self.p.now)
                assert out is not None and out.key is self.p.r
                self.p.r.eap_answer(out.answer, self.p.now)

    def connect(self) -> None:
        self.p.i.initiate(self.p.now)
        self.step()


def last_answer(p: Pair) -> Message:
    """The gateway's last IKE message, decrypted with the client's keys."""
    data = [d for direction, d in p.wire.log if direction == "r->i"][-1]
    assert p.i.sa is not None and p.i.sa.keys is not None
    return open_protected(data, p.i.sa.keys.crypto_in)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("CN=Test Root,O=gatewayd", "p256")


def test_login_through_radius_with_the_same_msk(ca: pki.Issued) -> None:
    server = FakeRadius()
    rp_ = RadiusPair(ca, "alice-secret", server)
    rp_.connect()
    p = rp_.p
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    # Both AUTH payloads verified with the MSK, and the gateway's is the server's.
    (backend,) = rp_.backends
    assert backend.msk == server.msk and backend.msk is not None and len(backend.msk) == 64
    assert p.of("r", ev.VirtualIpAssigned)[0].identity == "alice"
    assert p.of("i", ev.ChildSaUp) and p.of("r", ev.ChildSaUp)
    # Identity locally, then three relayed rounds: identity, MS-CHAPv2 response, success ack.
    assert [e.identity for e in rp_.pending] == ["alice"] * 3
    first, second, third = server.requests
    assert first.get(rp.STATE) is None and second.get(rp.STATE) is not None
    assert third.get(rp.STATE) is not None and third.get(rp.STATE) != second.get(rp.STATE)
    assert first.get(rp.USER_NAME) == b"alice"
    assert first.get(rp.NAS_IDENTIFIER) == b"gw-test"
    assert first.get(rp.SERVICE_TYPE) == (2).to_bytes(4, "big")
    assert first.get(rp.NAS_PORT_TYPE) == (5).to_bytes(4, "big")
    assert first.get(rp.CALLING_STATION_ID) == p.addr_i[0].encode()
    assert rp_.relay.results["accept"] == 1 and rp_.relay.results["challenge"] == 2


def test_wrong_password_is_refused_with_authentication_failed(ca: pki.Issued) -> None:
    rp_ = RadiusPair(ca, "wrong", FakeRadius())
    rp_.connect()
    p = rp_.p
    assert p.i.state is State.CLOSED and p.r.state is State.CLOSED
    (gw,) = p.of("r", ev.AuthFailed)
    assert "rejected the user (Access-Reject)" in gw.reason and "10.1.0.5:1812" in gw.reason
    assert "EAP-Failure" in p.of("i", ev.AuthFailed)[0].reason
    assert not p.of("r", ev.VirtualIpAssigned)
    answer = last_answer(p)
    assert answer.notify(NotifyType.AUTHENTICATION_FAILED) is not None
    eap = answer.get(EapPayload)
    assert eap is not None and Eap.decode(eap.data).code == FAILURE


def test_retransmits_are_absorbed_while_the_server_thinks(ca: pki.Issued) -> None:
    rp_ = RadiusPair(ca, "alice-secret", None)  # nothing answers for now
    rp_.connect()
    p = rp_.p
    assert len(rp_.pending) == 1 and len(rp_.relayed) == 1
    before = len(p.wire.log)
    p.advance(2.5)  # the client retransmits its IKE_AUTH request
    assert len(p.wire.log) > before
    assert p.r.drops["retransmit_while_deferred"] >= 1
    assert len(p.of("r", ev.EapPending)) == 1  # not processed twice
    rp_.server = FakeRadius()
    out = rp_.relay.receive(rp_.server.answer(rp_.relayed[0]), SERVER, p.now)  # late answer
    assert out is not None
    p.r.eap_answer(out.answer, p.now)
    rp_.step()
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED


def test_radius_timeout_refuses_after_timeout_times_tries(ca: pki.Issued) -> None:
    rp_ = RadiusPair(ca, "alice-secret", None)
    rp_.connect()
    p, r = rp_.p, rp_.relay
    t0 = p.now
    sent = len(rp_.relayed)
    outcomes: list[Outcome] = []
    while not outcomes:
        at = r.get_timer()
        assert at is not None
        p.now = at
        outcomes = r.handle_timer(at)
        sent += len(r.datagrams_to_send())
    assert p.now - t0 == pytest.approx(9.0) and sent == 3
    (o,) = outcomes
    assert o.key is p.r
    p.r.eap_answer(o.answer, p.now)
    p.run()
    reason = p.of("r", ev.AuthFailed)[0].reason
    assert reason == "RADIUS server 10.1.0.5:1812 did not answer (3 tries, 3 s apart)"
    assert p.r.state is State.CLOSED and p.i.state is State.CLOSED
    assert "EAP-Failure" in p.of("i", ev.AuthFailed)[0].reason
    assert last_answer(p).notify(NotifyType.AUTHENTICATION_FAILED) is not None
    assert r.get_timer() is None and r.results["timeout"] == 1


def test_responses_that_are_not_authentic_are_dropped_and_counted(ca: pki.Issued) -> None:
    rp_ = RadiusPair(ca, "alice-secret", None)
    rp_.connect()
    (request,) = rp_.relayed
    r = rp_.relay
    forged = FakeRadius(secret=b"not-the-secret").answer(request)
    assert r.receive(forged, SERVER, rp_.p.now) is None
    assert r.drops["bad_response_authenticator"] == 1
    good = FakeRadius().answer(request)
    assert r.receive(good, ("10.9.9.9", 1812), rp_.p.now) is None
    assert r.receive(good, (SERVER[0], 1813), rp_.p.now) is None
    assert r.drops["unknown_source"] == 2
    assert r.receive(b"\x02\x00", SERVER, rp_.p.now) is None
    assert r.drops["malformed"] == 1
    wrong_id = bytearray(good)
    wrong_id[1] ^= 0x55
    assert r.receive(bytes(wrong_id), SERVER, rp_.p.now) is None
    assert r.drops["unknown_identifier"] == 1
    out = r.receive(good, SERVER, rp_.p.now)  # the genuine answer still counts
    assert out is not None and out.answer.error is None
    assert r.receive(good, SERVER, rp_.p.now) is None  # a duplicate: no longer outstanding
    assert r.drops["unknown_identifier"] == 2


def test_late_answer_for_a_closed_session_is_ignored(ca: pki.Issued) -> None:
    rp_ = RadiusPair(ca, "alice-secret", None)
    rp_.connect()
    p = rp_.p
    p.advance(IkeSession.HALF_OPEN_TIMEOUT + 1)  # the gateway gives up on the half-open SA
    assert p.r.state is State.CLOSED
    rp_.relay.forget(p.r)
    assert rp_.relay.get_timer() is None
    p.r.eap_answer(EapAnswer(message=b"\x01\x02\x00\x05\x01"), p.now)
    assert p.r.drops["late_eap_answer"] == 1 and not p.r.datagrams_to_send()


def answer_to(request: bytes, code: int, attrs: list[tuple[int, bytes]]) -> bytes:
    req = rp.decode(request)
    packet = rp.Packet(code, req.identifier, bytes(16), [(80, bytes(16)), *attrs])
    return ra.sign_response(packet, SECRET, req.authenticator)


def test_many_sessions_share_256_identifiers_and_a_bounded_queue() -> None:
    rc = RadiusClient(SERVER, SECRET, timeout=1.0, tries=2, max_queued=10, rng=os.urandom)
    relay_ = RadiusEapRelay(rc)
    pending = ev.EapPending(b"\x02\x01\x00\x06\x01a", "a", ("192.0.2.9", 4500), ("0.0.0.0", 4500))
    for key in range(266):
        assert relay_.submit(key, pending, 0.0) is None
    sent = relay_.datagrams_to_send()
    assert len(sent) == 256 and len({d[1] for d in sent}) == 256 and len(rc.queue) == 10
    refused = relay_.submit("one too many", pending, 0.0)
    assert refused is not None and "too many requests queued" in (refused.answer.error or "")
    # One answer frees an identifier: a queued request goes out with it.
    reply = answer_to(sent[0], rp.ACCESS_ACCEPT, rp.split_eap(b"\x03\x01\x00\x04"))
    out = relay_.receive(reply, SERVER, 0.5)
    assert out is not None and out.key == 0
    assert "MS-MPPE" in (out.answer.error or "")  # Accept without keys: refused
    assert len(relay_.datagrams_to_send()) == 1 and len(rc.queue) == 9
    relay_.forget(1)  # its session went away: the identifier goes to the next in line
    assert len(relay_.datagrams_to_send()) == 1 and len(rc.queue) == 8 and 1 not in rc.by_key
    relay_.forget(265)  # a queued one
    assert len(rc.queue) == 7 and not relay_.datagrams_to_send()
    # Nobody answers: everything times out within timeout x tries, nothing left behind.
    timed_out = []
    while (at := relay_.get_timer()) is not None:
        timed_out += relay_.handle_timer(at)
        relay_.datagrams_to_send()
    assert len(timed_out) == 263 and not rc.outstanding and not rc.by_key and not rc.queue


def test_one_session_times_out_while_another_is_answered() -> None:
    relay_ = relay(tries=2)
    pending = ev.EapPending(b"\x02\x01\x00\x06\x01a", "a", ("192.0.2.9", 4500), ("10.0.0.1", 500))
    relay_.submit("lost", pending, 0.0)
    relay_.submit("kept", pending, 0.0)
    lost, kept = relay_.datagrams_to_send()
    assert rp.decode(lost).get(rp.NAS_IP_ADDRESS) == bytes([10, 0, 0, 1])
    relay_.handle_timer(3.0)
    relay_.datagrams_to_send()
    challenge = [*rp.split_eap(b"\x01\x02\x00\x06\x1a\x01"), (rp.STATE, b"s1")]
    reply = answer_to(kept, rp.ACCESS_CHALLENGE, challenge)
    out = relay_.receive(reply, SERVER, 4.0)
    assert out is not None and out.key == "kept" and out.answer.context == b"s1"
    assert [o.key for o in relay_.handle_timer(6.0)] == ["lost"]


def test_relay_backend_checks_eap_framing() -> None:
    b = RelayEapBackend(random.Random(1).randbytes)
    ident = Eap.decode(b.start())
    with pytest.raises(AuthenticationError, match="EAP-Identity"):
        b.step(Eap(2, ident.identifier, 26, b"x").encode())
    with pytest.raises(AuthenticationError, match="not a response"):
        b.step(Eap(2, (ident.identifier + 1) & 0xFF, 1, b"alice").encode())
    assert b.step(Eap(2, ident.identifier, 1, b"alice").encode()) is None
    assert b.username == "alice" and b.pending is not None
    with pytest.raises(AuthenticationError, match="without a key"):
        b.resume(EapAnswer(message=Eap(SUCCESS, 9).encode()))
    assert b.msk is None
    # Keys without EAP-Success (RFC 3579 wants one; some servers omit it): we add it.
    b.step(Eap(2, ident.identifier, 1, b"alice").encode())
    success = Eap.decode(b.resume(EapAnswer(msk=bytes(range(64)), identity="alice")))
    assert success.code == SUCCESS and success.identifier == ident.identifier
    assert b.msk == bytes(range(64))
    assert "K" not in repr(EapAnswer(msk=b"K" * 64))  # keys stay out of logs
    with pytest.raises(AuthenticationError, match="not a response"):
        b.step(Eap(2, ident.identifier, 26, b"x").encode())  # nothing follows a success


def _relayed_login(methods: list[int], accept: EapAnswer) -> RelayEapBackend:
    """A relay that saw the client claim "alice", then the server run ``methods``."""
    b = RelayEapBackend(random.Random(2).randbytes)
    ident = Eap.decode(b.start())
    b.step(Eap(2, ident.identifier, 1, b"alice").encode())
    for k, method in enumerate(methods):
        request = Eap.decode(b.resume(EapAnswer(message=Eap(1, 40 + k, method, b"x").encode())))
        b.step(Eap(2, request.identifier, method, b"y").encode())
    b.resume(accept)
    return b


def test_who_logged_in_through_radius_is_who_the_server_says() -> None:
    """The outer EAP-Identity is the client's claim. A tunneled method (PEAP 25, TTLS 21,
    EAP-TLS 13) authenticates an inner name: the Access-Accept's User-Name is who logged
    in, and without one the login is refused (a user could otherwise claim another's
    name, take over that name's lease and virtual IP)."""
    key = bytes(range(64))
    named = _relayed_login([25], EapAnswer(message=Eap(SUCCESS, 41).encode(), msk=key,
                                           identity="bob"))  # fmt: skip
    assert named.username == "bob" and named.msk == key
    with pytest.raises(AuthenticationError, match="without naming the user"):
        _relayed_login([25], EapAnswer(message=Eap(SUCCESS, 41).encode(), msk=key))
    with pytest.raises(AuthenticationError, match="without naming the user"):
        _relayed_login([], EapAnswer(msk=key))  # accepted before any method ran
    # EAP-MSCHAPv2 checks the very name it was given: the outer identity stands.
    plain = _relayed_login([26], EapAnswer(message=Eap(SUCCESS, 41).encode(), msk=key))
    assert plain.username == "alice"
    with pytest.raises(AuthenticationError, match="unusable user"):
        _relayed_login([26], EapAnswer(message=Eap(SUCCESS, 41).encode(), msk=key,
                                       identity="bad\nname"))  # fmt: skip


def test_local_users_log_in_here_and_the_others_through_radius(ca: pki.Issued) -> None:
    local = {"bob": nt_password_hash("bob-secret")}
    factory = backend_factory(local.get, True, "gw")
    assert factory is not None
    bob = RadiusPair(ca, "bob-secret", FakeRadius(), user="bob", factory=factory)
    bob.connect()
    assert bob.p.i.state is State.ESTABLISHED and bob.p.r.state is State.ESTABLISHED
    assert bob.relayed == [] and bob.backends[0].local is not None  # RADIUS never asked
    alice = RadiusPair(ca, "alice-secret", FakeRadius(), factory=factory)
    alice.connect()
    assert alice.p.i.state is State.ESTABLISHED and alice.p.r.state is State.ESTABLISHED
    assert len(alice.relayed) == 3 and alice.backends[0].local is None
    wrong = RadiusPair(ca, "wrong", FakeRadius(), user="bob", factory=factory)
    wrong.connect()
    assert "wrong password for user 'bob'" in wrong.p.of("r", ev.AuthFailed)[0].reason
    assert wrong.relayed == []  # a local user's failure is not retried at the server
    assert backend_factory(None, False, "gw") is None


def test_signed_garbage_from_the_server_never_raises() -> None:
    """Authentic responses (right secret) with broken contents: an error answer each."""
    rng = random.Random(11)
    pieces = [
        (rp.EAP_MESSAGE, b"\x01\x02\x00\x06\x1a\x01"),
        (rp.EAP_MESSAGE, b"\x03\x02\x00\x04"),
        (rp.EAP_MESSAGE, b"\x02\x02\x00\x09"),
        (rp.STATE, b"s"),
        rp.vsa(311, rp.MS_MPPE_RECV_KEY, b"\x80\x01" + bytes(16)),
        rp.vsa(311, rp.MS_MPPE_SEND_KEY, b"\x00\x01" + bytes(15)),
        (rp.VENDOR_SPECIFIC, b"\x00\x00\x01\x37\x11\xff"),
        (rp.REPLY_MESSAGE, b"\xff\x00bye\n"),
    ]
    outcomes = 0
    for i in range(400):
        r = relay()
        pending = ev.EapPending(b"\x02\x01\x00\x06\x01a", "a", ("192.0.2.9", 500), ("::", 500))
        r.submit(i, pending, 0.0)
        (request,) = r.datagrams_to_send()
        code = rng.choice([rp.ACCESS_ACCEPT, rp.ACCESS_REJECT, rp.ACCESS_CHALLENGE])
        attrs = rng.sample(pieces, rng.randrange(0, 4))
        out = r.receive(answer_to(request, code, attrs), SERVER, 0.0)
        assert out is not None and out.key == i
        a = out.answer
        assert (a.error is None) == bool(a.message), a  # either an EAP packet or a reason
        if code == rp.ACCESS_REJECT:
            assert a.error is not None and "\n" not in a.error
        outcomes += 1
    assert outcomes == 400


def test_access_request_attributes() -> None:
    r = relay()
    eap = b"\x02\x07\x01\x2c" + bytes(296)  # 300 octets: two EAP-Message attributes
    attrs = r.attributes(
        ev.EapPending(eap, "alice", ("2001:db8::9", 4500), ("2001:db8::1", 4500), b"st")
    )
    assert [v for t, v in attrs if t == rp.EAP_MESSAGE] == [eap[:253], eap[253:]]
    assert (rp.NAS_IPV6_ADDRESS, bytes.fromhex("20010db8" + "00" * 11 + "01")) in attrs
    assert (rp.CALLING_STATION_ID, b"2001:db8::9") in attrs and (rp.STATE, b"st") in attrs
    odd = r.attributes(ev.EapPending(eap, "alice", ("192.0.2.1", 500), ("gw", 500)))
    assert not {rp.NAS_IP_ADDRESS, rp.NAS_IPV6_ADDRESS, rp.STATE} & {t for t, _ in odd}
    huge = ev.EapPending(b"\x02\x07\x10\x00" + bytes(4092), "a", ("192.0.2.1", 500), ("::", 500))
    refused = r.submit("k", huge, 0.0)
    assert refused is not None and "too long" in (refused.answer.error or "")
    assert r.get_timer() is None and not r.datagrams_to_send()
