"""KeyUpdate (RFC 8446 §4.6.3, §7.2) in the CONNECTED state of Appendix A.1.

Imported only when a connected client receives one.  The server's direction
moves to the next application traffic secret at once; when the server asks
(update_requested), our KeyUpdate is sealed under the old client keys and
the client direction moves on after it.  Any other request value is
illegal_parameter.
"""

from atls.buffer import Buffer
from atls.crypto.hkdf import hkdf_expand_label
from atls.errors import AlertError
from atls.tls.messages import push_handshake
from atls.tls.record import RecordProtection

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_KEY_UPDATE = const(24)  # §4 HandshakeType
_CT_HANDSHAKE = const(22)
_ILLEGAL_PARAMETER = const(47)


def key_update(ctx, msg):
    """CONNECTED + KeyUpdate: next read keys, and next write keys if asked."""
    b = Buffer(msg[4:])
    requested = b.pull_uint(1)
    b.expect_end()
    if requested > 1:
        raise AlertError(_ILLEGAL_PARAMETER)  # key_update value
    ctx.read = RecordProtection(ctx.suite, _next_secret(ctx.read.secret))
    if requested:
        update = push_handshake(_KEY_UPDATE, b"\x00")
        ctx.out.extend(ctx.write.seal(_CT_HANDSHAKE, update, ctx.tag_len))
        ctx.write = RecordProtection(ctx.suite, _next_secret(ctx.write.secret))


def _next_secret(secret):
    """application_traffic_secret_N+1 (§7.2)."""
    return hkdf_expand_label(secret, b"traffic upd", b"", 32)
