"""The service's TLS 1.3 server engine: an unmodified OpenSSL (the one bundled
with `cryptography`, reached through pyOpenSSL) driven through memory BIOs, so
that TLS flights can be carried over any link (draft-friel-tls-atls).

    cfg  = ServerConfig(psks={b"device-1": key}, cert_chain=[leaf], key=leaf_key)
    ctx  = cfg.build()                  # OpenSSL.SSL.Context, TLS 1.3 only
    conn = ServerConnection(ctx)
    out  = conn.feed(flight_from_client)    # bytes to send back (maybe b"")
    ...until conn.done; then conn.export() -> the ATLS key block,
        TLS-Exporter(protocol.EXPORTER_LABEL, "", protocol.KEY_BLOCK_LEN) (RFC 8446 §7.5)

Theory of operation
-------------------
* `ServerConnection.feed()` writes the peer's bytes into OpenSSL's read BIO,
  runs SSL_do_handshake (later SSL_read, which consumes application data,
  KeyUpdate and close_notify) and returns whatever OpenSSL wrote into the
  write BIO.  On a fatal error it raises `TLSError`; the alert record OpenSSL
  produced is in `TLSError.outgoing` so the caller can still deliver it.
* How the context is set up (authentication, suites, groups, chains,
  tickets, which callbacks): service.tls_context.
* NewSessionTicket and the compatibility change_cipher_spec: the binding
  exports neither SSL_CTX_set_num_tickets nor SSL_CTX_clear_options, so both
  are handled on OpenSSL's *output*, record by record, which needs no private
  symbol: OpenSSL writes whole records into the memory BIO.  With
  compat_ccs=False (the default: a device never needs it) the dummy CCS
  records (RFC 8446 §D.4, 6 bytes each) are dropped.  Post-handshake
  protected records produced by feed() are NewSessionTickets (the service
  never sends TLS application data), so feed() passes on at most `tickets`
  of them per connection and drops the rest; with tickets=0 OpenSSL's tickets
  never reach the client and resumption cannot happen.  A withheld record
  shifts the peer's record sequence, so afterwards `records_usable` is False:
  send() refuses and close() sends no close_notify.  Tickets are encrypted
  under keys of the SSL_CTX: resume on the same context.
* HelloRetryRequest, the selected PSK identity and alerts are reported by a
  context-wide message callback (tls_hooks), per connection, on contexts
  with certificates or tickets.  A context with PSKs only (the devices')
  goes without it, a fifth of OpenSSL's own cost per handshake: feed()
  reads the same facts from our plaintext ServerHello and alert records and
  from OpenSSL's error reasons (tls_hooks.server_hello_in, alert_in,
  alerts_from_reasons).
* On a context without pyOpenSSL callback helpers (verify, ALPN, OCSP: the
  service's PSK context) the handshake, reads and BIO drains call OpenSSL
  directly: "wants more bytes" is a result, not a WantReadError; any other
  result goes through pyOpenSSL's own error mapping, as before.

Nothing here logs or stores secrets beyond what OpenSSL holds; TLSError
messages carry OpenSSL reason strings and alert names only.
"""

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL._util import no_zero_allocator as _alloc

from atls import protocol
from host_tools.service import tls_hooks
from host_tools.service.tls_context import ServerConfig
from host_tools.service.tls_names import ALERTS, GROUP_ALIASES, GROUPS, SUITES

__all__ = [
    "ServerConfig",
    "ServerConnection",
    "TLSError",
    "SUITES",
    "GROUPS",
    "ALERTS",
    "openssl_version",
]

_WANT_READ = _lib.SSL_ERROR_WANT_READ
_ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
_CHUNK = 16384


def openssl_version():
    """The OpenSSL actually in use (the one linked into `cryptography`)."""
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()


class TLSError(Exception):
    """A fatal TLS failure.

    reason    OpenSSL's reason string(s), e.g. "binder does not verify"
    alert     AlertDescription we sent (int) or None; alert_name its name
    peer_alert AlertDescription the peer sent us, or None
    outgoing  bytes OpenSSL wrote before failing (normally the alert record):
              deliver them to the peer
    """

    def __init__(self, reason, alert=None, outgoing=b"", peer_alert=None):
        self.reason = reason
        self.alert = alert
        self.alert_name = ALERTS.get(alert) if alert is not None else None
        self.peer_alert = peer_alert
        self.outgoing = outgoing
        text = reason
        if alert is not None:
            text += " (sent alert %s/%d)" % (self.alert_name or "?", alert)
        if peer_alert is not None:
            text += " (peer alert %s/%d)" % (ALERTS.get(peer_alert, "?"), peer_alert)
        Exception.__init__(self, text)


def _reasons(exc):
    """OpenSSL's reason strings from a pyOpenSSL error ([] if it has none)."""
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        return [str(item[-1]) if isinstance(item, tuple) and item else str(item) for item in args]
    return []


