"""Session resumption (RFC 8446 §4.6.1, §4.2.11): NewSessionTicket in the
CONNECTED state of Appendix A.1, and the offer of a kept ticket.

Imported only when a connected client receives a ticket or a ClientHello
offers one, so a plain PSK handshake never loads this code.  Invariants
(§4.6.1): at most _MAX_TICKETS tickets are kept, newest last; a lifetime of
0 means "discard immediately" (not kept), one over seven days is refused
(illegal_parameter: "Servers MUST NOT use any value greater than 604800");
a ticket's PSK is derived from the resumption master secret and the ticket
nonce.  A ticket is bound to what authenticated the session it came from:
the server name and the trust anchors (CA certificates, SPKI pins, external
PSK), as one SHA-256 (`binding`); it is offered only to a configuration
with the same name and, unless the configuration names none (a ticket-only
configuration), the same anchors.  It is offered only while its age, by the
device clock (now_ms given at receipt and at the offer), is under its
lifetime, at most once (UsageError the second time), with its obfuscated
age (§4.2.11.1).  A ticket not offered is not marked used.
"""

from atls.buffer import Buffer
from atls.crypto.backend import sha256
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
    (pass it as ClientConfig(ticket=...)).  server_name and anchors (the
    SHA-256 `binding` of the configuration's trust anchors) name where it
    came from."""

    def __init__(
        self, identity, psk, age_add, lifetime, suite, received_ms, server_name=None, anchors=None
    ):
        self.identity = identity
        self.psk = psk
        self.age_add = age_add
        self.lifetime = lifetime
        self.suite = suite
        self.received_ms = received_ms
        self.server_name = server_name
        self.anchors = anchors
        self.used = False


def binding(cfg):
    """SHA-256 over a configuration's trust anchors (CA certificates, SPKI
    pins, external PSK identity and key), each length-prefixed; None when it
    has none."""
    if not (cfg.ca_certs or cfg.spki_pins or cfg.psk):
        return None
    h = sha256()
    for tag, items in ((b"c", cfg.ca_certs), (b"p", cfg.spki_pins)):
        for item in items:
            h.update(tag + len(item).to_bytes(4, "big"))
            h.update(item)
    if cfg.psk is not None:
        for item in (cfg.psk_identity, cfg.psk):
            h.update(b"k" + len(item).to_bytes(4, "big"))
            h.update(item)
    return h.digest()


def usable(t, now_ms, cfg):
    """True when ticket t may be offered under cfg at now_ms (see above)."""
    if t.server_name != cfg.server_name:
        return False
    anchors = binding(cfg)
    if anchors is not None and anchors != t.anchors:
        return False
    if now_ms is None or t.received_ms is None:
        return False  # no clock: the age (and so the lifetime) is unknown
    age = now_ms - t.received_ms
    return 0 <= age < t.lifetime * 1000


def ticket_offer(t, now_ms, cfg):
    """(identity, obfuscated_ticket_age, psk, True) for a ClientHello
    (§4.2.11.1), marking the ticket used; None when it may not be offered."""
    if t.used:
        raise UsageError("ticket already used")
    if not usable(t, now_ms, cfg):
        return None
    t.used = True
    age = now_ms - t.received_ms
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
    if lifetime == 0:
        return  # §4.6.1: "discarded immediately"
    cfg = ctx.config
    tickets = ctx.tickets
    if len(tickets) >= _MAX_TICKETS:
        tickets.pop(0)
    anchors = binding(cfg)
    if anchors is None and cfg.ticket is not None:  # resumed by a ticket-only configuration
        anchors = cfg.ticket.anchors
    psk = hkdf_expand_label(ctx.res_master, b"resumption", nonce, 32)
    tickets.append(
        Ticket(ticket, psk, age_add, lifetime, ctx.suite, ctx.now_ms, cfg.server_name, anchors)
    )
