"""(EC)DHE key shares of the TLS 1.3 client (RFC 8446 §4.2.8, §7.4).

Groups (atls.protocol, §4.2.7): x25519 (a 32-byte u-coordinate, RFC 7748)
and secp256r1 (a 65-byte uncompressed point, §4.2.8.2).  Invariants: a
private key comes from the caller's rng and is used for exactly one shared
secret; the peer's share is validated by the curve code and a bad one is
illegal_parameter.  The curve modules are imported only when a handshake
selects their group (their bytecode sits in the heap when loaded from .mpy).
"""

from atls.errors import AlertError, CryptoError, UsageError
from atls.protocol import SECP256R1, X25519


def key_share(group, rng):
    """(private, public) ephemeral key pair for `group`; rng(n) gives the
    private bytes."""
    if group == X25519:
        from atls.crypto.x25519 import x25519_base

        priv = rng(32)
        return priv, x25519_base(priv)
    if group != SECP256R1:
        raise UsageError("unsupported group")
    from atls.crypto import p256

    while True:  # rejection sampling: a scalar in [1, n-1]
        priv = rng(32)
        try:
            return priv, p256.public_key(priv)
        except (CryptoError, ValueError):
            pass


def shared_secret(group, priv, peer):
    """The (EC)DHE shared secret; illegal_parameter for a bad peer share."""
    try:
        if group == X25519:
            from atls.crypto.x25519 import x25519

            return x25519(priv, peer)
        from atls.crypto import p256

        return p256.ecdh(priv, peer)
    except (CryptoError, ValueError):
        raise AlertError(47)  # illegal_parameter: bad key share from peer
