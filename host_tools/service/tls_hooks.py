"""What pyOpenSSL does not expose, reached through its cffi binding: the
external-PSK callback and a message callback that watches each connection.

* External PSK (RFC 8446 §4.2.11): pyOpenSSL has no PSK API, so the
  binding's SSL_CTX_set_psk_find_session_callback is used: for a known
  identity the callback builds an SSL_SESSION holding the key as "master key",
  protocol TLS 1.3 and cipher TLS_AES_128_GCM_SHA256 - only its hash matters:
  external PSKs are SHA-256 (RFC 8446 §4.2.11 default), so they work with the
  SHA-256 suites only.  Unknown identities return no session: OpenSSL then
  falls back to a certificate handshake, or fails with an alert if there is no
  certificate.  The identity -> key table is consulted live, per handshake.
  With hide_unknown an unknown identity gets a stand-in key instead
  (HMAC of the identity under a per-process secret): its binder fails like a
  wrong one (decrypt_error), so registered identities cannot be probed.
* A context-wide message callback watches handshake and alert messages (type
  bytes, the ServerHello's extensions; it never keeps key material) to report
  HelloRetryRequest, the selected PSK identity and alerts; it is keyed by the
  SSL* of each connection (`watch(conn)`).  cffi callbacks must outlive the
  context: `install` returns them for the caller to keep.
* OpenSSL calls the message callback about twenty times per handshake, each
  a trip into Python (about 60 us in all, a fifth of OpenSSL's own work):
  contexts that need it only for what their plaintext output already shows
  go without it (install(messages=False)).  The engine then reads our own
  ServerHello (`server_hello_in`) and a plaintext alert (`alert_in`) from
  the records OpenSSL wrote, and takes alerts it cannot read there (sent
  encrypted, or received) from OpenSSL's error reasons (`alerts_from_reasons`).

Nothing here raises into OpenSSL, logs, or stores secrets.
"""

import hashlib
import hmac
import os
import threading
import weakref

from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from atls import protocol

__all__ = [
    "Watch",
    "watch",
    "install",
    "valid_psk",
    "server_hello_in",
    "alert_in",
    "alerts_from_reasons",
]

# RFC 8446 §4.1.3: ServerHello.random of a HelloRetryRequest.
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_HS_CLIENT_HELLO = 1
_HS_SERVER_HELLO = 2
_EXT_PRE_SHARED_KEY = 41
_CT_ALERT = 21
_CT_HANDSHAKE = 22
# the cipher of the PSK session: TLS_AES_128_GCM_SHA256, for its SHA-256 hash
_PSK_CIPHER_ID = protocol.TLS_AES_128_GCM_SHA256.to_bytes(2, "big")


class Watch:
    """What the callbacks saw on one connection (no key material)."""

    def __init__(self):
        self.client_hellos = 0
        self.psk_calls = []  # identity (bytes) if known else None, per offer
        self.selected_identity = None
        self.hrr = False
        self.alert_sent = None
        self.alert_received = None
        self.callback_error = None


_WATCHES = weakref.WeakValueDictionary()
_WATCH_LOCK = threading.Lock()


def _key(ssl):
    return int(_ffi.cast("uintptr_t", ssl))


def watch(conn):
    """A new Watch for an OpenSSL.SSL.Connection, filled in by the callbacks
    for as long as the caller keeps it."""
    w = Watch()
    with _WATCH_LOCK:
        _WATCHES[_key(conn._ssl)] = w
    return w


def _watch_for(ssl):
    with _WATCH_LOCK:
        return _WATCHES.get(_key(ssl))


