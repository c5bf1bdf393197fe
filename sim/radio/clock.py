"""Time for the emulated radio.

The medium and the modules read time and schedule work through a clock
object with time(), call_later(delay, fn, *args) and call_soon(fn, *args):
the running asyncio loop (real time) or VirtualClock (deterministic, for
tests and benchmarks).
"""

import heapq


class VirtualClock:
    """Deterministic stand-in for the asyncio loop's time()/call_later()."""

    class _Handle:
        def __init__(self):
            self.cancelled = False

        def cancel(self):
            self.cancelled = True

    def __init__(self):
        self.now = 0.0
        self._q = []
        self._seq = 0

    def time(self):
        return self.now

    def call_later(self, delay, fn, *args):
        h = self._Handle()
        self._seq += 1
        heapq.heappush(self._q, (self.now + max(0.0, delay), self._seq, h, fn, args))
        return h

    def call_soon(self, fn, *args):
        return self.call_later(0, fn, *args)

    def advance(self, seconds):
        """Run every callback due within the next `seconds`, in time order."""
        end = self.now + seconds
        while self._q and self._q[0][0] <= end:
            when, _, h, fn, args = heapq.heappop(self._q)
            self.now = max(self.now, when)
            if not h.cancelled:
                fn(*args)
        self.now = end

    def run_until_idle(self, limit=3600.0):
        while self._q and self._q[0][0] - self.now <= limit:
            self.advance(self._q[0][0] - self.now)
