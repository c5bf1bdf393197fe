"""The TLS 1.3 client's state machine (RFC 8446 Appendix A.1): its states,
the transition table, the context its handlers share, and the handlers of
the common PSK path (ClientHello, ServerHello, EncryptedExtensions,
Finished).

TRANSITIONS holds one row (state, handshake type, handler, next state) per
transition; atls.tls.client looks every received message up in it
(`transition`), and anything not there is unexpected_message.  A handler
takes (HandshakeContext, message): it may read and write the context's
fields and nothing else, raises AlertError for anything the peer got wrong,
and returns None to enter the row's next state or, where the row names
several (a tuple), the one it chose.  Handlers in other modules
(certificates: atls.tls.auth, HelloRetryRequest: atls.tls.retry,
NewSessionTicket: atls.tls.tickets, KeyUpdate: atls.tls.keyupdate) are
imported on first use, so a PSK handshake never loads their bytecode.  The
diagram in docs/ARCHITECTURE.md is generated from TRANSITIONS, and
tests/test_tls_diagram.py checks that the two agree.
"""

from atls.buffer import Buffer
from atls.crypto.backend import sha256
from atls.crypto.transcript import Transcript
from atls.errors import AlertError, UsageError
from atls.protocol import suite_tag_len
from atls.tls import messages as m
from atls.tls.keyshare import shared_secret
from atls.tls.record import RecordProtection
from atls.tls.schedule import KeySchedule, equal, finished_mac

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

# §4 HandshakeType
_SERVER_HELLO = const(2)
_NEW_SESSION_TICKET = const(4)
_ENCRYPTED_EXTENSIONS = const(8)
_CERTIFICATE = const(11)
_CERTIFICATE_REQUEST = const(13)
_CERTIFICATE_VERIFY = const(15)
_FINISHED = const(20)
_KEY_UPDATE = const(24)
# A ServerHello with the §4.1.3 special random: A.1 draws it as an event of
# its own, so the table keys it apart.  Handshake types are one byte on the
# wire, so this value never arrives as one.
HELLO_RETRY_REQUEST = const(0x102)
# §4.2 ExtensionType
_EXT_SERVER_NAME = const(0)
_EXT_SUPPORTED_GROUPS = const(10)
_EXT_SIGNATURE_ALGORITHMS = const(13)
_EXT_PRE_SHARED_KEY = const(41)
_EXT_SUPPORTED_VERSIONS = const(43)
_EXT_COOKIE = const(44)
_EXT_PSK_KEY_EXCHANGE_MODES = const(45)
_EXT_KEY_SHARE = const(51)
# §4.2 table: extensions we recognize that EncryptedExtensions may not carry
# (status_request, signature_algorithms, signed_certificate_timestamp,
# padding, pre_shared_key, supported_versions, cookie,
# psk_key_exchange_modes, certificate_authorities, oid_filters,
# post_handshake_auth, signature_algorithms_cert, key_share): illegal_parameter
_EE_FORBIDDEN = const((5, 13, 18, 21, 41, 43, 44, 45, 47, 48, 49, 50, 51))
# signature_algorithms we offer (§4.2.3): ecdsa_secp256r1_sha256,
# rsa_pss_rsae_sha256, ed25519, and rsa_pkcs1_sha256 for certificates only;
# atls.tls.auth verifies exactly these
_SIG_ALGS = const(b"\x00\x08\x04\x03\x08\x04\x08\x07\x04\x01")
_CT_HANDSHAKE = const(22)
# §6 AlertDescription
_UNEXPECTED_MESSAGE = const(10)
_HANDSHAKE_FAILURE = const(40)
_ILLEGAL_PARAMETER = const(47)
_DECRYPT_ERROR = const(51)
_MISSING_EXTENSION = const(109)
_UNSUPPORTED_EXTENSION = const(110)
_DECODE_ERROR = const(50)


