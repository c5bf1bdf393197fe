"""A device-side XBee driver run for tests/test_xbee_driver.py, dialect-neutral
(MicroPython unix port and CPython): connects atls.drivers.xbee to an
emulated device module's TCP port (sim/radio.py) and prints one JSON line per
step for the test, which plays the coordinator side on the pty.

argv: mode host port escaped(0|1) at_timeout_ms guard_ms
mode "scenario": ready -> joined -> send 60 B and 90 B -> receive -> left ->
                 send while not joined -> done
mode "silent":   configure against a module that never answers -> error
mode "reset":    ready -> (the test resets the module) -> reconfigured
"""

import json
import sys
import time
from binascii import hexlify

from atls.drivers.xbee import XBeeError, open_tcp

if hasattr(time, "ticks_ms"):

    def now():
        return time.ticks_ms()

    def since(t):
        return time.ticks_diff(time.ticks_ms(), t)
else:

    def now():
        return int(time.monotonic() * 1000)

    def since(t):
        return now() - t


def out(d):
    print(json.dumps(d))
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


def h(b):
    return hexlify(b).decode()


def stats(t):
    s = t.stats()
    # JSON object keys must be strings (MicroPython would print int keys)
    s["failures"] = dict([("%d" % k, v) for k, v in s["failures"].items()])
    s["modem"] = dict([("%d" % k, v) for k, v in s["modem"].items()])
    return s


def until(t, cond, ms):
    t0 = now()
    got = []
    while not cond(got) and since(t0) < ms:
        got += t.recv(50)
    return got


mode, host, port, esc = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
kw = {
    "escaped": esc,
    "at_timeout_ms": int(sys.argv[5]),
    "at_retries": 1,
    "guard_ms": int(sys.argv[6]),
}
t0 = now()
t = open_tcp(host, port, **kw)
if mode == "silent":
    try:
        t.wait_ready(20000)
        out({"step": "error", "error": None, "ms": since(t0)})
    except XBeeError as e:
        out({"step": "error", "error": str(e), "ms": since(t0), "state": t.state})
    sys.exit(0)

t.wait_ready(10000)
if mode == "reset":
    out({"step": "ready", "module_ap": t.module_ap})
    until(t, lambda g: t.reconfigures and t.state == "ready" and t.joined, 15000)
    out({"step": "reconfigured", "state": t.state, "module_ap": t.module_ap, "stats": stats(t)})
    sys.exit(0)
out(
    {
        "step": "ready",
        "mtu": t.mtu,
        "address64": h(t.address64),
        "joined": t.joined,
        "module_ap": t.module_ap,
        "ms": since(t0),
    }
)
out({"step": "joined", "joined": t.wait_joined(10000)})
t.send(b"\xa0" + bytes(range(59)))  # 60 bytes: fits 84 and 66
t.send(b"\xa1" * 90)  # 90 bytes: above NP, Transmit Status 0x74
got = until(t, lambda g: g and t.delivered + t.too_large >= 2, 10000)
out({"step": "received", "payloads": [h(p) for p in got], "stats": stats(t)})
until(t, lambda g: t.joined is False, 10000)
out({"step": "left", "joined": t.joined, "stats": stats(t)})
t.send(b"\xa2" * 10)  # not joined: Transmit Status 0x22
until(t, lambda g: t.failures, 3000)
out({"step": "done", "stats": stats(t)})
t.close()
