"""The device's XBee driver (atls.drivers.xbee) against emulated XBee 3 modules.

End to end, under CPython and under the MicroPython unix port: the driver
(tests/mpy/xbee_device.py) talks to an emulated device module over TCP; the
module joins the simulated medium once the test opens the join window on the
emulated coordinator, whose pty the test reads and writes with pyserial as a
gateway would.  Checked: configure (AP set when it differs, NP read back as
84, or 66 with EE=1, SH+SL = the module's address), join on Modem Status
0x02, a 60-byte payload delivered to the coordinator and a 90-byte one
refused with Transmit Status 0x74 (counted, never sent), a payload received
back, leave on 0x03, 0x22 when not joined, and a silent module ending in
XBeeError within a bounded time.

In-process (CPython): transparent-mode (AP=0) fallback through "+++"
command mode, foreign sources counted and dropped, delivery failures by
code, restart (0x00 then 0x02), an AP change written with WR, a module reset
mid-session re-configured (its AP put back), AT helper errors, a closed
link, and the board-config constructor with a stand-in `machine.UART`.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time
import types

import pytest
import serial
from conftest import FIRMWARE, TESTS

from atls import xbee as X
from atls.drivers.xbee import XBeeError, from_board, open_tcp
from atls.errors import UsageError
from sim.radio import BackgroundRadio

SCRIPT = TESTS / "mpy" / "xbee_device.py"


class Script:
    """The device script as a subprocess; JSON lines read with a timeout."""

    def __init__(self, interp, mpy, args):
        if interp == "micropython":
            # firmware as .mpy (mpy-cross), as deployed; codec + driver + script
            # need about 40-46 KiB on the x86-64 unix port since the driver
            # learned write deadlines and module resets (48K failed 1 run in ~5
            # through fragmentation): 64K keeps the test about behaviour
            self.proc = mpy.popen(
                SCRIPT, args, heapsize="64K", stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        else:
            env = dict(os.environ, PYTHONPATH=str(FIRMWARE))
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT)] + [str(a) for a in args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.decode())
        self.lines.put(None)

    def step(self, name, timeout=20):
        line = self.lines.get(timeout=timeout)
        if line is None or not line.startswith("{"):
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                "script failed: %s%s%s"
                % (
                    line or "",
                    "".join(iter(self.lines.get, None))[-2000:],
                    self.proc.stderr.read().decode()[-2000:],
                )
            )
        d = json.loads(line)
        assert d["step"] == name, d
        return d

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


class Coordinator:
    """The gateway's view: the coordinator's pty through pyserial."""

    def __init__(self, path, escaped):
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.ser.reset_input_buffer()
        self.escaped = escaped
        self.dec = X.FrameDecoder(escaped)
        self.frames = []

    def send(self, frame_data):
        self.ser.write(X.encode_frame(frame_data, self.escaped))

    def wait(self, pred, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, f in enumerate(self.frames):
                if pred(f):
                    return self.frames.pop(i)
            data = self.ser.read(4096)
            if data:
                self.frames += [X.parse(f) for f in self.dec.feed(data)]
            else:
                time.sleep(0.005)
        raise AssertionError("no such frame from the coordinator; got %r" % self.frames)

    def close(self):
        self.ser.close()


# interpreter, EE, device module AP, driver AP (escaped), coordinator AP
SCENARIOS = [
    ("cpython", 0, 1, False, 1),
    ("cpython", 1, 2, False, 2),
    ("micropython", 0, 1, True, 2),
    ("micropython", 1, 2, True, 1),
]


@pytest.mark.parametrize(
    "interp,ee,module_ap,escaped,coord_ap",
    SCENARIOS,
    ids=[
        "%s-EE%d-module_AP%d-driver_AP%d" % (s[0], s[1], s[2], 2 if s[3] else 1) for s in SCENARIOS
    ],
)
def test_driver_end_to_end(mpyc, interp, ee, module_ap, escaped, coord_ap):
    with BackgroundRadio(
        devices=1, ee=ee, device_ap=module_ap, coordinator_ap=coord_ap, latency_ms=2, seed=3
    ) as radio:
        dev = radio.state["devices"][0]
        coord = Coordinator(radio.state["coordinator"]["pty"], coord_ap == 2)
        script = Script(
            interp, mpyc, ["scenario", "127.0.0.1", dev["port"], int(escaped), 500, 300]
        )
        try:
            ready = script.step("ready")
            assert ready["mtu"] == (66 if ee else 84)  # NP
            assert ready["address64"].upper() == dev["address64"]  # SH || SL
            assert ready["joined"] is False  # AI != 0: the window is closed
            assert ready["module_ap"] == (2 if escaped else 1)
            mod = radio.net.medium.module(dev["address64"])
            assert mod.ap == (2 if escaped else 1)  # the driver set AP on the module

            coord.send(X.at_command(7, b"NJ", b"\x3c"))  # open the join window, 60 s
            assert coord.wait(lambda f: f[0] == "at_response" and f[1] == 7)[3] == X.AT_OK
            assert script.step("joined")["joined"] is True

            rx = coord.wait(lambda f: f[0] == "rx")
            assert rx[1] == bytes.fromhex(dev["address64"]) and rx[2] == mod.my16
            assert rx[4] == b"\xa0" + bytes(range(59))
            coord.send(X.tx_request(9, rx[1], b"\xa5pong", rx[2]))
            st = coord.wait(lambda f: f[0] == "tx_status" and f[1] == 9)
            assert st[4] == X.DELIVERY_SUCCESS and st[2] == mod.my16

            got = script.step("received")
            assert got["payloads"] == [(b"\xa5pong").hex()]
            s = got["stats"]
            assert (s["sent"], s["delivered"], s["too_large"], s["received"]) == (2, 1, 1, 1)
            assert s["failures"] == {} and s["foreign"] == 0 and s["modem"] == {"2": 1}
            assert mod.counters["too_large"] == 1 and mod.counters["tx_frames"] == 1
            assert not [f for f in coord.frames if f[0] == "rx"]  # the 90 B never went out

            radio.call(radio.net.medium.leave, dev["address64"], False)
            left = script.step("left")
            assert left["joined"] is False and left["stats"]["modem"] == {"2": 1, "3": 1}
            done = script.step("done")["stats"]
            assert done["failures"] == {str(X.NOT_JOINED): 1}
            assert done["decoder"]["bad_checksum"] == done["decoder"]["garbage_bytes"] == 0
        finally:
            script.close()
            coord.close()


@pytest.mark.parametrize("interp", ["cpython", "micropython"])
def test_silent_module_raises_xbee_error_in_bounded_time(mpyc, interp):
    with BackgroundRadio(devices=1) as radio:
        dev = radio.state["devices"][0]
        radio.call(setattr, radio.net.medium.module(dev["address64"]), "silent", True)
        script = Script(interp, mpyc, ["silent", "127.0.0.1", dev["port"], 0, 200, 200])
        try:
            r = script.step("error", timeout=30)
        finally:
            script.close()
    assert r["error"] and "does not answer" in r["error"], r
    # probe 2 x 200 ms, guard 200 ms, "+++" answer window 200 + 200 ms
    assert 800 <= r["ms"] < 5000, r


def test_module_reset_is_reconfigured_under_micropython(mpyc):
    """The same re-configuration in the unix port, from .mpy at 48 KiB."""
    with BackgroundRadio(devices=1, joined=True, device_ap=1) as radio:
        mod = radio.net.medium.module(radio.state["devices"][0]["address64"])
        script = Script(
            "micropython",
            mpyc,
            ["reset", "127.0.0.1", radio.state["devices"][0]["port"], 1, 300, 300],
        )
        try:
            assert script.step("ready")["module_ap"] == 2
            assert mod.saved_ap == 2  # WR after the AP change

            def factory_reset():
                mod.saved_ap = 1
                mod.restart()

            radio.call(factory_reset)
            r = script.step("reconfigured")
        finally:
            script.close()
        assert r["state"] == "ready" and r["stats"]["reconfigures"] == 1
        assert mod.ap == 2 and mod.saved_ap == 2


# ---- in-process (CPython) --------------------------------------------------------------------
def _driver(radio, i=0, **kw):
    kw.setdefault("at_timeout_ms", 300)
    kw.setdefault("at_retries", 1)
    return open_tcp("127.0.0.1", radio.state["devices"][i]["port"], **kw)


def test_transparent_mode_fallback_sets_api_mode():
    with BackgroundRadio(devices=1, device_ap=0, joined=True, guard_ms=100) as radio:
        t = _driver(radio, escaped=True, guard_ms=150)
        t0 = time.monotonic()
        t.wait_ready(5000)
        assert time.monotonic() - t0 < 3
        mod = radio.net.medium.module(radio.state["devices"][0]["address64"])
        assert mod.ap == 2 and t.module_ap == 2 and t.mtu == 84 and t.joined is True
        assert mod.counters["transparent_bytes"] > 0  # the unanswered API probe
        t.send(b"\xa0hello")
        assert _wait(lambda: t.recv(20) or t.delivered, 3)
        t.close()


def test_foreign_sources_dropped_and_counted():
    with BackgroundRadio(devices=2, joined=True) as radio:
        a, b = (bytes.fromhex(d["address64"]) for d in radio.state["devices"])
        coord64 = bytes.fromhex(radio.state["coordinator"]["address64"])
        t = _driver(radio, 0, coordinator64=coord64).wait_ready(5000)
        peer = _driver(radio, 1).wait_ready(5000)
        m = radio.net.medium
        # another device (src16 != 0), a forged frame claiming 16-bit 0x0000 but the
        # wrong 64-bit address, then the real coordinator
        peer.stream.write(X.encode_frame(X.tx_request(5, a, b"\xa0from-peer", 0xFFFE)))
        radio.call(m.inject, b"\x00\x13\xa2\x00\xde\xad\xbe\xef", a, b"\xa0forged", 0x0000)
        radio.call(m.inject, coord64, a, b"\xa0ok", 0x0000)
        got = []
        _wait(lambda: got.extend(t.recv(20)) or (got and t.foreign >= 2), 3)
        assert got == [b"\xa0ok"] and t.foreign == 2 and t.received == 1
        t.close()
        peer.close()


def test_delivery_failures_counted_by_code_never_retransmitted():
    with BackgroundRadio(devices=1, joined=True, loss=1.0) as radio:
        t = _driver(radio).wait_ready(5000)
        for i in range(5):
            t.send(b"\xa0%d" % i)
        _wait(lambda: t.recv(20) or sum(t.failures.values()) >= 5, 5)
        assert t.failures == {X.NETWORK_ACK_FAILURE: 5} and t.delivered == 0
        mod = radio.net.medium.module(radio.state["devices"][0]["address64"])
        assert mod.counters["tx_frames"] == 5 and mod.counters["lost"] == 5
        t.close()


def test_restart_reports_reset_then_rejoin():
    with BackgroundRadio(devices=1, joined=True) as radio:
        addr = radio.state["devices"][0]["address64"]
        t = _driver(radio).wait_ready(5000)
        assert t.joined is True
        radio.call(radio.net.medium.restart, addr)
        _wait(lambda: t.recv(10) or X.HARDWARE_RESET in t.modem, 3)
        assert t.modem.get(X.HARDWARE_RESET) == 1
        assert t.wait_joined(3000) and t.modem.get(X.JOINED) == 1  # rejoined without a window
        t.close()


def test_ap_change_is_written_to_flash():
    """The driver sets AP over an API frame and sends WR after it: the module's
    saved AP is the board's, so a reset does not bring the old mode back."""
    with BackgroundRadio(devices=1, joined=True, device_ap=1) as radio:
        mod = radio.net.medium.module(radio.state["devices"][0]["address64"])
        t = _driver(radio, escaped=True).wait_ready(5000)
        assert t.module_ap == 2 and mod.ap == 2 and mod.saved_ap == 2
        radio.call(mod.restart)
        _wait(lambda: t.recv(10) or X.HARDWARE_RESET in t.modem, 3)
        assert mod.ap == 2
        t.close()


