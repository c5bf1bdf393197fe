"""Sans-I/O TLS 1.3 client (RFC 8446), sized for microcontrollers: the public
API (ClientConfig, TLSClient) and the record layer.

Bytes in (`receive`), bytes out (`data_to_send`), no sockets and no clock: the
caller passes `now_ms` (the device clock, ms) to start() and receive(), which
measure a ticket's age against its lifetime (§4.6.1).  States are those of
Appendix A.1 plus CLOSED (atls.tls.handshake, re-exported here).  Records
are split here (§5.1) and each handshake message is looked up in
atls.tls.handshake.TRANSITIONS by (state, type); anything not there is
unexpected_message, and the row's handler works on the HandshakeContext the
client hands it.  Any failure the peer caused raises AlertError (with the
alert record, if one is due, queued in `data_to_send`) and leaves the client
CLOSED; so does any alert from the peer before CONNECTED, close_notify
included (afterwards close_notify closes quietly), and receive() on a closed
client.  A mistake of the caller (UsageError, e.g. an unusable client_key)
is raised as it is, after internal_error went to the peer.

Scope: full handshakes with (EC)DHE only (psk_dhe_ke for PSKs, never psk_ke),
no 0-RTT, no middlebox-compatibility mode (empty session id, no CCS sent; a
received CCS is tolerated during the handshake), application data is not
carried in TLS records: after CONNECTED the one product is `exporter()`.

Stale and forged flights (issue 14): with `discards` > 0 (atls.session),
a server flight that fails before any of its protected records opened - a
late flight of an earlier attempt, or one injected on the path: nothing in
it was made with our key share and PSK - is discarded as if never received,
as DTLS drops records that do not open: back in WAIT_SH as right after the
first ClientHello (the transcript rebuilt from its bytes: MicroPython's
sha256 has no copy), `discarded` counts it, and the caller forgets the
flight (atls.link.Link.refuse_flight); `discard()` does the same for a
flight that left the client waiting.  At most `discards` per connection
(each costs a key agreement), then the failure is raised as before.  Never
discarded: the server's alerts, anything once a record opened, flights after
a HelloRetryRequest.  The ephemeral key is kept until a record opens.

RAM: records and handshake messages are processed through memoryviews of
the received bytes (a tail is kept only when a record or message is split);
each key schedule stage, the transcript and the handshake record keys are
dropped as soon as the next stage exists.
"""

from atls import protocol
from atls.crypto.backend import random_bytes
from atls.crypto.transcript import Transcript
from atls.errors import AlertError, CryptoError, UsageError
from atls.tls.handshake import (  # noqa: F401  (states re-exported: the public API)
    CLOSED,
    CONNECTED,
    START,
    WAIT_CERT,
    WAIT_CERT_CR,
    WAIT_CV,
    WAIT_EE,
    WAIT_FINISHED,
    WAIT_SH,
    HandshakeContext,
    client_hello,
    transition,
)
from atls.tls.keyshare import key_share
from atls.tls.schedule import exporter

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# §5.1 ContentType
_CT_CCS = const(20)
_CT_ALERT = const(21)
_CT_HANDSHAKE = const(22)
_CT_APPDATA = const(23)
_MAX_RECORD = const(16640)  # 2^14 + 256 (§5.2)
_CLIENT_HELLO = const(1)  # §4 HandshakeType
# §6 AlertDescription
_UNEXPECTED_MESSAGE = const(10)
_RECORD_OVERFLOW = const(22)
_DECODE_ERROR = const(50)
_INTERNAL_ERROR = const(80)

DEFAULT_SUITES = (
    protocol.TLS_AES_128_CCM_8_SHA256,
    protocol.TLS_AES_128_CCM_SHA256,
    protocol.TLS_AES_128_GCM_SHA256,
)
DEFAULT_GROUPS = (protocol.X25519, protocol.SECP256R1)


