"""WiFi station for boards whose link is UDP over WiFi (ESP32, Pico W).

start(cfg) brings the station up: active, connect, and wait for
isconnected() for at most cfg["timeout_ms"] (default 15 s), raising
WiFiError (an OSError) when the network never comes; it returns the WiFi
object, or None when there is nothing to do (no ssid in the board config, or
no `network` module: the unix port, where the host's network is used).

check(now_ms) is called on every turn of the main loop (UDPTransport.recv
calls it): when the link dropped it calls connect() again, at most every
retry_ms, doubling up to retry_max_ms while it stays down.  The Pico W's
cyw43 driver never reconnects by itself; on ESP32 a connect() while the
driver is already reconnecting raises OSError, which is counted and
ignored.  It never blocks.

resolve(host, port, socktype) is getaddrinfo with a few retries and a
doubling backoff: right after the link comes up the first lookups can fail.
The last OSError is raised as it is.

Time and sleep come from the caller (clock, sleep_ms) so that the logic
runs under a test's fake WLAN object and clock.
"""

import time


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:  # CPython
        time.sleep(ms / 1000)


def _ticks():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


def _elapsed(now, then):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(now, then)
    return now - then


class WiFiError(OSError):
    pass


class WiFi:
    def __init__(self, wlan, ssid, password="", retry_ms=2000, retry_max_ms=60000, sleep_ms=None):
        self.wlan = wlan
        self.ssid = ssid
        self.password = password
        self.retry_ms = retry_ms
        self.retry_max_ms = retry_max_ms
        self._sleep = sleep_ms or _sleep_ms
        self._wait = retry_ms
        self._last = None  # when connect() was last called (ms)
        self.up = False
        self.drops = 0  # times the link was found down after being up
        self.reconnects = 0  # connect() calls made by check()
        self.connect_errors = 0  # connect() calls that raised OSError

    def connect(self, timeout_ms=15000, clock=None, idle=None):
        """Blocking: connect and wait for isconnected(); WiFiError on timeout.
        idle(), when given, runs on every wait (e.g. to feed a watchdog)."""
        clock = clock or _ticks
        w = self.wlan
        w.active(True)
        t0 = clock()
        if not w.isconnected():
            self._connect(t0)
        while not w.isconnected():
            if _elapsed(clock(), t0) >= timeout_ms:
                raise WiFiError(
                    "WiFi %r not connected within %d ms (status %s)"
                    % (self.ssid, timeout_ms, _status(w))
                )
            if idle is not None:
                idle()
            self._sleep(100)
        self.up = True
        self._wait = self.retry_ms
        return self

    def check(self, now_ms=None):
        """Non-blocking; True when the link is up.  Reconnects a dropped link."""
        if now_ms is None:
            now_ms = _ticks()
        if self.wlan.isconnected():
            if not self.up:
                self.up = True
                self._wait = self.retry_ms
            return True
        if self.up:
            self.up = False
            self.drops += 1
            self._last = None  # reconnect at once
        if self._last is None or _elapsed(now_ms, self._last) >= self._wait:
            if self._last is not None:
                self._wait = min(self.retry_max_ms, self._wait * 2)
            self.reconnects += 1
            self._connect(now_ms)
        return False

    def stats(self):
        return {
            "up": self.up,
            "drops": self.drops,
            "reconnects": self.reconnects,
            "connect_errors": self.connect_errors,
        }

    def _connect(self, now_ms):
        self._last = now_ms
        try:
            self.wlan.connect(self.ssid, self.password)
        except OSError:
            self.connect_errors += 1


def _status(w):
    try:
        return w.status()
    except (AttributeError, OSError, TypeError):
        return "?"


def start(cfg, wlan=None, clock=None, idle=None):
    """The board's WiFi station, connected; None when there is none to run."""
    if not cfg or not cfg.get("ssid"):
        return None
    if wlan is None:
        try:
            import network
        except ImportError:
            return None  # the unix port: the host's network
        wlan = network.WLAN(network.STA_IF)
    w = WiFi(
        wlan,
        cfg["ssid"],
        cfg.get("password", ""),
        retry_ms=int(cfg.get("retry_ms", 2000)),
        retry_max_ms=int(cfg.get("retry_max_ms", 60000)),
    )
    return w.connect(int(cfg.get("timeout_ms", 15000)), clock=clock, idle=idle)


def resolve(host, port, socktype, tries=4, backoff_ms=250, getaddrinfo=None, sleep_ms=None):
    """getaddrinfo(host, port, 0, socktype)[0], retried on OSError."""
    if getaddrinfo is None:
        import socket

        getaddrinfo = socket.getaddrinfo
    sleep = sleep_ms or _sleep_ms
    wait = backoff_ms
    for i in range(tries):
        try:
            return getaddrinfo(host, port, 0, socktype)[0]
        except OSError:
            if i == tries - 1:
                raise
        sleep(wait)
        wait *= 2