def test_module_reset_mid_session_is_reconfigured():
    """Modem Status 0x00 (and 0x01, a watchdog reset) mid-session: the driver
    runs its configuration again from recv(), drops datagrams meanwhile, and
    carries on.  A module that came back in its factory AP (replaced, or
    settings lost) is put back into the board's AP=2."""
    with BackgroundRadio(devices=1, joined=True, device_ap=1) as radio:
        mod = radio.net.medium.module(radio.state["devices"][0]["address64"])
        t = _driver(radio, escaped=True).wait_ready(5000)
        tricky = b"\xa0\x7e\x7d\x11\x13 escaped"
        t.send(tricky)
        assert _wait(lambda: t.recv(10) or t.delivered == 1, 3)

        def factory_reset():
            mod.saved_ap = 1  # as a fresh module: API without escaping
            mod.restart()

        ats = mod.counters["at_commands"]
        radio.call(factory_reset)
        assert _wait(lambda: t.recv(10) or t.reconfigures == 1, 3)
        assert t.joined is False and mod.ap == 1
        t.send(b"\xa0while configuring")  # dropped: the link layer retransmits
        assert t.not_ready == 1
        assert _wait(lambda: t.recv(10) or (t.state == "ready" and t.joined), 5)
        assert mod.ap == 2 and mod.saved_ap == 2 and t.module_ap == 2
        assert mod.counters["at_commands"] - ats >= 7  # AP?, AP=2, WR, NP, SH, SL, AI
        t.send(tricky)
        assert _wait(lambda: t.recv(10) or t.delivered == 2, 3)
        assert t.sent == 2 and t.failures == {}

        radio.call(mod.restart, X.WATCHDOG_RESET)  # settings kept: configured again anyway
        assert _wait(lambda: t.recv(10) or (t.reconfigures == 2 and t.state == "ready"), 5)
        assert t.stats()["reconfigures"] == 2 and t.modem.get(X.WATCHDOG_RESET) == 1
        t.close()


