"""Fuzz targets, the same under CPython and MicroPython.

Each target has `name`, `seeds` (the genuine inputs mutants start from) and
`run(data, rng)`, which feeds one input.  Outcomes: success, or an exception
of the project's typed-error family (atls.errors.ATLSError: AlertError,
DecodeError, Drop, AuthError, ...) - both fine; `Violation` when an
acceptance property fails (a modified sealed or signed input accepted, a
decode that does not re-encode to its bytes); anything else is a bug.

The link conversation (`converse`) is a scripted exchange between a client
and a server Link with dummy flights and a fixed key block: deterministic, so
a mutant is injected at the same point of the same conversation on both
interpreters.  TLS and session targets replay flights and datagrams recorded
by corpus.py (CPython, against the service's OpenSSL engine) with the
client's random source seeded (`SeededRng`), so the recorded server replies
match the client's hellos byte for byte.
"""

from atls import pairing, wire, xbee
from atls.channel import aad
from atls.crypto.backend import sha256
from atls.errors import ATLSError
from atls.link import Link, LinkConfig
from atls.protocol import (
    ACK,
    CDATA,
    CLOSE,
    DATA,
    ERROR,
    HS_ACK,
    HS_END,
    TLS_AES_128_CCM_8_SHA256,
    TLS_AES_128_CCM_SHA256,
    TLS_AES_128_GCM_SHA256,
)


class Violation(Exception):
    """An acceptance property failed (the fuzz run reports it as a failure)."""


def allowed(exc):
    return isinstance(exc, ATLSError)


class SeededRng:
    """rng(n) for TLSClient: SHA-256(seed || counter) blocks."""

    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, size):
        out = b""
        while len(out) < size:
            out += sha256(self.seed + self.n.to_bytes(4, "big")).digest()
            self.n += 1
        return out[:size]


# -- wire ----------------------------------------------------------------------
def reencode(p):
    """The bytes wire.encode* gives back for a decoded tuple (the codec must
    be injective: a decode that re-encodes differently accepted a variant)."""
    t, sid, a, b, c = p
    if t <= HS_END:
        return wire.encode_hs(sid, a, b, bytes(c), t == HS_END)
    if t == HS_ACK:
        return wire.encode(HS_ACK, sid, bytes((a,)) + bytes(c))
    if t == ERROR:  # reason, or RESET || token (§5)
        return wire.encode(ERROR, sid, bytes((a,)) + (b"" if c is None else bytes(c)))
    return aad(t, sid, a, b) + bytes(c)  # DATA, CDATA: a is the seq's low byte


SEALED = (DATA, ACK, CLOSE, CDATA)


class WireTarget:
    name = "wire"

    def __init__(self, seeds):
        self.seeds = seeds

    def run(self, data, rng):
        tag = (None, 8, 16)[rng.below(3)]
        p = wire.decode(data, tag, 1280)
        if reencode(p) != bytes(data):
            raise Violation("wire: decode does not re-encode to the input")
        if tag is not None and p[0] in SEALED and len(p[4]) < tag:
            raise Violation("wire: sealed packet shorter than its tag accepted")


# -- pairing -------------------------------------------------------------------
class PairingTarget:
    """Every decoded packet must re-encode to its bytes (pairing.encode is
    decode's inverse): a decode that accepts two spellings of one message
    (a length ignored, a trailing byte kept, a tag cut) is a violation."""

    name = "pairing"

    def __init__(self, seeds):
        self.seeds = seeds

    def run(self, data, rng):
        r = pairing.decode(data)
        try:
            back = pairing.encode(r)
        except ValueError:
            raise Violation("pairing: decode accepted what the encoder refuses: %r" % (r,))
        if back != bytes(data):
            raise Violation("pairing: decode does not re-encode to the input")


# -- XBee ----------------------------------------------------------------------
def unescape(data):
    # AP=2: a raw 0x7E is always a start delimiter, even after a 0x7D
    out = bytearray()
    esc = False
    for x in data:
        if esc and x != 0x7E:
            out.append(x ^ 0x20)
            esc = False
        elif x == 0x7D:
            esc = True
        else:
            esc = False
            out.append(x)
    return bytes(out)


def rebuild(f):
    """Frame data rebuilt from xbee.parse(f) with the builders, or None."""
    r = xbee.parse(f)
    k = r[0]
    if k == "rx":
        return xbee.rx_packet(r[1], r[2], r[4], r[3])
    if k == "tx_status":
        return xbee.tx_status(r[1], r[2], r[3], r[4], r[5])
    if k == "at_response":
        return xbee.at_response(r[1], r[2], r[3], r[4])
    if k == "modem_status":
        return xbee.modem_status(r[1])
    if k == "tx_request":
        return xbee.tx_request(r[1], r[2], r[6], r[3], r[4], r[5])
    if k == "at_command":
        return xbee.at_command(r[1], r[2], r[3])
    return bytes(f)


