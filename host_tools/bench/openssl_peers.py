"""Plain pyOpenSSL peers for the `service_handshakes` baseline: a TLS 1.3
client and server with an external PSK (psk_dhe_ke, x25519), and one raw
memory-BIO handshake between them.  pyOpenSSL has no PSK API, so the PSK
callbacks go through its cffi binding (the context's `_context` pointer)."""

import time

from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN, TLS_AES_128_GCM_SHA256
from host_tools.bench.pair import IDENTITY, PSK

# SSL_CIPHER_find takes the two code-point bytes; only the hash matters for a
# PSK session (external PSKs are SHA-256, RFC 8446 §4.2.11)
PSK_CIPHER = TLS_AES_128_GCM_SHA256.to_bytes(2, "big")


def _psk_session(lib, ssl, key):
    sess = lib.Cryptography_SSL_SESSION_new()
    if (
        lib.SSL_SESSION_set1_master_key(sess, key, len(key)) != 1
        or lib.SSL_SESSION_set_cipher(sess, lib.SSL_CIPHER_find(ssl, PSK_CIPHER)) != 1
        or lib.SSL_SESSION_set_protocol_version(sess, lib.TLS1_3_VERSION) != 1
    ):
        lib.SSL_SESSION_free(sess)
        return None
    return sess


def _tls13_context(suite_name):
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # CCM_8 (64-bit tag) needs level 0
    ctx.set_tls13_ciphersuites(suite_name.encode())
    return ctx


def client_context(suite_name, identity=IDENTITY, psk=PSK):
    """A pyOpenSSL TLS 1.3 client offering an external PSK (psk_dhe_ke, x25519)
    through SSL_CTX_set_psk_use_session_callback."""
    from OpenSSL._util import ffi, lib

    ctx = _tls13_context(suite_name)
    if lib.SSL_CTX_set1_curves_list(ctx._context, b"X25519") != 1:
        raise RuntimeError("X25519 not available")
    ident = ffi.new("unsigned char[]", identity)

    def use_session(ssl, md, idp, idlenp, sessp):
        sessp[0] = ffi.NULL
        sess = _psk_session(lib, ssl, psk)
        if sess is None:
            return 0
        idp[0] = ident
        idlenp[0] = len(identity)
        sessp[0] = sess
        return 1

    cb = ffi.callback(
        "int(SSL *, const EVP_MD *, const unsigned char **, size_t *, SSL_SESSION **)",
        use_session,
        error=0,
    )
    lib.SSL_CTX_set_psk_use_session_callback(ctx._context, cb)
    ctx._bench_keep = (cb, ident)
    return ctx


def server_context(suite_name, identity=IDENTITY):
    """The raw baseline's server: a plain pyOpenSSL TLS 1.3 context doing what
    the service's OpenSSL does (same suite, groups X25519:P-256, external PSK
    via the find-session callback, session cache off, and SSL_OP_NO_TICKET,
    as the service's tickets=0 context sets it: stateful tickets, cheaper than
    the default ones), without the service's bookkeeping."""
    from OpenSSL import SSL
    from OpenSSL._util import ffi, lib

    ctx = _tls13_context(suite_name)
    lib.SSL_CTX_set1_curves_list(ctx._context, b"X25519:P-256")
    ctx.set_session_id(b"atls-bench")
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_options(SSL.OP_NO_TICKET)  # like the service's (tls_context.ServerConfig.build)
    psks = {identity: PSK}

    def find_session(ssl, ident, ident_len, sessp):
        sessp[0] = ffi.NULL
        key = psks.get(bytes(ffi.buffer(ident, ident_len)))
        if key is None:
            return 1
        sess = _psk_session(lib, ssl, key)
        if sess is None:
            return 0
        sessp[0] = sess
        return 1

    cb = ffi.callback("int(SSL *, unsigned char *, size_t, SSL_SESSION **)", find_session, error=0)
    lib.SSL_CTX_set_psk_find_session_callback(ctx._context, cb)
    ctx._bench_keep = cb
    return ctx


def _drain(conn):
    from OpenSSL import SSL

    out = b""
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            return out
        if not chunk:
            return out
        out += chunk


def _step(conn):
    from OpenSSL import SSL

    try:
        conn.do_handshake()
        return True
    except SSL.WantReadError:
        return False


def raw_handshake(cctx, sctx, server_time, clock=time.perf_counter):
    """One PSK+ECDHE handshake, pyOpenSSL client <-> pyOpenSSL server, memory
    BIOs both sides.  Server side (timed by `clock`, added to server_time[0]):
    Connection, bio_write, do_handshake, bio_read, and the 56-byte exporter
    the service needs."""
    from OpenSSL import SSL
    from OpenSSL._util import lib

    pc = clock
    c = SSL.Connection(cctx, None)
    c.set_connect_state()
    _step(c)
    to_s = _drain(c)
    t = pc()
    s = SSL.Connection(sctx, None)
    s.set_accept_state()
    server_time[0] += pc() - t
    c_done = s_done = False
    for _ in range(6):
        if to_s:
            t = pc()
            s.bio_write(to_s)
            s_done = s_done or _step(s)
            to_c = _drain(s)
            server_time[0] += pc() - t
            to_s = b""
            if to_c:
                c.bio_write(to_c)
                c_done = c_done or _step(c)
                to_s = _drain(c)
        if c_done and s_done and not to_s:
            break
    t = pc()
    s.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN)
    server_time[0] += pc() - t
    if not (c_done and s_done) or not lib.SSL_session_reused(s._ssl) or s.get_group_name() is None:
        raise RuntimeError("raw OpenSSL loop did not complete a PSK+ECDHE handshake")


class LinkDevice:
    """A device whose TLS client is pyOpenSSL (the raw baseline's own client,
    so the service's OpenSSL sees the same ClientHello as the baseline's
    server) over the firmware's client Link.  Cheaper than the firmware
    client, so a few of them can keep one service process busy.  Same
    interface as bench.pair.Device for the UDP driver: start, link, pump,
    settled."""

    def __init__(self, cctx, mtu=1200):
        from OpenSSL import SSL

        from atls.link import Link, LinkConfig

        self.tls = SSL.Connection(cctx, None)
        self.tls.set_connect_state()
        self.link = Link("client", LinkConfig(mtu=mtu))
        self.suite = None

    def start(self, now):
        _step(self.tls)
        self.link.send_flight(_drain(self.tls), now)

    def pump(self, now):
        from atls.protocol import SUITES

        for ev in self.link.events():
            if ev[0] == "flight" and self.link.channel is None:
                self.tls.bio_write(ev[1])
                done = _step(self.tls)
                out = _drain(self.tls)
                if out:
                    self.link.send_flight(out, now)
                if done:
                    kb = self.tls.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN)
                    suite = SUITES[self.tls.get_cipher_name()]
                    self.link.start_channel(kb, suite)

    @property
    def settled(self):
        """Channel open and the client's Finished acknowledged (pair.Device)."""
        return self.link.channel is not None and self.link.next_timer_ms() is None
