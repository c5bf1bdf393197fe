"""Exception families shared by every atls module.

Two families, after aioquic and h11: what the *peer* (or the wire) caused, and
what the *caller* did wrong.  Parsers may only raise the first family on bad
input; any other exception escaping a parser is a bug (the fuzz tests check).

Message text: every string constant costs heap when firmware runs from .mpy
(~64 bytes each on a 64-bit port), so failures caused by peer input are
raised with their code only (AlertError(47), AuthError()) and the reason is a
comment at the raise site, which the traceback's line number points to.
Caller mistakes (UsageError family) keep a short text.
"""


class ATLSError(Exception):
    """Base of everything atls raises on purpose."""


class UsageError(ValueError):
    """The caller passed something impossible (wrong key size, bad config).

    A ValueError (MicroPython allows only one native base class), so it is
    deliberately outside the ATLSError family that peers can trigger.
    """


class CryptoError(ATLSError):
    """A cryptographic operation failed on its input."""


class KeyLengthError(UsageError):
    """A key, nonce, tag or scalar has the wrong length for the algorithm."""


class AuthError(CryptoError):
    """AEAD tag or signature did not verify: no plaintext is released."""


class InvalidPointError(CryptoError):
    """A public key is not usable (not on the curve, or the shared secret is zero)."""


class AlertError(ATLSError):
    """A TLS failure carrying the RFC 8446 §6 alert description code.

    Raised for anything the peer sent that we refuse; the client then sends
    the alert (when a record layer is up) and enters the CLOSED state.
    """

    def __init__(self, description, message=""):
        super().__init__(message or str(description))
        self.description = description
        self.message = message


class DecodeError(AlertError):
    """Truncated, over-long or malformed bytes (alert decode_error, 50)."""

    def __init__(self, message="decode_error"):
        super().__init__(50, message)
