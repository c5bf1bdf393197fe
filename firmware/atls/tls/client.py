"""Sans-I/O TLS 1.3 client (RFC 8446), sized for microcontrollers.

Bytes in (`receive`), bytes out (`data_to_send`), no sockets and no clock: the
caller passes `now_ms` where ticket ages need it.  States and transitions
follow Appendix A.1: this module handles START -> WAIT_SH -> WAIT_EE ->
WAIT_FINISHED -> CONNECTED; the certificate states (WAIT_CERT_CR, WAIT_CERT,
WAIT_CV) are handled by atls.tls.auth, and HelloRetryRequest,
NewSessionTicket and KeyUpdate by atls.tls.rare.  Those two modules are
imported only when a handshake reaches them, so a PSK handshake never loads
their bytecode (which sits in the heap when firmware runs from .mpy).  A
message that is not valid in the current state is unexpected_message.  Any
failure raises AlertError (with the alert record, if one is due, queued in
`data_to_send`) and leaves the client CLOSED.

Scope: full handshakes with (EC)DHE only (psk_dhe_ke for PSKs, never psk_ke),
no 0-RTT, no middlebox-compatibility mode (empty session id, no CCS sent; a
received CCS is tolerated during the handshake), application data is not
carried in TLS records: after CONNECTED the one product is `exporter()`.

RAM: records and handshake messages are processed through memoryviews of
the received bytes (a tail is kept only when a record or message is split);
each key schedule stage, the transcript and the handshake record keys are
dropped as soon as the next stage exists.
"""

from atls.buffer import Buffer
from atls.crypto.backend import random_bytes, sha256
from atls.crypto.transcript import Transcript
from atls.errors import AlertError, CryptoError, UsageError
from atls.tls import keys
from atls.tls import messages as m

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


START = "START"
WAIT_SH = "WAIT_SH"
WAIT_EE = "WAIT_EE"
WAIT_CERT_CR = "WAIT_CERT_CR"
WAIT_CERT = "WAIT_CERT"
WAIT_CV = "WAIT_CV"
WAIT_FINISHED = "WAIT_FINISHED"
CONNECTED = "CONNECTED"
CLOSED = "CLOSED"

# §5.1 ContentType
_CT_CCS = const(20)
_CT_ALERT = const(21)
_CT_HANDSHAKE = const(22)
_CT_APPDATA = const(23)
_MAX_RECORD = const(16640)  # 2^14 + 256 (§5.2)
# §4 HandshakeType
_SERVER_HELLO = const(2)
_ENCRYPTED_EXTENSIONS = const(8)
_FINISHED = const(20)
# §4.2 ExtensionType
_EXT_SERVER_NAME = const(0)
_EXT_SUPPORTED_GROUPS = const(10)
_EXT_SIGNATURE_ALGORITHMS = const(13)
_EXT_PRE_SHARED_KEY = const(41)
_EXT_SUPPORTED_VERSIONS = const(43)
_EXT_COOKIE = const(44)
_EXT_PSK_KEY_EXCHANGE_MODES = const(45)
_EXT_KEY_SHARE = const(51)
# extensions a server must not put in EncryptedExtensions (§4.2 table)
_EE_FORBIDDEN = const(
    (
        _EXT_KEY_SHARE,
        _EXT_PRE_SHARED_KEY,
        _EXT_SUPPORTED_VERSIONS,
        _EXT_COOKIE,
        _EXT_PSK_KEY_EXCHANGE_MODES,
        _EXT_SIGNATURE_ALGORITHMS,
    )
)
# signature_algorithms we offer (§4.2.3): ecdsa_secp256r1_sha256,
# rsa_pss_rsae_sha256, ed25519, and rsa_pkcs1_sha256 for certificates only;
# atls.tls.auth verifies exactly these
_SIG_ALGS = const(b"\x00\x08\x04\x03\x08\x04\x08\x07\x04\x01")
# §6 AlertDescription
_UNEXPECTED_MESSAGE = const(10)
_RECORD_OVERFLOW = const(22)
_HANDSHAKE_FAILURE = const(40)
_ILLEGAL_PARAMETER = const(47)
_DECODE_ERROR = const(50)
_DECRYPT_ERROR = const(51)
_MISSING_EXTENSION = const(109)

DEFAULT_SUITES = (
    keys.TLS_AES_128_CCM_8_SHA256,
    keys.TLS_AES_128_CCM_SHA256,
    keys.TLS_AES_128_GCM_SHA256,
)
DEFAULT_GROUPS = (keys.X25519, keys.SECP256R1)


