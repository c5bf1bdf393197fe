"""The device's event loop around a DeviceSession and a transport.

`Clock` turns MicroPython's wrapping `time.ticks_ms()` into a monotonic
millisecond count (the cores compare plain integers).  `step()` is one turn
of the loop (send what is due, hand events over, wait for input until the
next timer); `run()` loops it until a condition holds.  The session and the
link stay sans-I/O: only this module and the drivers touch time and I/O.
"""

import time

_MAX_WAIT_MS = 50


class Clock:
    def __init__(self):
        self._has_ticks = hasattr(time, "ticks_ms")
        self._last = self._raw()
        self._now = 0

    def _raw(self):
        if self._has_ticks:
            return time.ticks_ms()
        return int(time.monotonic() * 1000)

    def __call__(self):
        raw = self._raw()
        if self._has_ticks:
            self._now += time.ticks_diff(raw, self._last)
        else:
            self._now += raw - self._last
        self._last = raw
        return self._now


def step(session, transport, clock, on_event, wait_cap=_MAX_WAIT_MS, block=True):
    """One turn: send what is due, hand events to `on_event`, wait for input
    at most until the session's next timer (or `wait_cap` ms)."""
    now = clock()
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
