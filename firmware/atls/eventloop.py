"""The device's event loop around a DeviceSession and a transport.

`Clock` turns MicroPython's wrapping `time.ticks_ms()` into a monotonic
millisecond count (the cores compare plain integers).  The count is rebased
(back to about 0) before it reaches REBASE_AT = 2**29 ms (6.2 days), well
inside the 31-bit small-int range of a 32-bit port (2**30 ms = 12.4 days),
where every timer comparison would allocate a long int: `step()` does it and
tells the session (`session.rebase`) and `on_event(("rebase", delta))`, so
whoever keeps timestamps subtracts delta.  `step()` is one turn of the loop
(feed the watchdog, send what is due, hand events over, wait for input until
the next timer); `run()` loops it until a condition holds.  The session and
the link stay sans-I/O: only this module and the drivers touch time and I/O.
"""

import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_WAIT_MS = const(50)


def _ticks_diff(a, b):
    return a - b


class Clock:
    REBASE_AT = 1 << 29

    def __init__(self, raw=None, diff=None):
        """raw() and diff(a, b) default to time.ticks_ms/ticks_diff (MicroPython)
        or a monotonic count (CPython); tests inject a wrapping raw clock."""
        if raw is None:
            if hasattr(time, "ticks_ms"):
                raw, diff = time.ticks_ms, time.ticks_diff
            else:
                raw = _monotonic_ms
        self._raw = raw
        self._diff = diff or _ticks_diff
        self._last = raw()
        self._now = 0

    def __call__(self):
        raw = self._raw()
        self._now += self._diff(raw, self._last)
        self._last = raw
        return self._now

    def rebase_due(self):
        return self._now >= self.REBASE_AT

    def rebase(self):
        """Move the count back to 0: returns delta, the amount subtracted."""
        delta = self._now
        self._now = 0
        return delta


def _monotonic_ms():
    return int(time.monotonic() * 1000)


def step(session, transport, clock, on_event, wait_cap=_MAX_WAIT_MS, block=True, feed=None):
    """One turn: send what is due, hand events to `on_event`, wait for input
    at most until the session's next timer (or `wait_cap` ms).  `feed` (a
    watchdog) is called once per turn."""
    if feed is not None:
        feed()
    now = clock()
    if clock.rebase_due():
        delta = clock.rebase()
        now = clock()
        session.rebase(delta, now)
        on_event(("rebase", delta))
    for d in session.datagrams(now):
        transport.send(d)
    for ev in session.events():
        on_event(ev)
    t = session.next_timer_ms()
    wait = wait_cap if t is None else max(0, min(wait_cap, t - now))
    for d in transport.recv(wait if block else 0):
        session.receive(d, clock())
    for ev in session.events():
        on_event(ev)


def run(session, transport, on_event, until, clock=None, timeout_ms=None):
    """Loop until `until()` is true (or timeout_ms passed): returns until()."""
    clock = clock or Clock()
    start = clock()
    if session.state == "idle":
        session.connect(start)
    while not until():
        if timeout_ms is not None and clock() - start > timeout_ms:
            break
        step(session, transport, clock, on_event)
    return until()
