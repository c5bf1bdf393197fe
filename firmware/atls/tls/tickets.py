"""Session resumption (RFC 8446 §4.6.1, §4.2.11): NewSessionTicket in the
CONNECTED state of Appendix A.1, and the offer of a kept ticket.

Imported only when a connected client receives a ticket or a ClientHello
offers one, so a plain PSK handshake never loads this code.  Invariants: at
most _MAX_TICKETS tickets are kept, newest last; a ticket's PSK is derived
from the resumption master secret and the ticket nonce (§4.6.1); a ticket
is offered at most once (UsageError the second time) with its obfuscated
age (§4.2.11.1).
"""

from atls.buffer import Buffer
from atls.crypto.hkdf import hkdf_expand_label
from atls.errors import AlertError, UsageError
from atls.tls.messages import pull_extensions

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_LIFETIME = const(604800)  # §4.6.1: seven days
_MAX_TICKETS = const(4)  # tickets kept per client, newest last
# §6 AlertDescription
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


def new_session_ticket(ctx, msg):
    """CONNECTED + NewSessionTicket (§4.6.1): keep the ticket and its PSK."""
    b = Buffer(msg[4:])
    lifetime = b.pull_uint(4)
    age_add = b.pull_uint(4)
    nonce = b.pull_vector(1)
    ticket = b.pull_vector(2, 1)
    if len(ticket) > ctx.config.max_ticket:
        raise AlertError(_DECODE_ERROR)  # ticket larger than configured maximum
    pull_extensions(b)
    if lifetime > _MAX_LIFETIME:
        raise AlertError(_ILLEGAL_PARAMETER)  # ticket lifetime
    tickets = ctx.tickets
    if len(tickets) >= _MAX_TICKETS:
        tickets.pop(0)
    psk = hkdf_expand_label(ctx.res_master, b"resumption", nonce, 32)
    tickets.append(Ticket(ticket, psk, age_add, lifetime, ctx.suite, ctx.now_ms))
