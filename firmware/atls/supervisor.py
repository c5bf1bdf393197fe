"""The supervisor main.py runs: the device application must never stop.

    config ok ──▶ run_app ──returns──▶ done (exit_when_done only)
       ▲  │          │ raises anything (not KeyboardInterrupt/SystemExit)
       │  │          ▼
       │  │   "ATLS error" status line, gc, back off (1 s doubling to 60 s),
       │  │   restart; the max_failures-th failure in a row on a board
       │  │   (not the unix port) calls machine.reset()
       │  ▼
       │ ConfigError ─▶ "ATLS config_error" once per distinct message, LED
       └──── blinks the config-error pattern, the files are read again every
             config_poll_ms: the device starts as soon as they are fixed.
A configuration error never resets the board (a reset would only find the
same files).  Ctrl-C (KeyboardInterrupt) leaves to the REPL at any moment,
as mpremote does; the watchdog is not running before a configuration has
loaded, so the REPL stays usable on a badly configured board.

The hardware watchdog (board_config "watchdog_ms") starts once the link is
open (after XBee start-up and pairing, which wait longer than an RP2040
watchdog allows) and is fed by the event loop, between the long steps of a
handshake, and while this module waits.  Everything the loop needs from a
board (sleep, clock, reset, LED, WDT) is injected, so the same code runs on
CPython in the tests.
"""

import gc
import sys
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_BACKOFF_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_HEALTHY_MS = const(60000)  # a run this long resets the failure count
_POLL_MS = const(5000)
_TICK_MS = const(100)
# config error: three short blinks, then a pause (in _TICK_MS steps)
CONFIG_BLINK = (1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0)


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


def _now_ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


def _elapsed(t0):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(_now_ms(), t0)
    return _now_ms() - t0


def on_board():
    """True on a microcontroller port (the unix port is never reset)."""
    return sys.platform not in ("linux", "darwin", "win32")


class Watchdog:
    """machine.WDT when the board config asks for one; feed() is cheap."""

    def __init__(self, timeout_ms=None, factory=None):
        self.timeout_ms = timeout_ms
        self._factory = factory
        self._wdt = None

    def start(self, status=None):
        if self._wdt is not None or not self.timeout_ms:
            return
        try:
            make = self._factory
            if make is None:
                from machine import WDT as make
            self._wdt = make(timeout=int(self.timeout_ms))
        except Exception as e:  # no WDT on this port, or a timeout it refuses
            if status:
                status("watchdog_error", error="%s %s" % (type(e).__name__, e))
            self.timeout_ms = None

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()


class Led:
    def __init__(self, cfg):
        self._pin = None
        if not cfg or cfg.get("pin") is None:
            return
        try:
            from machine import Pin

            self._pin = Pin(cfg["pin"], Pin.OUT)
            self._on = 1 if cfg.get("active_high", True) else 0
        except Exception:
            self._pin = None

    def set(self, on):
        if self._pin is not None:
            self._pin.value(self._on if on else 1 - self._on)


class Supervisor:
    def __init__(
        self,
        load,
        run,
        status,
        sleep_ms=_sleep_ms,
        reset=None,
        max_failures=5,
        poll_ms=_POLL_MS,
        led=None,
        watchdog=None,
        now_ms=_now_ms,
        elapsed=_elapsed,
        led_config=None,
    ):
        """load() -> (board, dev) or raises ConfigError; run(board, dev,
        watchdog) runs the application (returns when it is done);
        led_config() -> the board's "led" entry, for a device.json error."""
        self.load = load
        self.run_app = run
        self.status = status
        self.sleep_ms = sleep_ms
        self.reset = reset
        self.max_failures = max_failures
        self.poll_ms = poll_ms
        self.led = led
        self.watchdog = watchdog
        self.now_ms = now_ms
        self.elapsed = elapsed
        self.led_config = led_config
        self.failures = 0
        self.restarts = 0

    def wait(self, ms, pattern=None):
        """Sleep ms, feeding the watchdog and blinking `pattern` on the LED."""
        i = 0
        while ms > 0:
            if self.watchdog is not None:
                self.watchdog.feed()
            if pattern and self.led is not None:
                self.led.set(pattern[i % len(pattern)])
                i += 1
            self.sleep_ms(min(ms, _TICK_MS))
            ms -= _TICK_MS
        if pattern and self.led is not None:
            self.led.set(0)

    def run(self, config_error=Exception, halt=()):
        """Run until the application returns (never on a deployed device) or
        raises `halt` (the device must stop: back to the REPL, no restart)."""
        backoff = _BACKOFF_MS
        last_config = None
        while True:
            t0 = self.now_ms()
            try:
                board, dev = self.load()
                if self.led is None:
                    self.led = Led(board.get("led"))
                if self.watchdog is None:
                    self.watchdog = Watchdog(board.get("watchdog_ms"))
                if board.get("max_failures"):
                    self.max_failures = int(board["max_failures"])
                last_config = None
                return self.run_app(board, dev, self.watchdog)
            except halt:
                return None
            except config_error as e:
                msg = str(e)
                if self.led is None and self.led_config is not None:
                    try:
                        self.led = Led(self.led_config())
                    except Exception:
                        pass  # no readable board config: no LED to blink
                if msg != last_config:
                    self.status("config_error", error=msg, retry_ms=self.poll_ms)
                    last_config = msg
                self.failures = 0
                self.wait(self.poll_ms, CONFIG_BLINK)
                continue
            except Exception as e:  # KeyboardInterrupt and SystemExit go through
                err = "%s: %s" % (type(e).__name__, e)
            last_config = None
            if self.elapsed(t0) >= _HEALTHY_MS:
                self.failures = 0
                backoff = _BACKOFF_MS
            self.failures += 1
            self.restarts += 1
            gc.collect()
            if self.reset is not None and self.failures >= self.max_failures:
                self.status("reset", error=err, failures=self.failures)
                self.wait(_TICK_MS)  # let the status line out
                self.reset()
            self.status("error", error=err, failures=self.failures, restart_ms=backoff)
            self.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)


def main(board_path="board_config.json", device_path="device.json"):
    """firmware/main.py: the application under the supervisor."""
    from atls import buffers

    buffers.early(board_path, device_path)  # while the heap is one piece (issue 17)
    from atls import app

    reset = None
    if on_board():
        import machine

        reset = machine.reset
    booted = []

    def load():
        board, dev = app.load_config(board_path, device_path)
        app.boot(board, dev, first=not booted)
        booted.append(1)
        return board, dev

    def run(board, dev, watchdog):
        return app.run_app(board, dev, watchdog=watchdog)

    def led_config():
        return app.load_json(board_path).get("led")

    sup = Supervisor(load, run, app.status, reset=reset, led_config=led_config)
    return sup.run(app.ConfigError, app.Halt)
