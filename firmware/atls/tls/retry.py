"""HelloRetryRequest (RFC 8446 §4.1.4), the WAIT_SH -> START transition of
Appendix A.1.

Imported by the transition table only when a server asks again, so a plain
handshake never loads this code.  The handler updates the HandshakeContext
and returns; entering START makes the client send the second ClientHello
(atls.tls.handshake.client_hello), with the new key share and/or the cookie,
over a transcript restarted with message_hash (§4.4.1).  Invariants: at most
one HelloRetryRequest per connection (a second is unexpected_message); it
must change something (illegal_parameter otherwise) and may only name a
group we offered and did not already send a share for.
"""

from atls.crypto.transcript import Transcript
from atls.errors import AlertError
from atls.tls.keyshare import key_share
from atls.tls.messages import server_hello

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MESSAGE_HASH = const(254)  # §4 HandshakeType
# §6 AlertDescription
_UNEXPECTED_MESSAGE = const(10)
_ILLEGAL_PARAMETER = const(47)


def hello_retry_request(ctx, msg):
    """WAIT_SH + HelloRetryRequest: a new key share and/or the cookie, the
    transcript restarted with message_hash (§4.4.1); START next."""
    suite, _, group, _, _, cookie = server_hello(msg[4:])
    if suite not in ctx.config.suites or (ctx.suite and suite != ctx.suite):
        raise AlertError(_ILLEGAL_PARAMETER)  # cipher suite not offered (or not the first HRR's)
    ctx.suite = suite  # the ServerHello must repeat it (§4.1.4)
    if ctx.hrr:
        raise AlertError(_UNEXPECTED_MESSAGE)  # second HelloRetryRequest
    ctx.hrr = True
    if group is None and cookie is None:
        raise AlertError(_ILLEGAL_PARAMETER)  # HelloRetryRequest changes nothing
    if group is not None:
        if group not in ctx.config.groups or group == ctx.share[0]:
            raise AlertError(_ILLEGAL_PARAMETER)  # HelloRetryRequest group
        ctx.share = (group,) + key_share(group, ctx.rng)
    if cookie is not None:
        ctx.cookie = cookie.pull_vector(2, 1)  # opaque cookie<1..2^16-1> (§4.2.2)
        cookie.expect_end()
    # §4.4.1: the transcript restarts with message_hash(Hash(ClientHello1)),
    # with as many forks as the first one had
    th = ctx.th
    prefix = bytes((_MESSAGE_HASH, 0, 0, 32)) + th.digest() + msg
    ctx.th = Transcript(th.forks_left + 1)
    ctx.th.update(prefix)
    ctx.hrr_prefix = prefix  # binders of ClientHello2 hash over it too