class ClientConfig:
    """What a device is configured with.  Authentication mode follows from it:
    `psk` (external PSK, psk_dhe_ke), `ca_certs`/`spki_pins` (server
    certificate, `cert_mode`), plus optionally `client_certs`/`client_key`
    (P-256 device identity).  `ticket` (an atls.tls.rare.Ticket from
    TLSClient.tickets) resumes an earlier session once."""

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
    ):
        if not suites or [s for s in suites if s not in keys.SUITE_NAMES]:
            raise UsageError("suites must be a non-empty list of supported suites")
        if not groups or [g for g in groups if g not in keys.GROUP_NAMES]:
            raise UsageError("groups must be a non-empty list of x25519/secp256r1")
        if (psk is None) != (psk_identity is None):
            raise UsageError("psk and psk_identity go together")
        if psk is not None and not 16 <= len(psk) <= 64:
            raise UsageError("psk must be 16..64 bytes")
        if psk is None and ticket is None and not ca_certs and not spki_pins:
            raise UsageError("no way to authenticate the server: give a psk, ca_certs or spki_pins")
        if bool(client_certs) != (client_key is not None):
            raise UsageError("client_certs and client_key go together")
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


class TLSClient:
    def __init__(self, config, rng=None, hello_override=None):
        """`rng(n)` replaces the OS random source and `hello_override` (a list
        of ClientHello handshake messages) the built ClientHellos: both exist
        only so tests can replay RFC 8448 traces byte for byte."""
        self.config = config
        self._rng = rng or random_bytes
        self._hello_override = list(hello_override) if hello_override else None
        self.state = START
        self.error = None
        self.suite = None
        self.group = None
        self.mode = None  # "psk_dhe", "resumed" or "cert"
        self.hrr = False
        self.tickets = []  # atls.tls.rare.Ticket, newest last
        self._out = bytearray()
        self._in = b""  # an incomplete record
        self._hs = b""  # an incomplete handshake message
        self._read = None  # keys.RecordProtection, server -> client
        self._write = None  # client -> server
        self._tag_len = 0
        # Transcript-Hash values needed: through ServerHello, EncryptedExtensions
        # (or the server's CertificateVerify: for its Finished), server Finished
        # (application secrets, and our Finished MAC unless we sent a
        # Certificate after it) and our Finished (resumption master); in
        # certificate mode + the server's CertificateVerify + our Finished after
        # a CertificateRequest, + our CertificateVerify with a device identity
        self._th = Transcript(4 + 2 * config.cert_mode + bool(config.client_certs))
        self._ks = None
        self._share = None  # (group, private key, public key)
        self._psks = []  # (identity, obfuscated_age, psk, is_resumption) offered
        self._cookie = None  # from a HelloRetryRequest (§4.2.2)
        self._hrr_prefix = b""  # message_hash + HelloRetryRequest (§4.4.1)
        self._cert_request = None  # (context, schemes) of a CertificateRequest
        self._leaf = None  # the server's validated certificate until its CertificateVerify
        self._exp_master = None
        self._res_master = None
        self._now_ms = None

    # ---- public API -------------------------------------------------------
    @property
    def connected(self):
        return self.state == CONNECTED

    def start(self, now_ms=None):
        """Queue the first ClientHello."""
        if self.state != START:
            raise UsageError("start() called twice")
        self._now_ms = now_ms
        if self.config.cert_mode:
            # certificate mode always needs these: load them now, before the
            # handshake's buffers fragment the heap (large code and qstr blocks)
            from atls.tls import auth  # noqa: F401
        group = self.config.groups[0]
        self._share = (group,) + keys.key_share(group, self._rng)
        self._send_client_hello()
        self.state = WAIT_SH

    def data_to_send(self):
        out = bytes(self._out)
        self._out = bytearray()
        return out

    def receive(self, data, now_ms=None):
        """Feed bytes from the server.  Raises AlertError on any failure."""
        if self.state == CLOSED:
            raise UsageError("connection is closed")
        if self.state == START:
            raise UsageError("start() first")
        if now_ms is not None:
            self._now_ms = now_ms
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
                if self._read is not None:
                    if ctype != _CT_APPDATA:
                        raise AlertError(_UNEXPECTED_MESSAGE)  # plaintext record after keys
                    ctype, body = self._read.open(header, body)
                elif ctype == _CT_APPDATA:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # protected record before keys
                if ctype == _CT_HANDSHAKE:
                    self._on_handshake_bytes(body)
                elif ctype == _CT_ALERT:
                    if len(body) != 2:
                        raise AlertError(_DECODE_ERROR)  # alert length
                    self.state = CLOSED
                    err = AlertError(body[1])  # the peer's alert
                    err.from_peer = True
                    self.error = err
                    if body[1] != 0:  # close_notify ends quietly; anything else is fatal
                        raise err
                elif ctype != _CT_APPDATA or self.state != CONNECTED:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # content type
                # ATLS carries no application data in TLS records: ignored
        except AlertError as e:
            self._fail(e)
            raise
        except (CryptoError, ValueError, IndexError, KeyError, TypeError) as e:
            # A bug in a parser must not crash the device: report internal_error.
            err = AlertError(80, "internal error: %r" % (e,))
            self._fail(err)
            raise err
        finally:
            self._in = bytes(mv[pos:])

    def exporter(self, label, context=b"", length=32):
        """TLS-Exporter (§7.5): the one product of the handshake for ATLS."""
        if self._exp_master is None:
            raise UsageError("exporter needs a completed handshake")
        return keys.exporter(self._exp_master, label, context, length)

    def close(self):
        """Queue close_notify and close."""
        if self.state not in (CLOSED, START):
            self._send_alert(0, 1)
        self.state = CLOSED

    # ---- records ----------------------------------------------------------
    def _on_handshake_bytes(self, data):
        """Split handshake messages (§4) and run each through the state machine."""
        if self._hs:
            data = self._hs + bytes(data)
        mv = memoryview(data)
        n = len(mv)
        pos = 0
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
                keys_before = self._read
                st = self.state
                if st == WAIT_SH and mtype == _SERVER_HELLO:
                    self._on_server_hello(msg)
                elif st == WAIT_EE and mtype == _ENCRYPTED_EXTENSIONS:
                    exts = m.pull_extensions(Buffer(msg[4:]))
                    for t in _EE_FORBIDDEN:
                        if t in exts:
                            raise AlertError(_ILLEGAL_PARAMETER)  # extension t in EE
                    self._th.update(msg)
                    self.state = WAIT_CERT_CR if self.mode == "cert" else WAIT_FINISHED
                elif st == WAIT_FINISHED and mtype == _FINISHED:
                    self._on_finished(msg)
                elif st == WAIT_CERT_CR or st == WAIT_CERT or st == WAIT_CV:
                    from atls.tls import auth

                    auth.on_message(self, mtype, msg)
                elif st == CONNECTED:
                    from atls.tls import rare

                    rare.on_message(self, mtype, msg)
                else:
                    raise AlertError(_UNEXPECTED_MESSAGE, "message %d in state %s" % (mtype, st))
                # §5.1: handshake messages must not span a key change
                if self._read is not keys_before and pos < n:
                    raise AlertError(_UNEXPECTED_MESSAGE)  # data across a key change
        finally:
            self._hs = bytes(mv[pos:])

    def _send_alert(self, description, level=2):
        alert = bytes((level, description))
        if self._write is not None:
            self._out.extend(self._write.seal(_CT_ALERT, alert, self._tag_len))
        else:
            self._out.extend(b"\x15\x03\x03\x00\x02" + alert)

    def _fail(self, err):
        if self.state != CLOSED and not getattr(err, "from_peer", False):
            try:
                self._send_alert(err.description)
            except Exception:  # never let alert sending mask the real error
                pass
        self.state = CLOSED
        self.error = err
        self._ks = self._share = self._th = self._leaf = None
        self._psks = []

    # ---- ClientHello --------------------------------------------------------
    def _send_client_hello(self):
        """Queue a ClientHello (§4.1.2) as a plaintext record; the second one
        after a HelloRetryRequest reuses the PSK offers of the first."""
        cfg = self.config
        if self._hello_override:
            msg = self._hello_override.pop(0)
        else:
            psks = self._psks
            if not self.hrr:
                if cfg.ticket is not None:
                    from atls.tls import rare

                    psks.append(rare.ticket_offer(cfg.ticket, self._now_ms))
                if cfg.psk is not None:
                    psks.append((cfg.psk_identity, 0, cfg.psk, False))
            exts = bytearray()
            name = cfg.server_name
            if name:
                if isinstance(name, str):
                    name = name.encode()
                exts += m.ext(_EXT_SERVER_NAME, m.vec(2, b"\x00" + m.vec(2, name)))
            exts += m.ext(_EXT_SUPPORTED_VERSIONS, b"\x02\x03\x04")
            exts += m.ext(_EXT_SUPPORTED_GROUPS, m.u16_list(cfg.groups))
            if cfg.cert_mode or cfg.ticket is not None:
                exts += m.ext(_EXT_SIGNATURE_ALGORITHMS, _SIG_ALGS)
            group, _, public = self._share
            exts += m.ext(_EXT_KEY_SHARE, m.vec(2, group.to_bytes(2, "big") + m.vec(2, public)))
            if self._cookie is not None:
                exts += m.ext(_EXT_COOKIE, m.vec(2, self._cookie))
            if psks:
                exts += m.ext(_EXT_PSK_KEY_EXCHANGE_MODES, b"\x01\x01")  # psk_dhe_ke
                ids = bytearray()
                for ident, age, _, _ in psks:
                    ids += m.vec(2, ident) + age.to_bytes(4, "big")
                binders_len = 2 + 33 * len(psks)
                exts += m.ext(_EXT_PRE_SHARED_KEY, m.vec(2, ids) + bytes(binders_len))
            msg = bytearray(m.client_hello(self._rng(32), cfg.suites, exts))
            if psks:
                self._patch_binders(msg, binders_len)
        n = len(msg)
        self._out.extend(bytes((_CT_HANDSHAKE, 3, 3 if self.hrr else 1, n >> 8, n & 0xFF)))
        self._out.extend(msg)
        self._th.update(msg)

    def _patch_binders(self, msg, binders_len):
        """§4.2.11.2: each binder is an HMAC over the transcript up to and
        including the truncated ClientHello (without the binders list)."""
        pos = len(msg) - binders_len
        h = sha256(self._hrr_prefix)
        h.update(memoryview(msg)[:pos])
        thash = h.digest()
        msg[pos] = (binders_len - 2) >> 8
        msg[pos + 1] = (binders_len - 2) & 0xFF
        pos += 2
        for _, _, psk, resumption in self._psks:
            bk = keys.KeySchedule(psk).binder_key(resumption)
            msg[pos] = 32
            msg[pos + 1 : pos + 33] = keys.finished_mac(bk, thash)
            pos += 33

    # ---- server flight ------------------------------------------------------
    def _on_server_hello(self, msg):
        cfg = self.config
        suite, hrr, group, peer_key, idx, cookie = m.server_hello(msg[4:])
        if suite not in cfg.suites or (self.suite and suite != self.suite):
            raise AlertError(_ILLEGAL_PARAMETER)  # cipher suite not offered
        self.suite = suite
        if hrr:
            from atls.tls import rare

            return rare.on_hello_retry(self, msg, group, cookie)
        share = self._share
        if group is None:
            raise AlertError(_MISSING_EXTENSION)  # no key_share (psk_ke is not offered)
        if group != share[0]:
            raise AlertError(_ILLEGAL_PARAMETER)  # key share group
        psk = None
        if idx is not None:
            if idx >= len(self._psks):
                raise AlertError(_ILLEGAL_PARAMETER)  # selected_identity out of range
            _, _, psk, resumption = self._psks[idx]
            self.mode = "resumed" if resumption else "psk_dhe"
        elif not cfg.cert_mode:
            raise AlertError(_HANDSHAKE_FAILURE)  # server did not accept our PSK
        else:
            self.mode = "cert"
        self._psks = []
        self.group = group
        self._tag_len = keys.suite_tag_len(suite)
        self._th.update(msg)
        self._ks = keys.KeySchedule(psk)
        secret = keys.shared_secret(group, share[1], peer_key)
        self._share = None  # ephemeral: used exactly once
        c_hs, s_hs = self._ks.handshake_traffic(secret, self._th.digest())
        self._read = keys.RecordProtection(suite, s_hs)
        self._write = keys.RecordProtection(suite, c_hs)  # alerts from here on
        self.state = WAIT_EE

    def _on_finished(self, msg):
        """Check the server Finished (§4.4.4), answer with our flight and
        switch both directions to the application traffic keys."""
        th = self._th
        if not keys.equal(msg[4:], keys.finished_mac(self._read.secret, th.digest())):
            raise AlertError(_DECRYPT_ERROR)  # server Finished does not verify
        th.update(msg)
        ks = self._ks
        h = th.digest()
        c_ap, s_ap, self._exp_master = ks.application_traffic(h)
        self._read = None  # the server handshake keys are done
        flight = b""
        if self._cert_request is not None:
            from atls.tls import auth

            flight = auth.client_auth(self)  # Certificate (+ CertificateVerify)
            h = th.digest()
        fin = m.push_handshake(_FINISHED, keys.finished_mac(self._write.secret, h))
        self._out.extend(self._write.seal(_CT_HANDSHAKE, flight + fin, self._tag_len))
        th.update(fin)
        self._res_master = ks.resumption_master(th.digest())
        self._ks = self._th = self._write = None
        self._read = keys.RecordProtection(self.suite, s_ap)
        self._write = keys.RecordProtection(self.suite, c_ap)
        self.state = CONNECTED
