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
# A HelloRetryRequest (§4.4.1) restarts the transcript: the client makes a
# new Transcript and feeds it message_hash || Hash(ClientHello1) itself.
from atls.crypto.backend import sha256
from atls.errors import UsageError


class Transcript:
    """Running SHA-256 transcript allowing `forks` digest() snapshots."""

    def __init__(self, forks=4):
        if not isinstance(forks, int) or forks < 1:
            raise UsageError("Transcript forks < 1")
        self._live = [sha256() for _ in range(forks + 1)]

    @property
    def forks_left(self):
        """How many more digest() calls are possible."""
        return len(self._live) - 1

    def update(self, data):
        """Append handshake bytes (bytes, bytearray or memoryview)."""
        for h in self._live:
            h.update(data)

    def digest(self):
        """Transcript-Hash of everything so far (32 bytes); uses up a fork."""
        if len(self._live) < 2:
            raise UsageError("no transcript fork left")
        return self._live.pop().digest()
