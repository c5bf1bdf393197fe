"""The service's per-device state that outlives sessions (docs/PROTOCOL.md
§4, §5): message-id marks for de-duplication, the next id of the messages it
sends, and the reset key.

A device's message ids are boot << 32 | counter; its messages arrive in id
order within a session and the unacknowledged ones are sent again first in
the next session, so one mark per device (the next id expected) tells a
message delivered before (same boot, id below the mark) from a new one.  The
marks are appended to `dedupe.log` in the state directory as JSON lines
(rewritten compacted at start) so that a service restart does not deliver a
message twice; the table keeps at most `max_devices` (least recently used
go).  Outgoing ids are epoch << 32 | counter with a random epoch per service
process (the device starts a new mark when the epoch changes).  What a
session had not delivered when it ended (a timeout, an idle end) is held,
per device and bounded like the marks, for the device's next session.

Reset keys: each service start draws a new reset key; the one of the run
before it is kept as the previous key (`reset.key` holds both, mode 0600).
A session's RESET token is HMAC-SHA256(current key, "atls reset" || sid)[:16],
sent in the sealed HELLO.  A sealed packet for a session id the service does
not hold is answered with ERROR(reset) || the token under the PREVIOUS key
only: it ends the sessions the previous run lost, and since a running service
never discloses a token under its current key, nobody can collect tokens
(16-bit ids: all 65,536 of them) and end a later session that draws the same
id.  Sessions of the current run that the service ended itself (idle, expiry)
and sessions of runs before the previous one get no valid RESET: the device
finds the dead session by its own peer timeout.  Without a state directory
there is no previous key and no RESET at all.
"""

import hmac
import json
import os
from collections import OrderedDict
from pathlib import Path

from atls.protocol import RESET_TOKEN_LEN

__all__ = ["PeerTable", "stored_reset_keys", "token_under"]


def token_under(key, sid):
    """HMAC-SHA256(key, "atls reset" || sid)[:16]: a RESET token (§5)."""
    return hmac.digest(key, b"atls reset" + sid.to_bytes(2, "big"), "sha256")[:RESET_TOKEN_LEN]


def stored_reset_keys(state_dir):
    """(current, previous) reset keys of the service using `state_dir`, read
    without rotating them (tests, diagnostics); previous may be None."""
    k = (Path(state_dir) / "reset.key").read_bytes()
    return k[:32], (k[32:64] if len(k) >= 64 else None)


class PeerTable:
    def __init__(self, state_dir=None, max_devices=100000):
        self.dir = Path(state_dir) if state_dir else None
        self.max = max_devices
        self.marks = OrderedDict()  # key -> next id expected from the device
        self.out_next = OrderedDict()  # key -> next id we give a message
        self.held = OrderedDict()  # key -> (id of the first, messages) of an ended session
        self.epoch = int.from_bytes(os.urandom(4), "big")
        self._log = None
        self.reset_key = os.urandom(32)  # this run's: tokens in our HELLOs
        self.prev_reset_key = None  # the run before's: tokens in RESET answers
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.prev_reset_key = self._rotate(self.dir / "reset.key", self.reset_key)
            self._load(self.dir / "dedupe.log")

    @staticmethod
    def _rotate(path, new):
        """Write `new` as the current key, keep the old current one as the
        previous key (returned; None on a first start)."""
        try:
            old = path.read_bytes()[:32]
        except OSError:
            old = b""
        tmp = path.with_suffix(".tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new + old)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return old if len(old) == 32 else None

    def _load(self, path):
        try:
            with open(path) as f:
                for line in f:
                    try:
                        auth, ident, mark = json.loads(line)
                    except (ValueError, TypeError):
                        continue
                    self._set(self.marks, (auth, ident), mark)
        except OSError:
            pass
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for (auth, ident), mark in self.marks.items():
                f.write(json.dumps([auth, ident, mark]) + "\n")
        os.replace(tmp, path)
        self._log = open(path, "a", buffering=1)

    def _set(self, table, key, value):
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max:
            table.popitem(last=False)

    def duplicate(self, key, msg_id):
        """True when the device's message `msg_id` was delivered before."""
        m = self.marks.get(key)
        return m is not None and m >> 32 == msg_id >> 32 and msg_id < m

    def delivered(self, key, msg_id):
        """The application has the message: raise the device's mark."""
        self._set(self.marks, key, msg_id + 1)
        if self._log is not None:
            self._log.write(json.dumps([key[0], key[1], msg_id + 1]) + "\n")

    def next_out(self, key):
        """The id base for a new session's messages to the device."""
        return self.out_next.get(key, self.epoch << 32)

    def ended(self, key, next_id):
        """A session to the device ended; its next id was `next_id`."""
        if next_id >> 32 == self.epoch:
            self._set(self.out_next, key, max(next_id, self.next_out(key)))

    def hold(self, key, base, messages):
        """A session ended with `messages` ((payload, channel), the first with
        id `base`) not acknowledged: the device's next session takes them."""
        if messages and base >> 32 == self.epoch:
            self._set(self.held, key, (base, list(messages)))

    def take_held(self, key):
        """(base, messages) held for the device, or (None, [])."""
        return self.held.pop(key, (None, []))

    def token(self, sid, key=None):
        """The 16-byte RESET token of session id `sid` (this run's key: the
        one for our HELLO)."""
        return token_under(key or self.reset_key, sid)

    def reset_token(self, sid):
        """The token a RESET for `sid` may carry: the previous run's (None
        when there is none) - never this run's, which would let anyone
        collect the tokens of sessions still to come."""
        if self.prev_reset_key is None:
            return None
        return self.token(sid, self.prev_reset_key)

    def close(self):
        if self._log is not None:
            self._log.close()
            self._log = None