class ClientConfig:
    """What a device is configured with.  Authentication mode follows from it:
    `psk` (external PSK, psk_dhe_ke), `ca_certs`/`spki_pins` (server
    certificate, `cert_mode`), plus optionally `client_certs`/`client_key`
    (P-256 device identity).  `ca_certs` need `server_name` (checked against
    the certificate's dNSName SANs, or its iPAddress SANs for an IPv4/IPv6
    literal, which is then not sent as SNI: RFC 6066 §3) unless `spki_pins`
    authenticate the server; `check_hostname=False` (with a server_name) is
    an explicit opt-out of the name check, and without a name checked only
    the pins, not the CAs, authenticate.  `ticket` (an atls.tls.tickets.Ticket from
    TLSClient.tickets) resumes an earlier session once.  `trace`, when given,
    is called as trace(old_state, message_type, new_state) on every state
    change: message_type is the handshake type sent or received (a
    HelloRetryRequest is atls.tls.handshake.HELLO_RETRY_REQUEST), None for a
    failure or close()."""

    def __init__(
        self,
        suites=DEFAULT_SUITES,
        groups=DEFAULT_GROUPS,
        psk_identity=None,
        psk=None,
        ca_certs=(),
        spki_pins=(),
        server_name=None,
        check_hostname=True,
        client_certs=(),
        client_key=None,
        ticket=None,
        now=None,
        time_floor=None,
        max_handshake=4096,
        max_chain=3,
        max_ticket=512,
        trace=None,
    ):
        # checked without the name tables (atls.protocol_names): a device that
        # never prints a suite name never loads them
        try:
            for s in suites:
                protocol.suite_tag_len(s)
        except ValueError:
            suites = ()
        if not suites:
            raise UsageError("suites must be a non-empty list of supported suites")
        if not groups or [g for g in groups if g != protocol.X25519 and g != protocol.SECP256R1]:
            raise UsageError("groups must be a non-empty list of x25519/secp256r1")
        if (psk is None) != (psk_identity is None):
            raise UsageError("psk and psk_identity go together")
        if psk is not None and not 16 <= len(psk) <= 64:
            raise UsageError("psk must be 16..64 bytes")
        if psk is None and ticket is None and not ca_certs and not spki_pins:
            raise UsageError("no way to authenticate the server: give a psk, ca_certs or spki_pins")
        # a CA vouches for names: without one to check, any certificate it
        # issued would pass (certificate mode needs server_name or spki_pins)
        if ca_certs and not server_name and not spki_pins:
            raise UsageError("ca_certs need server_name (or spki_pins) to authenticate the server")
        if ca_certs and check_hostname and not server_name:
            raise UsageError("check_hostname needs server_name")
        if bool(client_certs) != (client_key is not None):
            raise UsageError("client_certs and client_key go together")
        if trace is not None and not callable(trace):
            raise UsageError("trace must be callable")
        self.suites = tuple(suites)
        self.groups = tuple(groups)
        self.psk_identity = psk_identity
        self.psk = psk
        self.ca_certs = tuple(ca_certs)
        self.spki_pins = tuple(spki_pins)
        self.cert_mode = bool(ca_certs or spki_pins)
        self.server_name = server_name
        self.check_hostname = check_hostname
        self.client_certs = tuple(client_certs)
        self.client_key = client_key
        self.ticket = ticket
        self.now = now  # trusted time (s since 1970) or None: see atls.x509 on validity
        self.time_floor = time_floor  # e.g. firmware build time: rejects long-expired certs
        self.max_handshake = max_handshake
        self.max_chain = max_chain
        self.max_ticket = max_ticket
        self.trace = trace