def _reason(exc):
    """OpenSSL's reason strings from a pyOpenSSL error, as one."""
    parts = _reasons(exc)
    if parts:
        return "; ".join(parts)
    return "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__


class ServerConnection:
    """One TLS 1.3 server connection over memory BIOs (see module doc)."""

    _READ_CHUNK = 16384

    def __init__(self, ctx):
        if not isinstance(ctx, SSL.Context):
            raise TypeError("ctx must be an OpenSSL.SSL.Context from ServerConfig.build()")
        self._conn = SSL.Connection(ctx, None)  # None: memory BIOs
        self._conn.set_accept_state()
        # no pyOpenSSL callback helper (verify, ALPN, OCSP) on the context: the
        # handshake, reads and drains call OpenSSL directly and map only unexpected
        # results through pyOpenSSL, so "wants more bytes" costs no exception
        direct = getattr(ctx, "_atls_direct", None)
        if direct is None:
            helpers = ("_verify_helper", "_alpn_select_helper", "_ocsp_helper")
            direct = all(getattr(ctx, h, 0) is None for h in helpers) and all(
                hasattr(self._conn, a)
                for a in (
                    "_ssl",
                    "_from_ssl",
                    "_into_ssl",
                    "_raise_ssl_error",
                    "_handle_bio_errors",
                )
            )
            if hasattr(ctx, "_atls_direct"):
                ctx._atls_direct = direct
        self._direct = direct
        self._watch = tls_hooks.watch(self._conn)
        # no message callback on this context: the ServerHello is read from
        # the output (module doc); until then each ClientHello starts afresh
        self._messages = getattr(ctx, "_atls_messages", True)
        self._hello_seen = self._messages
        self.done = False
        self.failed = None  # the TLSError, once failed
        self.peer_closed = False
        self.closed = False
        self._app = bytearray()
        cfg = getattr(ctx, "_atls_config", None)
        self._compat_ccs = cfg.compat_ccs if cfg else True
        self._tickets_left = cfg.tickets if cfg else None  # None: no limit
        # False once a post-handshake record was dropped: the peer's record
        # sequence no longer matches, so no further TLS record may be sent.
        # ATLS needs none: after the handshake only the exporter is used.
        self.records_usable = True

    # -- I/O -----------------------------------------------------------------
    def _drain(self):
        """What OpenSSL wrote (a memory BIO read fails only when it is empty)."""
        out = b""
        if not self._direct:
            while True:
                try:
                    chunk = self._conn.bio_read(_CHUNK)
                except SSL.WantReadError:
                    return out
                if not chunk:
                    return out
                out += chunk
        bio = self._conn._from_ssl
        buf = _alloc("char[]", _CHUNK)
        while True:
            n = _lib.BIO_read(bio, buf, _CHUNK)
            if n <= 0:
                return out
            out += _ffi.buffer(buf, n)[:]

    def _handshake(self):
        """True once done, False while OpenSSL wants more bytes; else raises."""
        conn = self._conn
        if not self._direct:
            try:
                conn.do_handshake()
                return True
            except SSL.WantReadError:
                return False
        ssl = conn._ssl
        r = _lib.SSL_do_handshake(ssl)
        if r == 1:
            return True
        if _lib.SSL_get_error(ssl, r) == _WANT_READ:
            return False
        conn._raise_ssl_error(ssl, r)
        return True

    def _fail(self, exc):
        out = self._drain()
        w = self._watch
        reason = _reason(exc)
        if w.callback_error:
            reason += " [callback: %s]" % w.callback_error
        sent, received = w.alert_sent, w.alert_received
        if not self._messages:  # module doc
            sent, received = tls_hooks.alerts_from_reasons(_reasons(exc), ALERTS)
            plain = tls_hooks.alert_in(out)
            sent = plain if plain is not None else sent
        err = TLSError(reason, alert=sent, outgoing=out, peer_alert=received)
        self.failed = err
        return err

    def feed(self, data=b""):
        """Process bytes from the peer; return bytes to send to it."""
        data = bytes(memoryview(data))  # bytes-like only (not int/str)
        if self.failed is not None:
            raise TLSError(
                "connection already failed: %s" % self.failed.reason, alert=self.failed.alert
            )
        if self.closed:
            raise TLSError("connection closed")
        was_done = self.done
        if not self._hello_seen:
            self._watch.psk_calls = []  # the identities of this ClientHello only
        try:
            if data:
                if self._direct:  # pyOpenSSL's bio_write, without its argument checks
                    r = _lib.BIO_write(self._conn._into_ssl, data, len(data))
                    if r <= 0:
                        self._conn._handle_bio_errors(self._conn._into_ssl, r)
                else:
                    self._conn.bio_write(data)
            if not self.done:
                self.done = self._handshake()
            if self.done and not self.peer_closed:
                self._read_app()
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.peer_closed = True
        except SSL.Error as exc:
            raise self._fail(exc) from None
        out = self._drain()
        if not self._hello_seen and out:
            self._hello_seen = tls_hooks.server_hello_in(self._watch, out) == "sh"
        return self._filter(out, post_handshake=was_done or self.done)

    def _filter(self, out, post_handshake):
        """Drop compatibility CCS records and NewSessionTickets beyond the
        configured count (see module doc)."""
        if self._compat_ccs and self._tickets_left is None:
            return out
        keep = bytearray()
        pos = 0
        while pos + 5 <= len(out):
            end = pos + 5 + int.from_bytes(out[pos + 3 : pos + 5], "big")
            rtype = out[pos]
            if rtype == 20 and not self._compat_ccs:
                pass
            elif rtype == 23 and post_handshake and self._tickets_left is not None:
                if self._tickets_left > 0:
                    self._tickets_left -= 1
                    keep += out[pos:end]
                else:
                    self.records_usable = False
            else:
                keep += out[pos:end]
            pos = end
        keep += out[pos:]
        return bytes(keep)

    def _read_app(self):
        if self._direct:
            return self._read_direct()
        while True:
            try:
                chunk = self._conn.recv(self._READ_CHUNK)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.peer_closed = True
                return
            if not chunk:
                return
            self._app += chunk

    def _read_direct(self):
        """_read_app without an exception for "nothing to read" (see _direct)."""
        conn = self._conn
        ssl = conn._ssl
        while True:
            buf = _alloc("char[]", self._READ_CHUNK)
            r = _lib.SSL_read(ssl, buf, self._READ_CHUNK)
            if r > 0:
                self._app += _ffi.buffer(buf, r)[:]
                continue
            err = _lib.SSL_get_error(ssl, r)
            if err == _ZERO_RETURN:
                self.peer_closed = True
            elif err != _WANT_READ:
                conn._raise_ssl_error(ssl, r)
            return

    def recv(self):
        """Application data received so far (and clears the buffer)."""
        data = bytes(self._app)
        self._app.clear()
        return data

    def send(self, data):
        """Encrypt application data; return the records to send."""
        if not self.done:
            raise RuntimeError("handshake not complete")
        if self.failed is not None or self.closed:
            raise TLSError("connection not usable")
        if not self.records_usable:
            raise RuntimeError(
                "TLS records unusable: NewSessionTickets beyond `tickets` "
                "were withheld (use the exporter, or configure tickets)"
            )
        try:
            self._conn.sendall(bytes(memoryview(data)))
        except SSL.Error as exc:
            raise self._fail(exc) from None
        return self._drain()

    def close(self):
        """Send close_notify; return the bytes to deliver (b"" if failed)."""
        if self.failed is not None or self.closed:
            return b""
        self.closed = True
        if not self.records_usable:
            return b""  # see records_usable
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass
        return self._drain()

    # -- results -------------------------------------------------------------
    def export(self, label=protocol.EXPORTER_LABEL, length=protocol.KEY_BLOCK_LEN, context=None):
        """TLS-Exporter(label, context, length), RFC 8446 §7.5 (context None
        and b"" are the same in TLS 1.3); by default the ATLS key block
        (docs/PROTOCOL.md §3)."""
        if not self.done:
            raise RuntimeError("handshake not complete")
        if not isinstance(label, bytes) or not 1 <= len(label) <= 249:
            raise ValueError("label must be 1..249 bytes")
        if not isinstance(length, int) or not 1 <= length <= 255 * 32:
            raise ValueError("length must be 1..8160")
        try:
            return self._conn.export_keying_material(label, length, context)
        except SSL.Error as exc:
            raise ValueError("export failed: %s" % _reason(exc)) from None

    @property
    def hrr(self):
        return self._watch.hrr

    def info(self):
        """What was negotiated (valid once done)."""
        conn = self._conn
        w = self._watch
        group = conn.get_group_name() if self.done else None
        if group is not None:
            group = GROUP_ALIASES.get(group.lower(), group)
        mode = psk_identity = None
        client_cert = None
        if self.done:
            if _lib.SSL_session_reused(conn._ssl):
                sel = w.selected_identity
                if sel is not None and sel < len(w.psk_calls) and w.psk_calls[sel] is not None:
                    psk_identity = w.psk_calls[sel]
                    mode = "psk_dhe" if group else "psk_ke"
                else:
                    mode = "resumed"
            else:
                mode = "cert"
            client_cert = conn.get_peer_certificate(as_cryptography=True)
        return {
            "version": conn.get_protocol_version_name() if self.done else None,
            "suite": conn.get_cipher_name(),
            "group": group,
            "mode": mode,
            "psk_identity": psk_identity,
            "client_cert": client_cert,
            "hrr": w.hrr,
        }