def test_at_helper_and_errors():
    with BackgroundRadio(devices=1) as radio:
        t = _driver(radio).wait_ready(5000)
        t.at("NI", b"node-1")
        assert t.at(b"NI") == b"node-1"
        assert t.at("EE") == b"\x00"
        with pytest.raises(XBeeError, match="status 2"):
            t.at("ZZ")  # invalid command
        with pytest.raises(XBeeError, match="status 3"):
            t.at("NP", b"\x10")  # read-only
        assert t.wait_joined(300) is False  # join window closed: bounded wait, no join
        assert t.last_at[b"AI"][1] == b"\x23"
        radio.call(radio.net.devices[0][1].close)  # the module's end goes away
        with pytest.raises(XBeeError, match="closed"):
            for _ in range(100):
                t.recv(20)
        t.close()


class _FakeUART:
    made = []

    def __init__(self, uid, **kw):
        self.args = (uid, kw)
        _FakeUART.made.append(self)

    def write(self, data):
        return len(data)

    def readinto(self, buf):
        return None


def test_tcp_names_are_reexported_from_the_driver():
    """open_tcp and SocketStream live in atls.drivers.xbee_tcp (a board never
    loads it) and are still read as atls.drivers.xbee.<name>."""
    from atls.drivers import xbee, xbee_tcp

    assert xbee.open_tcp is xbee_tcp.open_tcp and xbee.SocketStream is xbee_tcp.SocketStream
    with pytest.raises(AttributeError):
        xbee.no_such_name  # noqa: B018


