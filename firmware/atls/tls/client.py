"""Sans-I/O TLS 1.3 client (RFC 8446), sized for microcontrollers.

Bytes in (`receive`), bytes out (`data_to_send`), no sockets and no clock: the
caller passes `now_ms` where ticket ages need it.  States and transitions
follow Appendix A.1; a message not in `_TRANSITIONS` for the current state is
unexpected_message.  Any failure raises AlertError (with the alert record, if
one is due, queued in `data_to_send`) and leaves the client CLOSED.

Scope: full handshakes with (EC)DHE only (psk_dhe_ke for PSKs, never psk_ke),
no 0-RTT, no middlebox-compatibility mode (empty session id, no CCS sent; a
received CCS is tolerated during the handshake), application data is not
carried in TLS records: after CONNECTED the one product is `exporter()`.
"""
from atls.buffer import Buffer, Writer
from atls.crypto.backend import random_bytes, sha256
from atls.crypto.transcript import Transcript
from atls.errors import AlertError, CryptoError, UsageError
from atls.tls import auth, keys
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

_CT_CCS = const(20)
_CT_ALERT = const(21)
_CT_HANDSHAKE = const(22)
_CT_APPDATA = const(23)
_MAX_RECORD = const(16384 + 256)

DEFAULT_SUITES = (keys.TLS_AES_128_CCM_8_SHA256, keys.TLS_AES_128_CCM_SHA256,
                  keys.TLS_AES_128_GCM_SHA256)
DEFAULT_GROUPS = (auth.X25519, auth.SECP256R1)


class Ticket:
    """A resumption ticket (§4.6.1) with its PSK; usable exactly once."""

    def __init__(self, nst, psk, suite, received_ms):
        self.identity = nst.ticket
        self.psk = psk
        self.age_add = nst.age_add
        self.lifetime = nst.lifetime
        self.suite = suite
        self.received_ms = received_ms
        self.used = False