def _server_hello(watch, msg):
    """Note HRR and the selected PSK identity from our own ServerHello
    (RFC 8446 §4.1.3, §4.2.11)."""
    try:
        if msg[6:38] == _HRR_RANDOM:
            watch.hrr = True
            return
        pos = 38
        pos += 1 + msg[pos]  # legacy_session_id_echo
        pos += 3  # cipher_suite, compression
        end = pos + 2 + int.from_bytes(msg[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            etype = int.from_bytes(msg[pos : pos + 2], "big")
            elen = int.from_bytes(msg[pos + 2 : pos + 4], "big")
            if etype == _EXT_PRE_SHARED_KEY and elen == 2:
                watch.selected_identity = int.from_bytes(msg[pos + 4 : pos + 6], "big")
            pos += 4 + elen
    except Exception as e:  # never raise into OpenSSL
        watch.callback_error = repr(e)


def _on_message(write_p, version, content_type, buf, length, ssl, arg):
    # OpenSSL calls this for every record header and message: filter on the
    # cheap fields first, look up the connection's watch only when it matters
    if length < 1 or (content_type != _CT_HANDSHAKE and content_type != _CT_ALERT):
        return
    if content_type == _CT_HANDSHAKE:
        mtype = _ffi.cast("unsigned char *", buf)[0]
        if mtype != (_HS_SERVER_HELLO if write_p else _HS_CLIENT_HELLO):
            return
    watch = _watch_for(ssl)
    if watch is None:
        return
    if content_type == _CT_HANDSHAKE:
        if not write_p:
            watch.client_hellos += 1
            watch.psk_calls = []
        elif write_p and mtype == _HS_SERVER_HELLO and length >= 38:
            _server_hello(watch, bytes(_ffi.buffer(buf, min(length, 4096))))
    elif content_type == _CT_ALERT and length >= 2:
        desc = _ffi.cast("unsigned char *", buf)[1]
        if write_p:
            if watch.alert_sent is None or desc != 0:
                watch.alert_sent = desc
        else:
            watch.alert_received = desc


_on_message_cb = _ffi.callback("void(int, int, int, void *, size_t, SSL *, void *)", _on_message)


def valid_psk(key):
    return isinstance(key, (bytes, bytearray)) and 16 <= len(key) <= 64


_STAND_IN = os.urandom(32)  # keys of unknown identities (hide_unknown)


def _make_psk_callback(psks, hide_unknown=False):
    """SSL_psk_find_session_cb_func for the identity -> key table `psks`."""

    def find_session(ssl, identity, identity_len, sessptr):
        sessptr[0] = _ffi.NULL
        watch = _watch_for(ssl)
        try:
            ident = bytes(_ffi.buffer(identity, identity_len))
            key = psks.get(ident)
            if watch is not None:
                watch.psk_calls.append(ident if key is not None else None)
            if key is None and hide_unknown:
                key = hmac.new(_STAND_IN, ident, hashlib.sha256).digest()
            elif key is None:
                return 1  # not ours: try tickets / next identity
            if not valid_psk(key):
                if watch is not None:
                    watch.callback_error = "invalid PSK table entry"
                return 0
            key = bytes(key)
            cipher = _lib.SSL_CIPHER_find(ssl, _PSK_CIPHER_ID)
            if cipher == _ffi.NULL:
                return 0
            sess = _lib.Cryptography_SSL_SESSION_new()
            if sess == _ffi.NULL:
                return 0
            if (
                _lib.SSL_SESSION_set1_master_key(sess, key, len(key)) != 1
                or _lib.SSL_SESSION_set_cipher(sess, cipher) != 1
                or _lib.SSL_SESSION_set_protocol_version(sess, _lib.TLS1_3_VERSION) != 1
            ):
                _lib.SSL_SESSION_free(sess)
                return 0
            sessptr[0] = sess  # OpenSSL takes ownership
            return 1
        except Exception as e:
            if watch is not None:  # type only: messages might carry secrets
                watch.callback_error = type(e).__name__
            return 0  # fatal: internal_error alert

    return _ffi.callback(
        "int(SSL *, unsigned char *, size_t, SSL_SESSION **)", find_session, error=0
    )


def install(ctx, psks, hide_unknown=False, messages=True):
    """Hook an OpenSSL.SSL.Context: the PSK callback for the table `psks`
    (None: no PSK; hide_unknown: see the module doc) and, with `messages`,
    the message callback.  Returns the cffi callbacks, which must live as
    long as the context."""
    keep = [_on_message_cb]
    if psks is not None:
        cb = _make_psk_callback(psks, hide_unknown)
        _lib.SSL_CTX_set_psk_find_session_callback(ctx._context, cb)
        keep.append(cb)
    if messages:
        _lib.SSL_CTX_set_msg_callback(ctx._context, _on_message_cb)
    return keep


def server_hello_in(watch, out):
    """Fill in `watch` (HelloRetryRequest, selected PSK identity) from our
    own ServerHello when `out`, what OpenSSL wrote, starts with it: a
    plaintext handshake record whose first message is a ServerHello (RFC
    8446 §5.1, §4.1.3).  "hrr" for a HelloRetryRequest, "sh" for a
    ServerHello, None if `out` does not start with one."""
    if len(out) < 43 or out[0] != _CT_HANDSHAKE or out[5] != _HS_SERVER_HELLO:
        return None
    if out[11:43] == _HRR_RANDOM:
        watch.hrr = True
        return "hrr"
    end = 5 + int.from_bytes(out[3:5], "big")
    _server_hello(watch, bytes(out[5 : min(end, len(out), 5 + 4096)]))
    return "sh"


def alert_in(out):
    """The description of the last plaintext alert record in `out` (what
    OpenSSL wrote), or None: alerts sent before the handshake keys (§5.1)."""
    pos, n, desc = 0, len(out), None
    while pos + 7 <= n:  # a header and two bytes: the shortest alert record
        rlen = int.from_bytes(out[pos + 3 : pos + 5], "big")
        if out[pos] == _CT_ALERT and rlen == 2:
            desc = out[pos + 6]
        pos += 5 + rlen
    return desc


# what OpenSSL sends (RFC 8446 §6.2) for the failures a TLS 1.3 PSK server
# meets once its handshake keys are in use, so that its alert is encrypted,
# by OpenSSL's reason string
_SENT_FOR_REASON = {
    "digest check failed": 51,  # decrypt_error: the client's Finished
    "decryption failed or bad record mac": 20,  # bad_record_mac
    "bad record mac": 20,
    "unexpected message": 10,
    "unexpected record": 10,
    "bad record type": 10,
    "length mismatch": 50,  # decode_error
    "bad length": 50,
    "bad packet": 50,
    "record too small": 50,
}
# an alert the peer sent is OpenSSL's reason "<version> alert <description>"
_RECEIVED_PREFIXES = (
    "sslv3 alert ",
    "tlsv1 alert ",
    "tlsv13 alert ",
    "tls alert ",
    "ssl/tls alert ",
)


def alerts_from_reasons(reasons, names):
    """(alert we sent or None, alert received or None) from OpenSSL's reason
    strings of a failure (`reasons`); `names`: {description: name}."""
    by_name = {v: k for k, v in names.items()}
    sent = received = None
    for r in reasons:
        r = r.lower()
        if r.startswith(_RECEIVED_PREFIXES):
            received = by_name.get(r.split(" alert ", 1)[1].replace(" ", "_"), received)
        elif r in _SENT_FOR_REASON:
            sent = _SENT_FOR_REASON[r]
    return sent, received