class HandshakeContext:
    """What the transition handlers share, and all they may touch.

    In: config (atls.tls.client.ClientConfig), rng(n), now_ms,
    hello_override (tests).  Negotiated (TLSClient mirrors them after each
    transition): suite, group, mode ("psk_dhe", "resumed" or "cert"), hrr,
    and tickets (atls.tls.tickets.Ticket, newest last; the client's own list,
    changed in place).  Handshake secrets, dropped as soon as they are used:
    th (Transcript), ks (KeySchedule), share (group, private, public), psks
    [(identity, obfuscated_age, psk, is_resumption)] offered, offered (the
    extension types of our ClientHello, until EncryptedExtensions), cookie and
    hrr_prefix (after a HelloRetryRequest, §4.2.2, §4.4.1), cert_request
    (context, schemes), leaf (the server's certificate until its
    CertificateVerify).  Records: read and write
    (atls.tls.record.RecordProtection, None without keys), tag_len, out
    (bytes queued for the peer).  After Finished: exp_master, res_master."""

    def __init__(self, config, rng, hello_override):
        self.config = config
        self.rng = rng
        self.now_ms = None
        self.hello_override = hello_override
        self.suite = self.group = self.mode = None
        self.hrr = False
        self.tickets = []
        # Transcript-Hash values needed: through ServerHello, EncryptedExtensions
        # (or the server's CertificateVerify: for its Finished), server Finished
        # (application secrets, and our Finished MAC unless we sent a
        # Certificate after it) and our Finished (resumption master); in
        # certificate mode + the server's CertificateVerify + our Finished after
        # a CertificateRequest, + our CertificateVerify with a device identity
        self.th = Transcript(4 + 2 * config.cert_mode + bool(config.client_certs))
        self.ks = self.share = self.cookie = self.cert_request = self.leaf = None
        self.psks = []
        self.offered = None  # extension types of our last ClientHello
        self.hrr_prefix = b""
        self.read = self.write = None
        self.tag_len = 0
        self.out = bytearray()
        self.exp_master = self.res_master = None


def sni(name):
    """The HostName to send as server_name (RFC 6066 §3), as bytes, or None:
    "Literal IPv4 and IPv6 addresses are not permitted in HostName", so a
    name with a colon (IPv6) or only digits and dots (IPv4) is not sent."""
    if not name:
        return None
    if isinstance(name, str):
        name = name.encode()
    if b":" in name or not name.strip(b"0123456789."):
        return None
    return name


def client_hello(ctx):
    """START -> WAIT_SH: a ClientHello (§4.1.2) handshake message, fed into the
    transcript; the second one, after a HelloRetryRequest, reuses the PSK
    offers of the first."""
    cfg = ctx.config
    if ctx.hello_override:
        msg = ctx.hello_override.pop(0)
    else:
        psks = ctx.psks
        if not ctx.hrr:
            if cfg.ticket is not None:
                from atls.tls import tickets

                offer = tickets.ticket_offer(cfg.ticket, ctx.now_ms, cfg)
                if offer is not None:
                    psks.append(offer)
                elif cfg.psk is None and not cfg.cert_mode:
                    raise UsageError("ticket expired or not for this server")
            if cfg.psk is not None:
                psks.append((cfg.psk_identity, 0, cfg.psk, False))
        exts = bytearray()
        name = sni(cfg.server_name)
        if name:
            exts += m.ext(_EXT_SERVER_NAME, m.vec(2, b"\x00" + m.vec(2, name)))
        exts += m.ext(_EXT_SUPPORTED_VERSIONS, b"\x02\x03\x04")
        exts += m.ext(_EXT_SUPPORTED_GROUPS, m.u16_list(cfg.groups))
        if cfg.cert_mode or cfg.ticket is not None:
            exts += m.ext(_EXT_SIGNATURE_ALGORITHMS, _SIG_ALGS)
        group, _, public = ctx.share
        exts += m.ext(_EXT_KEY_SHARE, m.vec(2, group.to_bytes(2, "big") + m.vec(2, public)))
        if ctx.cookie is not None:
            exts += m.ext(_EXT_COOKIE, m.vec(2, ctx.cookie))
        if psks:
            exts += m.ext(_EXT_PSK_KEY_EXCHANGE_MODES, b"\x01\x01")  # psk_dhe_ke
            ids = bytearray()
            for ident, age, _, _ in psks:
                ids += m.vec(2, ident) + age.to_bytes(4, "big")
            binders_len = 2 + 33 * len(psks)
            exts += m.ext(_EXT_PRE_SHARED_KEY, m.vec(2, ids) + bytes(binders_len))
        msg = bytearray(m.client_hello(ctx.rng(32), cfg.suites, exts))
        if psks:
            _patch_binders(ctx, msg, binders_len)
    ctx.offered = offered(msg)
    ctx.th.update(msg)
    return msg