class XBeeTarget:
    """seeds: byte streams, AP=1 (even index) and AP=2 (odd index) alike;
    each input is decoded in both modes, whole and cut at random points."""

    name = "xbee"

    def __init__(self, seeds):
        self.seeds = seeds

    def run(self, data, rng):
        for escaped in (False, True):
            whole = xbee.FrameDecoder(escaped)
            frames = whole.feed(data)
            cut = xbee.FrameDecoder(escaped)
            got = []
            i = 0
            while i < len(data):
                j = i + 1 + rng.below(max(1, len(data) // 3))
                got += cut.feed(data[i:j])
                i = j
            if got != frames or cut.counters != whole.counters:
                raise Violation("xbee: frames or counters depend on how the stream is cut")
            plain = unescape(data) if escaped else bytes(data)
            for f in frames:
                if escaped and xbee.encode_frame(f, True) not in data:
                    # only escaping may differ (an unescaped 0x11/0x13)
                    if xbee.encode_frame(f) not in plain:
                        raise Violation("xbee AP=2: a frame not in the stream decoded")
                elif not escaped and xbee.encode_frame(f) not in data:
                    raise Violation("xbee AP=1: a frame not in the stream decoded")
                try:
                    if rebuild(f) != f:
                        raise Violation("xbee: parse does not rebuild to the frame")
                except ATLSError:
                    pass


# -- link ----------------------------------------------------------------------
KEY_BLOCK = bytes(range(56))
SUITES = (TLS_AES_128_CCM_8_SHA256, TLS_AES_128_CCM_SHA256, TLS_AES_128_GCM_SHA256)
FLIGHTS = (bytes(range(150)), bytes(i & 0xFF for i in range(7, 407)), bytes(80))
MESSAGES = {"client": (b"reading 1", b"reading 2", b"x" * 40), "server": (b"ok", b"cfg" * 9)}


class Stop(Exception):
    pass


def converse(suite, hook):
    """The scripted exchange; every delivery goes through
    hook(role, index, link, datagram, now) before the link receives it.
    Returns the messages each side received.  A flight that is not the
    genuine one ends the conversation (TLS would fail on it)."""
    c = Link("client", LinkConfig(mtu=64))
    s = Link("server", LinkConfig(mtu=64), session_id=0x1234)
    count = {"client": 0, "server": 0}
    got = {"client": [], "server": []}

    def handle(dst, events, now):
        for ev in events:
            if ev[0] == "message":
                got[dst.role].append(ev[1])
            if ev[0] != "flight":
                continue
            if dst is s and ev[1] == FLIGHTS[0] and s.channel is None:
                s.send_flight(FLIGHTS[1], now)
            elif dst is c and ev[1] == FLIGHTS[1] and c.channel is None:
                c.send_flight(FLIGHTS[2], now)
                c.start_channel(KEY_BLOCK, suite)
                for m in MESSAGES["client"]:
                    c.send(m, now)
            elif dst is s and ev[1] == FLIGHTS[2] and s.channel is None:
                s.start_channel(KEY_BLOCK, suite)
                for m in MESSAGES["server"]:
                    s.send(m, now)
            else:
                raise Stop()

    now = 0
    c.send_flight(FLIGHTS[0], now)
    for step in range(60):
        now += 40
        for src, dst in ((c, s), (s, c)):
            for d in src.datagrams(now):
                count[dst.role] += 1
                handle(dst, hook(dst.role, count[dst.role] - 1, dst, d, now) or (), now)
                dst.receive(d, now)
                handle(dst, dst.events(), now)
        if step == 30 and c.state in ("handshake", "open"):
            c.close()
        if c.state == "closed" and s.state == "closed":
            break
    return got


def record_link():
    """[(suite, role, index, datagram)] of the scripted conversations."""
    out = []
    for suite in SUITES:

        def hook(role, i, link, d, now):
            out.append((suite, role, i, bytes(d)))

        got = converse(suite, hook)
        if got["server"] != list(MESSAGES["client"]) or got["client"] != list(MESSAGES["server"]):
            raise RuntimeError("link conversation incomplete")
    return out


class LinkTarget:
    """seeds: the datagrams of the conversations (three suites); the mutant
    is delivered to the role that received its seed just before that seed's
    turn (so before or after the channel started), then the conversation
    goes on.  A sealed mutant that is not byte-identical to a genuine packet
    must be dropped and change nothing, and only genuine messages may ever
    come out."""

    name = "link"

    def __init__(self, record):
        self.record = record
        self.seeds = [r[3] for r in record]
        self.genuine = set(self.seeds)
        self.pick = 0

    def run(self, data, rng):
        suite, role, at, seed = self.record[self.pick]
        forged = None
        if rng.chance(2):
            forged = forge(suite, role, seed, data, rng)
            if forged is not None:
                data = forged

        def hook(r, i, link, d, now):
            if r == role and i == at:
                return self.inject(link, data, now, forged is not None)

        try:
            got = converse(suite, hook)
        except Stop:
            return
        for r in ("client", "server"):
            peer = "server" if r == "client" else "client"
            for m in got[r]:
                if m not in MESSAGES[peer] and (forged is None or m != FORGED):
                    raise Violation("link: a message that was never sent came out")
            if len(got[r]) != len(set(got[r])):
                raise Violation("link: a message was delivered twice")

    def inject(self, link, data, now, forged=False):
        # the mutant's events go back to the script
        drops = sum(link.drops.values())
        ch = link.channel
        state = link.state
        link.receive(data, now)
        ev = link.events()
        if ch is None or forged or bytes(data) in self.genuine:
            return ev
        try:
            t = wire.decode(data, ch.tag_len)[0]
        except ATLSError:
            return ev
        if t in SEALED:
            if sum(link.drops.values()) != drops + 1 or ev or link.state != state:
                raise Violation("link: a modified sealed packet was accepted: %r" % (ev,))
        return ev


FORGED = b"forged"
_FIELD = (0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 0x7FFF, 0xFFFE, 0xFFFF)


def _field(rng, top):
    v = _FIELD[rng.below(len(_FIELD))] if rng.chance(2) else rng.below(top + 1)
    return min(v, top)


def forge(suite, role, seed, mutant, rng):
    """A sealed packet with fields the mutator never gets past the AEAD:
    sealed with the sender's keys (what a peer holding the keys could send),
    so the link's logic behind authentication is fuzzed too.  None if the
    seed is not a sealed packet."""
    from atls.channel import Channel

    if len(seed) < 3 or (seed[0] & 7) not in SEALED:
        return None
    t = seed[0] & 7
    sid = (seed[1] << 8) | seed[2]
    ch = Channel(KEY_BLOCK, suite, "server" if role == "client" else "client")
    if t == DATA:
        return ch.seal(DATA, sid, _field(rng, wire.MAX_SEQ), 0, FORGED)
    if t == CDATA:  # sealed channel byte: the control channel (HELLO) or any other
        c = (0, 1, 2, 255)[rng.below(4)]
        return ch.seal(CDATA, sid, _field(rng, wire.MAX_SEQ), 0, bytes((c,)) + FORGED)
    ch.ack_seq = ch.close_seq = _field(rng, wire.MAX_COUNTER)
    if t == ACK:
        bm = rng.next() if rng.chance(2) else (0, 1, 0x80000000, 0xFFFFFFFF)[rng.below(4)]
        return ch.seal(ACK, sid, _field(rng, 0xFFFF), bm)
    return ch.seal(CLOSE, sid, rng.below(256))


# -- TLS client ----------------------------------------------------------------
class TLSTarget:
    """seeds: recorded server flights; each case knows the client config and
    the flights before it.  A mutant that completes the handshake (or is
    accepted after it) must be byte-identical to the genuine flight."""

    name = "tls"

    def __init__(self, cases, make_config):
        # cases: [(mode, seed, [flights])]; a seed per flight
        self.cases = cases
        self.make_config = make_config
        self.seeds = []
        self.where = []
        for c, case in enumerate(cases):
            for j, f in enumerate(case[2]):
                self.seeds.append(f)
                self.where.append((c, j))
        self.pick = 0

    def run(self, data, rng):
        c, j = self.where[self.pick]
        mode, seed, flights = self.cases[c]
        whole = self.feed(mode, seed, flights[:j], data, None)
        if rng.chance(4):
            # the same bytes cut at random points (records and handshake
            # messages split across receive() calls) must end the same way
            cuts = [1 + rng.below(max(1, len(data))) for _ in range(1 + rng.below(4))]
            if not (self.feed(mode, seed, flights[:j], data, cuts) == whole):
                raise Violation("tls: the outcome depends on how the flight is cut")
        if isinstance(whole, AlertOutcome):
            raise whole.error
        if same_records(data, flights[j]):
            return
        if whole[0]:
            raise Violation("tls: a modified flight was accepted (%s, flight %d)" % (mode, j))

    def feed(self, mode, seed, before, data, cuts):
        """(accepted, state) or the AlertError; accepted: the mutant
        completed the handshake or added a ticket."""
        from atls.tls.client import TLSClient

        tls = TLSClient(self.make_config(mode), rng=SeededRng(seed))
        tls.start(0)
        for f in before:
            tls.receive(f, 0)
            tls.data_to_send()
        was = tls.connected
        tickets = len(tls.tickets)
        try:
            a = 0
            for b in sorted(cuts or ()) + [len(data)]:
                if b > a:
                    tls.receive(data[a:b], 0)
                    a = b
        except ATLSError as e:
            return AlertOutcome(e)
        tls.data_to_send()
        return ((tls.connected and not was) or len(tls.tickets) != tickets, tls.state)


class AlertOutcome:
    # a feed that ended in a typed error, compared by type and alert code
    def __init__(self, e):
        self.error = e
        self.code = (type(e).__name__, getattr(e, "description", None))

    def __eq__(self, other):
        return isinstance(other, AlertOutcome) and other.code == self.code


def _plain_versions_zeroed(d):
    # RFC 8446 §5.1: legacy_record_version "MUST be ignored for all purposes"
    # in a plaintext record (a protected record's header is its AAD)
    d = bytearray(d)
    i = 0
    while i + 5 <= len(d):
        if d[i] != 0x17:
            d[i + 1] = d[i + 2] = 0
        i += 5 + ((d[i + 3] << 8) | d[i + 4])
    return bytes(d)


def same_records(m, g):
    """m is the genuine flight g up to ignored record versions, possibly
    followed by an incomplete record (which the client only buffers)."""
    m = _plain_versions_zeroed(m)
    g = _plain_versions_zeroed(g)
    if not m.startswith(g):
        return False
    tail = m[len(g) :]
    return len(tail) < 5 or len(tail) < 5 + ((tail[3] << 8) | tail[4])


# -- session -------------------------------------------------------------------
# TLS records a mutation may insert whole into a handshake fragment
TLS_TOKENS = (
    b"\x15\x03\x03\x00\x02\x01\x00",  # warning close_notify (RFC 8446 §6.1)
    b"\x15\x03\x03\x00\x02\x02\x28",  # fatal handshake_failure
    b"\x14\x03\x03\x00\x01\x01",  # change_cipher_spec (§5, tolerated)
)


class SessionTarget:
    """seeds: the service's datagrams of recorded sessions (handshake, with
    and without a HelloRetryRequest, and messages both ways); the mutant goes
    in before its seed's turn, the rest of the genuine session follows.  The
    session must take any input without raising, and only genuine messages
    may come out."""

    name = "session"
    tokens = TLS_TOKENS

    def __init__(self, records, make_session, messages):
        # records: [(config mode, [(now_ms, datagram)] service -> device)]
        self.records = records
        self.make_session = make_session
        self.messages = set(messages)
        self.seeds = []
        self.where = []
        for r, (_, rec) in enumerate(records):
            for k, (_, d) in enumerate(rec):
                self.seeds.append(d)
                self.where.append((r, k))
        self.pick = 0

    def run(self, data, rng):
        r, k = self.where[self.pick]
        mode, record = self.records[r]
        s = self.make_session(mode)
        s.connect(0)
        s.datagrams(0)
        for now, d in record[:k]:
            s.receive(d, now)
            s.datagrams(now)
        now = record[k][0]
        s.events()
        s.receive(data, now)
        s.datagrams(now + 1)
        s.next_timer_ms()
        self.check(s)
        # the rest of the genuine session after the mutant (a state the
        # mutant left behind must not break on genuine input)
        for now, d in record[k:]:
            s.receive(d, now + 2)
            s.datagrams(now + 2)
            self.check(s)

    def check(self, s):
        for ev in s.events():
            if ev[0] == "message" and ev[1] not in self.messages:
                raise Violation("session: a message that was never sent came out")


# -- X.509 / DER -----------------------------------------------------------------
class X509Target:
    """seeds: the service's certificate chain (leaf, CA) as DER.  A mutated
    leaf that parses and verifies against the CA must be the genuine one (a
    mutated CA is only parsed: anchors are configuration, trusted as given)."""

    name = "x509"

    def __init__(self, leaf, ca):
        self.seeds = [leaf, ca]
        self.leaf = leaf
        self.ca = ca
        self.pick = 0

    def run(self, data, rng):
        from atls import x509

        x509.Certificate(data)
        if self.pick:
            return
        x509.verify_chain([data], anchors=[self.ca], hostname="service.local")
        if bytes(data) != self.leaf:
            raise Violation("x509: a modified certificate verified")