class TLSClient:
    def __init__(self, config, rng=None, hello_override=None, discards=0):
        """`rng(n)` replaces the OS random source and `hello_override` (a list
        of ClientHello handshake messages) the built ClientHellos: both exist
        only so tests can replay RFC 8448 traces byte for byte.  `discards`:
        how many unauthenticated server flights may be discarded (module doc)."""
        self.config = config
        self.discards = discards
        self.discarded = 0
        self._ch = None  # (ClientHello, key share, PSK offers) until a record opens
        self.state = START
        self.error = None
        ctx = self._ctx = HandshakeContext(
            config, rng or random_bytes, list(hello_override) if hello_override else None
        )
        # negotiated so far (mirrored from the context on every transition)
        self.suite = self.group = self.mode = None
        self.hrr = False
        self.tickets = ctx.tickets  # atls.tls.tickets.Ticket, newest last
        self._in = b""  # an incomplete record
        self._hs = b""  # an incomplete handshake message

    # ---- public API -------------------------------------------------------
    @property
    def connected(self):
        return self.state == CONNECTED

    def start(self, now_ms=None):
        """Queue the first ClientHello."""
        if self.state != START:
            raise UsageError("start() called twice")
        ctx = self._ctx
        ctx.now_ms = now_ms
        if self.config.cert_mode:
            # certificate mode always needs these: load them now, before the
            # handshake's buffers fragment the heap (large code and qstr blocks)
            from atls.tls import auth  # noqa: F401
        group = self.config.groups[0]
        ctx.share = (group,) + key_share(group, ctx.rng)
        self._send_hello()

    def data_to_send(self):
        ctx = self._ctx
        out = bytes(ctx.out)
        ctx.out = bytearray()
        return out

    def receive(self, data, now_ms=None):
        """Feed bytes from the server.  Raises AlertError on any failure the
        peer caused, UsageError on the caller's; on a closed client an
        AlertError: the one that closed it, close_notify (0) after close()
        or the peer's close_notify, internal_error (80) after a UsageError."""
        if self.state == CLOSED:
            err = self.error
            if isinstance(err, AlertError):
                raise AlertError(err.description, "connection is closed")
            raise AlertError(_INTERNAL_ERROR if err else 0, "connection is closed")
        if self.state == START:
            raise UsageError("start() first")
        ctx = self._ctx
        if now_ms is not None:
            ctx.now_ms = now_ms
        if self._in:
            data = self._in + bytes(data)
        mv = memoryview(data)
        n = len(mv)
        pos = 0
        try:
            while n - pos >= 5 and self.state != CLOSED:
                ctype = mv[pos]
                end = pos + 5 + ((mv[pos + 3] << 8) | mv[pos + 4])
                if mv[pos + 1] != 3:
                    raise AlertError(_DECODE_ERROR)  # bad record version
                if end == pos + 5:
                    raise AlertError(_DECODE_ERROR)  # empty record
                if end - pos > 5 + _MAX_RECORD:
                    raise AlertError(_RECORD_OVERFLOW)  # record too long
                if end > n:
                    break
                header = bytes(mv[pos : pos + 5])
                body = mv[pos + 5 : end]
                pos = end
                if ctype == _CT_CCS:
                    # §5: tolerated only while the handshake runs, and only as 0x01
                    if body != b"\x01" or self.state == CONNECTED:
                        raise AlertError(_UNEXPECTED_MESSAGE)  # change_cipher_spec
                    continue
                if ctx.read is not None:
                    if ctype != _CT_APPDATA:
                        raise AlertError(_UNEXPECTED_MESSAGE)  # plaintext record after keys
                    ctype, body = ctx.read.open(header, body)
                    self._ch = None  # made with our key share: no discarding now
                elif ctype == _CT_APPDATA:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # protected record before keys
                if ctype == _CT_HANDSHAKE:
                    self._on_handshake_bytes(body)
                elif ctype == _CT_ALERT:
                    if len(body) != 2:
                        raise AlertError(_DECODE_ERROR)  # alert length
                    err = AlertError(body[1])  # the peer's alert
                    err.from_peer = True
                    # close_notify after the handshake ends quietly; any other
                    # alert, and any alert before CONNECTED (§6: the handshake
                    # did not complete), is fatal
                    if body[1] != 0 or self.state != CONNECTED:
                        raise err
                    self._close(err)
                elif ctype != _CT_APPDATA or self.state != CONNECTED:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # content type
                # ATLS carries no application data in TLS records: ignored
        except AlertError as e:
            if not getattr(e, "from_peer", False) and self.discard():
                pos = n  # the rest of the flight goes with it
                return
            self._fail(e)
            raise
        except UsageError as e:  # the caller's mistake (e.g. a bad client_key): theirs to see
            self._fail(e, _INTERNAL_ERROR)
            raise
        except (CryptoError, ValueError, IndexError, KeyError, TypeError) as e:
            # A bug in a parser must not crash the device: report internal_error.
            err = AlertError(_INTERNAL_ERROR, "internal error: %r" % (e,))
            self._fail(err)
            raise err
        finally:
            self._in = bytes(mv[pos:])

    def exporter(self, label, context=b"", length=32):
        """TLS-Exporter (§7.5): the one product of the handshake for ATLS."""
        if self._ctx.exp_master is None:
            raise UsageError("exporter needs a completed handshake")
        return exporter(self._ctx.exp_master, label, context, length)

    def discard(self):
        """Forget everything received since our first ClientHello, if none of
        it was authenticated and fewer than `discards` flights were: back in
        WAIT_SH as right after sending it (module doc).  True if done."""
        ch = self._ch
        if ch is None or self.discarded >= self.discards or self.state == CLOSED:
            return False
        ctx = self._ctx
        th = ctx.th = Transcript(ch[3])
        th.update(ch[0])
        ctx.share, ctx.psks = ch[1], ch[2]
        ctx.suite = ctx.group = ctx.mode = ctx.ks = ctx.read = ctx.write = None
        ctx.tag_len = 0
        ctx.out = bytearray()
        self._in = self._hs = b""
        self.discarded += 1
        self._enter(WAIT_SH, None)
        return True

    def close(self):
        """Queue close_notify and close."""
        if self.state not in (CLOSED, START):
            self._send_alert(0, 1)
        self._close(self.error)

    # ---- records and transitions --------------------------------------------
    def _on_handshake_bytes(self, data):
        """Split handshake messages (§4) and run each through TRANSITIONS."""
        if self._hs:
            data = self._hs + bytes(data)
        mv = memoryview(data)
        n = len(mv)
        pos = 0
        ctx = self._ctx
        try:
            while n - pos >= 4:
                mtype = mv[pos]
                end = pos + 4 + int.from_bytes(mv[pos + 1 : pos + 4], "big")
                if end - pos - 4 > self.config.max_handshake:
                    raise AlertError(_DECODE_ERROR)  # handshake message too large
                if end > n:
                    break
                msg = mv[pos:end]
                pos = end
                keys_before = ctx.read
                handler, nxt, mtype = transition(self.state, mtype, msg)
                self._enter(handler(ctx, msg) or nxt, mtype)
                if self.state == START:  # A.1: a HelloRetryRequest is answered at once
                    self._send_hello()
                # §5.1: handshake messages must not span a key change
                if ctx.read is not keys_before and pos < n:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # data across a key change
        finally:
            self._hs = bytes(mv[pos:])

    def _enter(self, state, mtype):
        ctx = self._ctx
        self.suite = ctx.suite
        self.group = ctx.group
        self.mode = ctx.mode
        self.hrr = ctx.hrr
        old = self.state
        self.state = state
        trace = self.config.trace
        if trace is not None:
            trace(old, mtype, state)

    def _send_hello(self):
        """START -> WAIT_SH: queue a ClientHello (§4.1.2) as a plaintext record."""
        ctx = self._ctx
        msg = client_hello(ctx)
        n = len(msg)
        ctx.out.extend(bytes((_CT_HANDSHAKE, 3, 3 if ctx.hrr else 1, n >> 8, n & 0xFF)))
        ctx.out.extend(msg)
        if self.discards and not ctx.hrr:  # what discard() goes back to
            self._ch = (msg, ctx.share, ctx.psks, ctx.th.forks_left)
        else:
            self._ch = None
        self._enter(WAIT_SH, _CLIENT_HELLO)

    def _send_alert(self, description, level=2):
        alert = bytes((level, description))
        ctx = self._ctx
        if ctx.write is not None:
            ctx.out.extend(ctx.write.seal(_CT_ALERT, alert, ctx.tag_len))
        else:
            ctx.out.extend(b"\x15\x03\x03\x00\x02" + alert)

    def _fail(self, err, description=None):
        if self.state != CLOSED and not getattr(err, "from_peer", False):
            try:
                self._send_alert(description or err.description)
            except Exception:  # never let alert sending mask the real error
                pass
        self._close(err)

    def _close(self, err):
        self.error = err
        ctx = self._ctx
        ctx.ks = ctx.share = ctx.th = ctx.leaf = self._ch = None  # handshake secrets
        ctx.psks = []
        if self.state != CLOSED:
            self._enter(CLOSED, None)
