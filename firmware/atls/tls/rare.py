"""The TLS 1.3 client's rarely taken paths: HelloRetryRequest (RFC 8446
§4.1.4), resumption tickets (§4.6.1, §4.2.11) and KeyUpdate (§4.6.3).

atls.tls.client imports this module only when a server sends a
HelloRetryRequest, when the connected client receives a post-handshake
message, or when a ticket is offered for resumption; a plain handshake never
loads its bytecode.  Functions take the client as their first argument and
update its state exactly as the Appendix A.1 state machine says.
"""

from atls.buffer import Buffer
from atls.crypto.hkdf import hkdf_expand_label
from atls.crypto.transcript import Transcript
from atls.errors import AlertError, UsageError
from atls.tls import keys
from atls.tls.messages import pull_extensions, push_handshake

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_NEW_SESSION_TICKET = const(4)  # §4 HandshakeType
_KEY_UPDATE = const(24)
_MESSAGE_HASH = const(254)
_CT_HANDSHAKE = const(22)
_MAX_LIFETIME = const(604800)  # §4.6.1: seven days
_MAX_TICKETS = const(4)  # tickets kept per client, newest last
# §6 AlertDescription
_UNEXPECTED_MESSAGE = const(10)
_ILLEGAL_PARAMETER = const(47)
_DECODE_ERROR = const(50)


class Ticket:
    """A resumption ticket (§4.6.1) with its PSK; usable exactly once
    (pass it as ClientConfig(ticket=...))."""

    def __init__(self, identity, psk, age_add, lifetime, suite, received_ms):
        self.identity = identity
        self.psk = psk
        self.age_add = age_add
        self.lifetime = lifetime
        self.suite = suite
        self.received_ms = received_ms
        self.used = False


def ticket_offer(t, now_ms):
    """(identity, obfuscated_ticket_age, psk, True) for a ClientHello
    (§4.2.11.1); marks the ticket used."""
    if t.used:
        raise UsageError("ticket already used")
    t.used = True
    age = 0
    if now_ms is not None and t.received_ms is not None:
        age = max(0, now_ms - t.received_ms)
    return t.identity, (age + t.age_add) & 0xFFFFFFFF, t.psk, True


def on_hello_retry(c, msg, group, cookie):
    """HelloRetryRequest (§4.1.4): a new key share and/or the cookie, the
    transcript restarted with message_hash (§4.4.1), ClientHello again."""
    if c.hrr:
        raise AlertError(_UNEXPECTED_MESSAGE)  # second HelloRetryRequest
    c.hrr = True
    if group is None and cookie is None:
        raise AlertError(_ILLEGAL_PARAMETER)  # HelloRetryRequest changes nothing
    if group is not None:
        if group not in c.config.groups or group == c._share[0]:
            raise AlertError(_ILLEGAL_PARAMETER)  # HelloRetryRequest group
        c._share = (group,) + keys.key_share(group, c._rng)
    if cookie is not None:
        c._cookie = cookie.pull_vector(2, 1)  # opaque cookie<1..2^16-1> (§4.2.2)
        cookie.expect_end()
    # §4.4.1: the transcript restarts with message_hash(Hash(ClientHello1)),
    # with as many forks as the first one had
    th = c._th
    prefix = bytes((_MESSAGE_HASH, 0, 0, 32)) + th.digest() + msg
    c._th = Transcript(th.forks_left + 1)
    c._th.update(prefix)
    c._hrr_prefix = prefix  # binders of ClientHello2 hash over it too
    c._send_client_hello()


def on_message(c, mtype, msg):
    """A post-handshake message for the CONNECTED client `c`."""
    b = Buffer(msg[4:])
    if mtype == _NEW_SESSION_TICKET:  # §4.6.1
        lifetime = b.pull_uint(4)
        age_add = b.pull_uint(4)
        nonce = b.pull_vector(1)
        ticket = b.pull_vector(2, 1)
        if len(ticket) > c.config.max_ticket:
            raise AlertError(_DECODE_ERROR)  # ticket larger than configured maximum
        pull_extensions(b)
        if lifetime > _MAX_LIFETIME:
            raise AlertError(_ILLEGAL_PARAMETER)  # ticket lifetime
        if len(c.tickets) >= _MAX_TICKETS:
            c.tickets.pop(0)
        psk = hkdf_expand_label(c._res_master, b"resumption", nonce, 32)
        c.tickets.append(Ticket(ticket, psk, age_add, lifetime, c.suite, c._now_ms))
    elif mtype == _KEY_UPDATE:  # §4.6.3
        requested = b.pull_uint(1)
        b.expect_end()
        if requested > 1:
            raise AlertError(_ILLEGAL_PARAMETER)  # key_update value
        c._read = keys.RecordProtection(c.suite, _next_secret(c._read.secret))
        if requested:
            c._out.extend(
                c._write.seal(_CT_HANDSHAKE, push_handshake(_KEY_UPDATE, b"\x00"), c._tag_len)
            )
            c._write = keys.RecordProtection(c.suite, _next_secret(c._write.secret))
    else:
        raise AlertError(_UNEXPECTED_MESSAGE, "message %d in state %s" % (mtype, c.state))


def _next_secret(secret):
    """application_traffic_secret_N+1 (§7.2)."""
    return hkdf_expand_label(secret, b"traffic upd", b"", 32)
