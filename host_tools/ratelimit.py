"""Per-key token buckets with a bounded table, for the service and the gateway.

A key (an address, a device) may send `burst` packets at once and `rate` per
second after that.  The table never grows past `max_keys`: when it is full it
is cleared, which forgets everyone rather than letting a flood of new keys
grow memory (a forgotten key starts again with a full bucket).
"""


class TokenBuckets:
    def __init__(self, rate_per_s, burst, max_keys):
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = int(max_keys)
        self._b = {}  # key -> [tokens, last time in seconds]

    def allow(self, key, now_s):
        """Take one token for `key` at time `now_s` (seconds); False when empty."""
        b = self._b.get(key)
        if b is None:
            if len(self._b) >= self.max_keys:
                self._b.clear()
            b = self._b[key] = [self.burst, now_s]
        b[0] = min(self.burst, b[0] + (now_s - b[1]) * self.rate)
        b[1] = now_s
        if b[0] < 1:
            return False
        b[0] -= 1
        return True

    def empty(self, key, now_s):
        """True when allow(key, now_s) would refuse; takes nothing (a cheap
        test before the work that precedes allow)."""
        b = self._b.get(key)
        return b is not None and b[0] + (now_s - b[1]) * self.rate < 1

    def __len__(self):
        return len(self._b)