def offered(msg):
    """The extension types of a ClientHello handshake message (§4.1.2), the
    ones a server may answer (whoever built it: hello_override too)."""
    b = Buffer(msg[38:])
    b.pull_vector(1)  # legacy_session_id
    b.pull_vector(2)  # cipher_suites
    b.pull_vector(1)  # legacy_compression_methods
    block = b.pull_block(2)
    out = []
    while not block.eof():
        out.append(block.pull_uint(2))
        block.pull_block(2)
    return out


def _patch_binders(ctx, msg, binders_len):
    """§4.2.11.2: each binder is an HMAC over the transcript up to and
    including the truncated ClientHello (without the binders list)."""
    pos = len(msg) - binders_len
    h = sha256(ctx.hrr_prefix)
    h.update(memoryview(msg)[:pos])
    thash = h.digest()
    msg[pos] = (binders_len - 2) >> 8
    msg[pos + 1] = (binders_len - 2) & 0xFF
    pos += 2
    for _, _, psk, resumption in ctx.psks:
        bk = KeySchedule(psk).binder_key(resumption)
        msg[pos] = 32
        msg[pos + 1 : pos + 33] = finished_mac(bk, thash)
        pos += 33


def server_hello(ctx, msg):
    """WAIT_SH + ServerHello (§4.1.3): mode, (EC)DHE, handshake keys."""
    cfg = ctx.config
    suite, _, group, peer_key, idx, _ = m.server_hello(msg[4:])
    if suite not in cfg.suites or (ctx.suite and suite != ctx.suite):
        raise AlertError(_ILLEGAL_PARAMETER)  # cipher suite not offered (or not the HRR's)
    ctx.suite = suite
    share = ctx.share
    if group is None:
        raise AlertError(_MISSING_EXTENSION)  # no key_share (psk_ke is not offered)
    if group != share[0]:
        raise AlertError(_ILLEGAL_PARAMETER)  # key share group
    psk = None
    if idx is not None:
        if idx >= len(ctx.psks):
            raise AlertError(_ILLEGAL_PARAMETER)  # selected_identity out of range
        _, _, psk, resumption = ctx.psks[idx]
        ctx.mode = "resumed" if resumption else "psk_dhe"
    elif not cfg.cert_mode:
        raise AlertError(_HANDSHAKE_FAILURE)  # server did not accept our PSK
    else:
        ctx.mode = "cert"
    ctx.psks = []
    ctx.group = group
    ctx.tag_len = suite_tag_len(suite)
    ctx.th.update(msg)
    ctx.ks = KeySchedule(psk)
    secret = shared_secret(group, share[1], peer_key)
    ctx.share = None  # ephemeral: used exactly once
    c_hs, s_hs = ctx.ks.handshake_traffic(secret, ctx.th.digest())
    ctx.read = RecordProtection(suite, s_hs)
    ctx.write = RecordProtection(suite, c_hs)  # alerts from here on


def encrypted_extensions(ctx, msg):
    """WAIT_EE + EncryptedExtensions (§4.3.1): certificates follow unless a
    PSK was accepted."""
    exts = m.pull_extensions(Buffer(msg[4:]))
    for t in exts:
        if t in _EE_FORBIDDEN:
            raise AlertError(_ILLEGAL_PARAMETER)  # §4.2: extension t not for EE
    for t in exts:
        # §4.2: EE holds responses only, so an extension our ClientHello did
        # not carry (early_data, ALPN, max_fragment_length, an unknown type, a
        # server_name answer to no SNI) is unsupported_extension
        if t not in ctx.offered:
            raise AlertError(_UNSUPPORTED_EXTENSION)  # extension t was not offered
        if t == _EXT_SERVER_NAME and not exts[t].eof():
            raise AlertError(_DECODE_ERROR)  # server_name answer not empty (RFC 6066 §3)
    ctx.offered = None
    ctx.th.update(msg)
    return WAIT_CERT_CR if ctx.mode == "cert" else WAIT_FINISHED