class ClientConfig:
    """What a device is configured with.  Authentication mode follows from it:
    `psk` (external PSK, psk_dhe_ke), `ca_certs`/`spki_pins` (server
    certificate), plus optionally `client_certs`/`client_key` (P-256 device
    identity).  `ticket` resumes an earlier session once."""

    def __init__(self, suites=DEFAULT_SUITES, groups=DEFAULT_GROUPS, psk_identity=None,
                 psk=None, ca_certs=(), spki_pins=(), server_name=None, check_hostname=True,
                 client_certs=(), client_key=None, ticket=None, now=None, time_floor=None,
                 max_handshake=4096, max_chain=3, max_ticket=512):
        if not suites or [s for s in suites if s not in keys.SUITE_NAMES]:
            raise UsageError("suites must be a non-empty list of supported suites")
        if not groups or [g for g in groups if g not in auth.GROUP_NAMES]:
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

    @property
    def cert_mode(self):
        return bool(self.ca_certs or self.spki_pins)


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
        self.mode = None
        self.hrr = False
        self.tickets = []
        self.peer_certificate = None
        self._out = bytearray()
        self._in = bytearray()
        self._hs = bytearray()
        self._read = None
        self._write = None
        self._tag_len = 0
        self._th = Transcript(forks=8)
        self._ks = None
        self._share = None
        self._psks = []
        self._cookie = None
        self._hrr_prefix = b""
        self._cert_request = None
        self._c_hs = self._s_hs = self._c_ap = self._s_ap = None
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
        self._share = auth.KeyShare(self.config.groups[0], self._rng)
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
        try:
            self._in.extend(data)
            self._process_records()
        except AlertError as e:
            self._fail(e)
            raise
        except (CryptoError, ValueError, IndexError, KeyError, TypeError) as e:
            # A bug in a parser must not crash the device: report internal_error.
            err = AlertError(80, "internal error: %r" % (e,))
            self._fail(err)
            raise err

    def exporter(self, label, context=b"", length=32):
        """TLS-Exporter (§7.5): the one product of the handshake for ATLS."""
        if self._exp_master is None:
            raise UsageError("exporter needs a completed handshake")
        return keys.exporter(self._exp_master, label, context, length)

    def close(self):
        """Queue close_notify and close."""
        if self.state not in (CLOSED, START):
            self._send_alert(0, level=1)
        self.state = CLOSED

    # ---- records ----------------------------------------------------------
    def _process_records(self):
        buf = self._in
        pos = 0
        try:
            while len(buf) - pos >= 5 and self.state != CLOSED:
                ctype = buf[pos]
                length = (buf[pos + 3] << 8) | buf[pos + 4]
                if buf[pos + 1] != 3:
                    raise AlertError(m.ALERT_DECODE_ERROR, "bad record version")
                if length > _MAX_RECORD or length == 0:
                    raise AlertError(m.ALERT_RECORD_OVERFLOW if length else m.ALERT_DECODE_ERROR,
                                     "bad record length")
                if len(buf) - pos < 5 + length:
                    break
                header = bytes(buf[pos:pos + 5])
                body = bytes(buf[pos + 5:pos + 5 + length])
                pos += 5 + length
                self._on_record(ctype, header, body)
        finally:
            # MicroPython's bytearray has no slice deletion: keep the tail only
            self._in = buf[pos:] if pos else buf

    def _on_record(self, ctype, header, body):
        if ctype == _CT_CCS:
            # §5: tolerated only while the handshake runs, and only as 0x01
            if body != b"\x01" or self.state in (CONNECTED, START):
                raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "change_cipher_spec")
            return
        if self._read is not None:
            if ctype != _CT_APPDATA:
                raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "plaintext record after keys")
            ctype, body = self._read.open(header, body)
        elif ctype == _CT_APPDATA:
            raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "protected record before keys")
        if ctype == _CT_HANDSHAKE:
            self._on_handshake_bytes(body)
        elif ctype == _CT_ALERT:
            self._on_alert(body)
        elif ctype == _CT_APPDATA and self.state == CONNECTED:
            pass  # ATLS carries no application data in TLS records: ignored
        else:
            raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "content type %d" % ctype)

    def _on_alert(self, body):
        if len(body) != 2:
            raise AlertError(m.ALERT_DECODE_ERROR, "alert length")
        self.state = CLOSED
        err = AlertError(body[1], "peer sent alert %d" % body[1])
        err.from_peer = True
        self.error = err
        if body[1] != 0:  # close_notify ends quietly; anything else is fatal
            raise err

    def _on_handshake_bytes(self, data):
        hs = self._hs
        hs.extend(data)
        pos = 0
        try:
            while len(hs) - pos >= 4:
                mtype = hs[pos]
                length = (hs[pos + 1] << 16) | (hs[pos + 2] << 8) | hs[pos + 3]
                if length > self.config.max_handshake:
                    raise AlertError(m.ALERT_DECODE_ERROR, "handshake message too large")
                if len(hs) - pos < 4 + length:
                    break
                msg = bytes(hs[pos:pos + 4 + length])
                pos += 4 + length
                handler = _TRANSITIONS.get((self.state, mtype))
                if handler is None:
                    raise AlertError(m.ALERT_UNEXPECTED_MESSAGE,
                                     "message %d in state %s" % (mtype, self.state))
                keys_before = self._read
                handler(self, msg, memoryview(msg)[4:])
                # §5.1: handshake messages must not span a key change
                if self._read is not keys_before and len(hs) > pos:
                    raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "data across a key change")
        finally:
            self._hs = hs[pos:] if pos else hs

    def _write_handshake(self, msg, initial=False):
        if self._write is not None:
            self._out.extend(self._write.seal(_CT_HANDSHAKE, msg, self._tag_len))
        else:
            n = len(msg)
            self._out.extend(bytes((_CT_HANDSHAKE, 3, 1 if initial else 3, n >> 8, n & 0xFF)))
            self._out.extend(msg)
        self._th.update(msg)

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
        self._ks = self._share = None
        self._psks = []

    # ---- ClientHello --------------------------------------------------------
    def _psk_candidates(self):
        """(identity, obfuscated_age, psk, is_resumption) in offer order."""
        cfg = self.config
        out = []
        t = cfg.ticket
        if t is not None:
            if t.used:
                raise UsageError("ticket already used")
            t.used = True
            age = 0
            if self._now_ms is not None and t.received_ms is not None:
                age = max(0, self._now_ms - t.received_ms)
            out.append((t.identity, (age + t.age_add) & 0xFFFFFFFF, t.psk, True))
        if cfg.psk is not None:
            out.append((cfg.psk_identity, 0, cfg.psk, False))
        return out

    def _send_client_hello(self):
        cfg = self.config
        if self._hello_override:
            msg = self._hello_override.pop(0)
            self._write_handshake(msg, initial=not self.hrr)
            return
        if not self.hrr:
            self._psks = self._psk_candidates()
        w = Writer()
        if cfg.server_name:
            name = cfg.server_name.encode() if isinstance(cfg.server_name, str) else cfg.server_name
            sni = Writer()
            s = sni.start_block(2)
            sni.push_uint8(0)
            sni.push_vector(2, name)
            sni.end_block(s, 2)
            m.push_extension(w, m.EXT_SERVER_NAME, sni.buf)
        m.push_extension(w, m.EXT_SUPPORTED_VERSIONS, b"\x02\x03\x04")
        m.push_extension(w, m.EXT_SUPPORTED_GROUPS, _u16_list(cfg.groups))
        if cfg.cert_mode or self.config.ticket is not None:
            m.push_extension(w, m.EXT_SIGNATURE_ALGORITHMS, _u16_list(auth.SIGNATURE_SCHEMES))
        ks = Writer()
        s = ks.start_block(2)
        ks.push_uint16(self._share.group)
        ks.push_vector(2, self._share.public)
        ks.end_block(s, 2)
        m.push_extension(w, m.EXT_KEY_SHARE, ks.buf)
        if self._cookie is not None:
            m.push_extension(w, m.EXT_COOKIE, self._cookie)
        if self._psks:
            m.push_extension(w, m.EXT_PSK_KEY_EXCHANGE_MODES, b"\x01\x01")  # psk_dhe_ke
            binders_len = 2 + 33 * len(self._psks)
            p = Writer()
            s = p.start_block(2)
            for ident, age, _, _ in self._psks:
                p.push_vector(2, ident)
                p.push_uint32(age)
            p.end_block(s, 2)
            p.push_bytes(bytes(binders_len))  # patched below
            m.push_extension(w, m.EXT_PRE_SHARED_KEY, p.buf)
        body = m.push_client_hello(self._rng(32), b"", cfg.suites, w.buf)
        msg = bytearray(m.push_handshake(m.CLIENT_HELLO, body))
        if self._psks:
            self._patch_binders(msg, binders_len)
        self._write_handshake(bytes(msg), initial=not self.hrr)

    def _patch_binders(self, msg, binders_len):
        """§4.2.11.2: each binder is an HMAC over the transcript up to and
        including the truncated ClientHello (without the binders list)."""
        h = sha256(self._hrr_prefix)
        h.update(memoryview(msg)[:len(msg) - binders_len])
        thash = h.digest()
        pos = len(msg) - binders_len
        msg[pos] = (binders_len - 2) >> 8
        msg[pos + 1] = (binders_len - 2) & 0xFF
        pos += 2
        for _, _, psk, resumption in self._psks:
            bk = keys.KeySchedule(psk).binder_key(resumption)
            msg[pos] = 32
            msg[pos + 1:pos + 33] = keys.finished_mac(bk, thash)
            pos += 33

    # ---- server flight ------------------------------------------------------
    def _on_server_hello(self, msg, body):
        sh = m.ServerHello(body)
        if sh.session_id != b"":
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "session id echo")
        if sh.suite not in self.config.suites or (self.suite and sh.suite != self.suite):
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "cipher suite not offered")
        self.suite = sh.suite
        if sh.is_hrr:
            return self._on_hello_retry(msg, sh)
        group, peer_key = sh.key_share()
        if group is None:
            raise AlertError(m.ALERT_MISSING_EXTENSION, "no key_share (psk_ke is not offered)")
        if group != self._share.group:
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "key share group")
        idx = sh.selected_psk()
        psk = None
        if idx is not None:
            if idx >= len(self._psks):
                raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "selected_identity out of range")
            _, _, psk, resumption = self._psks[idx]
            self.mode = "resumed" if resumption else "psk_dhe"
        elif not self.config.cert_mode:
            raise AlertError(m.ALERT_HANDSHAKE_FAILURE, "server did not accept our PSK")
        else:
            self.mode = "cert"
        self._psks = []
        self.group = group
        self._tag_len = keys.suite_tag_len(self.suite)
        self._th.update(msg)
        self._ks = keys.KeySchedule(psk)
        self._ks.to_handshake(self._share.shared_secret(peer_key))
        self._share = None
        self._c_hs, self._s_hs = self._ks.handshake_traffic(self._th.digest())
        self._read = keys.RecordProtection(self.suite, self._s_hs)
        self._write = keys.RecordProtection(self.suite, self._c_hs)  # alerts from here on
        self.state = WAIT_EE

    def _on_hello_retry(self, msg, sh):
        if self.hrr:
            raise AlertError(m.ALERT_UNEXPECTED_MESSAGE, "second HelloRetryRequest")
        self.hrr = True
        group, _ = sh.key_share()
        cookie = sh.extensions.get(m.EXT_COOKIE)
        if group is None and cookie is None:
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "HelloRetryRequest changes nothing")
        if group is not None:
            if group not in self.config.groups or group == self._share.group:
                raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "HelloRetryRequest group")
            self._share = auth.KeyShare(group, self._rng)
        if cookie is not None:
            b = Buffer(cookie)
            self._cookie = b.pull_vector(2, 1)
            b.expect_end()
        # §4.4.1: the transcript restarts with message_hash(Hash(ClientHello1))
        prefix = bytes((m.MESSAGE_HASH, 0, 0, 32)) + self._th.digest() + msg
        self._th = Transcript(forks=8)
        self._th.update(prefix)
        self._hrr_prefix = prefix  # binders of ClientHello2 hash over it too
        self._send_client_hello()

    def _on_encrypted_extensions(self, msg, body):
        b = Buffer(body)
        exts = m.pull_extensions(b)
        b.expect_end()
        for forbidden in (m.EXT_KEY_SHARE, m.EXT_PRE_SHARED_KEY, m.EXT_SUPPORTED_VERSIONS,
                          m.EXT_COOKIE, m.EXT_PSK_KEY_EXCHANGE_MODES, m.EXT_SIGNATURE_ALGORITHMS):
            if forbidden in exts:
                raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "extension %d in EE" % forbidden)
        self._th.update(msg)
        self.state = WAIT_FINISHED if self.mode != "cert" else WAIT_CERT_CR

    def _on_certificate_request(self, msg, body):
        self._cert_request = m.pull_certificate_request(body)
        self._th.update(msg)
        self.state = WAIT_CERT

    def _on_certificate(self, msg, body):
        from atls import x509

        context, certs = m.pull_certificate(body, self.config.max_chain + 1)
        if context != b"":
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "certificate_request_context")
        if not certs:
            raise AlertError(m.ALERT_DECODE_ERROR, "empty server certificate")  # §4.4.2.4
        cfg = self.config
        host = cfg.server_name if cfg.check_hostname else None
        self.peer_certificate = x509.verify_chain(certs, anchors=cfg.ca_certs,
                                                  pins=cfg.spki_pins, now=cfg.now,
                                                  max_depth=cfg.max_chain, hostname=host,
                                                  time_floor=cfg.time_floor)
        self._th.update(msg)
        self.state = WAIT_CV

    def _on_certificate_verify(self, msg, body):
        scheme, sig = m.pull_certificate_verify(body)
        if scheme not in auth.SIGNATURE_SCHEMES or scheme == auth.RSA_PKCS1_SHA256:
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "signature scheme not offered")
        auth.verify_certificate_verify(self.peer_certificate, scheme, sig, self._th.digest())
        self._th.update(msg)
        self.state = WAIT_FINISHED

    def _on_finished(self, msg, body):
        expected = keys.finished_mac(self._s_hs, self._th.digest())
        if not keys.equal(body, expected):
            raise AlertError(m.ALERT_DECRYPT_ERROR, "server Finished does not verify")
        self._th.update(msg)
        c_ap, s_ap, self._exp_master = self._ks.application_traffic(self._th.digest())
        self._read = keys.RecordProtection(self.suite, s_ap)
        self._s_ap = s_ap
        self._send_client_flight()
        self._write = keys.RecordProtection(self.suite, c_ap)
        self._c_ap = c_ap
        self._res_master = self._ks.resumption_master(self._th.digest())
        self._ks = None
        self._c_hs = self._s_hs = None
        self._th = None
        self.state = CONNECTED

    def _send_client_flight(self):
        flight = bytearray()
        th = self._th
        if self._cert_request is not None:
            context, schemes = self._cert_request
            cfg = self.config
            usable = cfg.client_key is not None and auth.ECDSA_SECP256R1_SHA256 in schemes
            msg = m.push_certificate(context, cfg.client_certs if usable else ())
            th.update(msg)
            flight.extend(msg)
            if usable:
                sig = auth.sign_certificate_verify(cfg.client_key, th.digest())
                msg = m.push_certificate_verify(auth.ECDSA_SECP256R1_SHA256, sig)
                th.update(msg)
                flight.extend(msg)
        msg = m.push_handshake(m.FINISHED, keys.finished_mac(self._c_hs, th.digest()))
        flight.extend(msg)
        self._out.extend(self._write.seal(_CT_HANDSHAKE, flight, self._tag_len))
        th.update(msg)

    # ---- after the handshake --------------------------------------------------
    def _on_new_session_ticket(self, msg, body):
        nst = m.NewSessionTicket(body, self.config.max_ticket)
        if len(self.tickets) >= 4:  # keep the newest few, bounded
            self.tickets.pop(0)
        psk = keys.hkdf_expand_label(self._res_master, b"resumption", nst.nonce, 32)
        self.tickets.append(Ticket(nst, psk, self.suite, self._now_ms))

    def _on_key_update(self, msg, body):
        b = Buffer(body)
        requested = b.pull_uint8()
        b.expect_end()
        if requested > 1:
            raise AlertError(m.ALERT_ILLEGAL_PARAMETER, "key_update value")
        self._s_ap = keys.next_traffic_secret(self._s_ap)
        self._read = keys.RecordProtection(self.suite, self._s_ap)
        if requested:
            self._out.extend(self._write.seal(_CT_HANDSHAKE, m.push_handshake(m.KEY_UPDATE, b"\x00"),
                                              self._tag_len))
            self._c_ap = keys.next_traffic_secret(self._c_ap)
            self._write = keys.RecordProtection(self.suite, self._c_ap)


def _u16_list(values):
    w = Writer()
    s = w.start_block(2)
    for v in values:
        w.push_uint16(v)
    w.end_block(s, 2)
    return w.buf


_TRANSITIONS = {
    (WAIT_SH, m.SERVER_HELLO): TLSClient._on_server_hello,
    (WAIT_EE, m.ENCRYPTED_EXTENSIONS): TLSClient._on_encrypted_extensions,
    (WAIT_CERT_CR, m.CERTIFICATE_REQUEST): TLSClient._on_certificate_request,
    (WAIT_CERT_CR, m.CERTIFICATE): TLSClient._on_certificate,
    (WAIT_CERT, m.CERTIFICATE): TLSClient._on_certificate,
    (WAIT_CV, m.CERTIFICATE_VERIFY): TLSClient._on_certificate_verify,
    (WAIT_FINISHED, m.FINISHED): TLSClient._on_finished,
    (CONNECTED, m.NEW_SESSION_TICKET): TLSClient._on_new_session_ticket,
    (CONNECTED, m.KEY_UPDATE): TLSClient._on_key_update,
}
