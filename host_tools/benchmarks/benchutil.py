"""Timing helper shared by benchmark scripts; runs under MicroPython and CPython.

A benchmark script is a plain module in this folder that imports `atls.*`,
measures with `per_op`, and ends with `emit(results)`: one JSON object on the
last line of output mapping metric name -> value (microseconds per operation
unless the name says otherwise).  `host_tools.bench` runs every script under
the MicroPython unix port and under CPython and puts the columns side by side.
"""

import sys

try:
    from time import ticks_diff, ticks_us

    def _now():
        return ticks_us()

    def _elapsed(t0):
        return ticks_diff(ticks_us(), t0)

except ImportError:  # CPython
    from time import perf_counter

    def _now():
        return perf_counter()

    def _elapsed(t0):
        return (perf_counter() - t0) * 1e6


def per_op(fn, min_us=300000, max_iter=100000):
    """Microseconds per call of fn(), repeated until min_us have passed."""
    fn()  # warm up (imports, first allocations)
    n = 0
    t0 = _now()
    while True:
        fn()
        n += 1
        el = _elapsed(t0)
        if el >= min_us or n >= max_iter:
            return el / n


def emit(results):
    parts = []
    for k in sorted(results):
        v = results[k]
        if isinstance(v, float):
            parts.append('"%s": %.3f' % (k, v))
        elif isinstance(v, str):
            parts.append('"%s": "%s"' % (k, v))
        else:
            parts.append('"%s": %s' % (k, v))
    sys.stdout.write("{" + ", ".join(parts) + "}\n")