def finished(ctx, msg):
    """WAIT_FINISHED + Finished: check the server's (§4.4.4), answer with our
    flight and switch both directions to the application traffic keys."""
    th = ctx.th
    if not equal(msg[4:], finished_mac(ctx.read.secret, th.digest())):
        raise AlertError(_DECRYPT_ERROR)  # server Finished does not verify
    th.update(msg)
    ks = ctx.ks
    h = th.digest()
    c_ap, s_ap, ctx.exp_master = ks.application_traffic(h)
    ctx.read = None  # the server handshake keys are done
    flight = b""
    if ctx.cert_request is not None:
        from atls.tls import auth

        flight = auth.client_auth(ctx)  # Certificate (+ CertificateVerify)
        h = th.digest()
    fin = m.push_handshake(_FINISHED, finished_mac(ctx.write.secret, h))
    ctx.out.extend(ctx.write.seal(_CT_HANDSHAKE, flight + fin, ctx.tag_len))
    th.update(fin)
    ctx.res_master = ks.resumption_master(th.digest())
    ctx.ks = ctx.th = ctx.write = ctx.cert_request = None
    ctx.read = RecordProtection(ctx.suite, s_ap)
    ctx.write = RecordProtection(ctx.suite, c_ap)


# RFC 8446 Appendix A.1, client side, one row per transition:
# state, received handshake type, handler, next state.  A handler is a
# function of this module or "module.function" of a module in atls.tls,
# imported on first use.  It returns None to enter the row's next state or,
# where the row names several (a tuple), the one it chose.  START is left by
# sending a ClientHello (start(), and again after a HelloRetryRequest); a
# failure, a peer's alert and close() enter CLOSED.  A (state, type) pair
# that is not here is unexpected_message.  (One flat tuple: rows as tuples
# would cost a heap object each.)
# fmt: off
TRANSITIONS = (
    WAIT_SH,        _SERVER_HELLO,          server_hello,                   WAIT_EE,
    WAIT_SH,        HELLO_RETRY_REQUEST,    "retry.hello_retry_request",    START,
    WAIT_EE,        _ENCRYPTED_EXTENSIONS,  encrypted_extensions,           (WAIT_CERT_CR, WAIT_FINISHED),
    WAIT_CERT_CR,   _CERTIFICATE_REQUEST,   "auth.certificate_request",     WAIT_CERT,
    WAIT_CERT_CR,   _CERTIFICATE,           "auth.certificate",             WAIT_CV,
    WAIT_CERT,      _CERTIFICATE,           "auth.certificate",             WAIT_CV,
    WAIT_CV,        _CERTIFICATE_VERIFY,    "auth.certificate_verify",      WAIT_FINISHED,
    WAIT_FINISHED,  _FINISHED,              finished,                       CONNECTED,
    CONNECTED,      _NEW_SESSION_TICKET,    "tickets.new_session_ticket",   CONNECTED,
    CONNECTED,      _KEY_UPDATE,            "keyupdate.key_update",         CONNECTED,
)
# fmt: on


def transition(state, mtype, msg):
    """(handler, next state, table type) for a received handshake message in
    `state`; unexpected_message when TRANSITIONS has no row for it.  A
    ServerHello with the HelloRetryRequest random is HELLO_RETRY_REQUEST."""
    if mtype == _SERVER_HELLO and m.is_hello_retry(msg):
        mtype = HELLO_RETRY_REQUEST
    t = TRANSITIONS
    for i in range(0, len(t), 4):
        if t[i] == state and t[i + 1] == mtype:
            handler = t[i + 2]
            if isinstance(handler, str):
                dot = handler.find(".")
                name = handler[dot + 1 :]
                module = __import__("atls.tls." + handler[:dot], None, None, (name,))
                handler = getattr(module, name)
            return handler, t[i + 3], mtype
    raise AlertError(_UNEXPECTED_MESSAGE, "message %d in state %s" % (mtype, state))