def test_from_board_builds_uart_from_config(monkeypatch):
    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace(UART=_FakeUART))
    t = from_board(
        {
            "uart": 2,
            "baudrate": 115200,
            "tx": 17,
            "rx": 16,
            "ap": 2,
            "rxbuf": 512,
            "txbuf": 2048,
            "at_timeout_ms": 250,
            "coordinator64": "0013A20040000001",
        }
    )
    assert _FakeUART.made[-1].args == (
        2,
        {"baudrate": 115200, "timeout": 0, "tx": 17, "rx": 16, "rxbuf": 512, "txbuf": 2048},
    )
    assert t.escaped is True and t.at_timeout_ms == 250
    assert t.coordinator64 == bytes.fromhex("0013A20040000001")
    for bad in ({"baudrate": 9600, "ap": 1}, {"uart": 1, "baudrate": 9600, "ap": 0}):
        with pytest.raises(UsageError):
            from_board(bad)
    # a module that never answers: bounded, clear error
    t = from_board(
        {"uart": 1, "baudrate": 9600, "ap": 1, "at_timeout_ms": 50, "at_retries": 0, "guard_ms": 50}
    )
    with pytest.raises(XBeeError, match="does not answer"):
        t.wait_ready(5000)


def _wait(cond, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = cond()
        if r:
            return r
        time.sleep(0.01)
    return cond()
