"""TLS 1.3 transcript hash (RFC 8446 §4.4.1) over SHA-256 without hash copies:
Transcript(forks=N) keeps N+1 live hash objects fed the same bytes."""
# Theory of operation.  The handshake needs Transcript-Hash(M1..Mn) at several
# points while the transcript keeps growing.  CPython would copy() the running
# hash and finalise the copy, but MicroPython's hashlib.sha256 has no copy()
# and its digest() finalises the object.  So a Transcript keeps forks + 1 live
# hash objects that all get the same bytes:
#   update(data)  feeds every live object (cost: forks_left + 1 SHA-256 updates);
#   digest()      pops one object and finalises it: the hash of everything so
#                 far; forks_left drops by one;
#   the last object is never handed out, so update() keeps working when
#   forks_left is 0, and digest() then raises UsageError.
# The rule in short: Transcript(forks=N) allows exactly N digests, update()
# always works.  Size N for the Transcript-Hash values the handshake needs
# (each live object is ~150 bytes of RAM on MicroPython).
# replace_with_message_hash() is the HelloRetryRequest rule of §4.4.1:
# Hash(ClientHello1) is taken from a live object, all objects are restarted
# (forks_left is N again) and fed message_hash(254) || 00 00 20 || that hash.
# Transcript(forks=N, prefix=other) continues from other's current state (PSK
# binders, §4.2.11.2, hash a truncated ClientHello after the messages already
# in other): it takes N+1 of other's spare objects (other.forks_left drops by
# N+1, UsageError if it has fewer), or makes fresh ones while no byte has been
# fed to other yet.
from atls.crypto.backend import sha256
from atls.errors import UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MESSAGE_HASH = const(254)  # HandshakeType message_hash (RFC 8446 §4)
_HASH_LEN = const(32)  # uint24 length of message_hash: Hash.length (RFC 8446 §4.4.1)


class Transcript:
    """Running SHA-256 transcript allowing `forks` digest() snapshots."""

    def __init__(self, forks=4, prefix=None):
        if not isinstance(forks, int) or forks < 1:
            raise UsageError("Transcript forks < 1")
        self._forks = forks
        self._fed = prefix is not None and prefix._fed
        if self._fed:
            live = prefix._live
            n = len(live) - forks - 1
            if n < 1:
                raise UsageError("prefix transcript has too few forks")
            self._live = live[n:]
            del live[n:]
        else:
            self._live = [sha256() for _ in range(forks + 1)]

    @property
    def forks_left(self):
        """How many more digest() calls are possible."""
        return len(self._live) - 1

    def update(self, data):
        """Append handshake bytes (bytes, bytearray or memoryview)."""
        for h in self._live:
            h.update(data)
        if len(data):
            self._fed = True

    def digest(self):
        """Transcript-Hash of everything so far (32 bytes); uses up a fork."""
        if len(self._live) < 2:
            raise UsageError("no transcript fork left")
        return self._live.pop().digest()

    def replace_with_message_hash(self):
        """§4.4.1 HelloRetryRequest: restart as message_hash(Hash(ClientHello1))."""
        ch1 = self._live.pop().digest()
        self._live = [sha256() for _ in range(self._forks + 1)]
        self.update(bytes((_MESSAGE_HASH, 0, 0, _HASH_LEN)) + ch1)
