"""Device drivers against fakes that speak the real interfaces (no board here).

Under CPython and the MicroPython unix port (tests/mpy/driver_units.py):
the XBee driver writes every byte through a UART that takes a few bytes a
call (rp2's UART with timeout=0 and a 256-byte TX ring returns a short
count) and gives up on a stuck one after write_timeout_ms without spinning;
UDP datagrams are read one at a time with the receive MTU (an oversized one
dropped and counted, another sender's dropped by the connected socket).
CPython: the WiFi station (atls.drivers.wifi) with a fake WLAN and clock
(connect timeout, reconnect with backoff, name lookups retried, skipped
without a `network` module), the CPU frequency (atls.drivers.cpu), and the
board_config keys txbuf/rxbuf/cpu_freq_mhz through host_tools.boards.
"""

import json
import os
import subprocess
import sys
import types

import pytest
from conftest import FIRMWARE, ROOT, TESTS

from atls.drivers import cpu, wifi
from host_tools import boards
from host_tools.toolchain import free_port

SCRIPT = TESTS / "mpy" / "driver_units.py"
INTERPS = ["cpython", "micropython"]


def run_case(mpyc, interp, *args):
    if interp == "micropython":
        return mpyc.check(script=SCRIPT, args=args, heapsize="48K").json()  # .mpy, as deployed
    env = dict(os.environ, PYTHONPATH=str(FIRMWARE))
    out = subprocess.run(
        [sys.executable, str(SCRIPT)] + [str(a) for a in args],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.decode().splitlines()[-1])


# -- XBee: every byte goes out -------------------------------------------------------------
@pytest.mark.parametrize("interp", INTERPS)
def test_xbee_short_uart_writes_complete_every_frame(mpyc, interp):
    r = run_case(mpyc, interp, "short_uart")
    for ap in ("ap1", "ap2"):
        # a certificate flight: 10 x 66-byte datagrams, 7 bytes a call, EAGAIN every 3rd
        assert r[ap]["ok"] == [True] * 10 and r[ap]["dest"] == [True] * 10, r
        assert r[ap]["sent"] == 10 and r[ap]["write_errors"] == 0, r
        assert r[ap]["short_writes"] == 10, r


def test_xbee_payload_above_the_api_limit_is_counted_not_raised():
    """A datagram no XBee takes (> 255 bytes) is dropped and counted like a
    0x74 answer; send() never raises into the session."""
    from atls.drivers.xbee import XBeeTransport

    class UART:
        out = b""

        def write(self, data):
            UART.out += bytes(data)
            return len(data)

        def readinto(self, buf):
            return None

    t = XBeeTransport(UART())
    t.send(b"\xa0" * 256)
    t.send(b"\xa0" * 255)
    assert t.too_large == 1 and t.sent == 1 and len(UART.out) == 255 + 18


@pytest.mark.parametrize("interp", INTERPS)
def test_xbee_stuck_uart_gives_up_after_write_timeout_without_spinning(mpyc, interp):
    r = run_case(mpyc, interp, "stuck_uart")
    assert r["sent"] == 0 and r["write_errors"] == 1 and r["taken"] == 40, r
    assert 140 <= r["ms"] < 1000, r
    # it sleeps about the time 64 bytes need at 115200 baud (5 ms) between tries
    assert r["calls"] < 60, r


# -- UDP -------------------------------------------------------------------------------
@pytest.mark.parametrize("interp", INTERPS)
def test_udp_reads_one_datagram_at_a_time_with_the_receive_mtu(mpyc, interp):
    r = run_case(mpyc, interp, "udp", free_port())
    assert r["echo"] is True
    # 10 B and exactly rx_mtu (100) B arrive, each as bytes of its own; 101 B is
    # dropped and counted; the other sender's datagram never shows up
    assert r["got"] == [[10, "a", True], [100, "c", True]], r
    assert r["too_large"] == 1 and r["received"] == 2, r


@pytest.mark.parametrize("interp", INTERPS)
def test_cpu_freq_is_skipped_without_machine_freq(mpyc, interp):
    assert run_case(mpyc, interp, "cpu") == {"none": None, "unix": None}


# -- WiFi (fake WLAN, fake clock) --------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t

    def sleep(self, ms):
        self.t += ms


class FakeWLAN:
    """network.WLAN(STA_IF): active, connect, isconnected, status."""

    def __init__(self, clock, up_after_ms=None, raise_on_connect=0):
        self.clock = clock
        self.up_after_ms = up_after_ms  # None: never connects
        self.raise_on_connect = raise_on_connect
        self.connects = []
        self.is_active = False
        self.link_at = None

    def active(self, v=None):
        if v is not None:
            self.is_active = v
        return self.is_active

    def connect(self, ssid, password):
        self.connects.append((self.clock(), ssid, password))
        if self.raise_on_connect:
            self.raise_on_connect -= 1
            raise OSError("Wifi Internal Error")
        if self.up_after_ms is not None:
            self.link_at = self.clock() + self.up_after_ms

    def isconnected(self):
        return self.link_at is not None and self.clock() >= self.link_at

    def drop(self):
        self.link_at = None

    def status(self):
        return 1010 if self.isconnected() else -1


def _station(clock, wlan, **kw):
    return wifi.WiFi(wlan, "lab", "pw", sleep_ms=clock.sleep, **kw)


def test_wifi_connect_waits_for_isconnected():
    clock = FakeClock()
    wlan = FakeWLAN(clock, up_after_ms=1200)
    idles = []
    w = _station(clock, wlan).connect(15000, clock=clock, idle=lambda: idles.append(1))
    assert w.up and wlan.is_active and wlan.connects == [(0, "lab", "pw")]
    assert 1200 <= clock.t < 1400 and len(idles) >= 12  # idle() runs on every wait


def test_wifi_connect_times_out_with_a_clear_error():
    clock = FakeClock()
    wlan = FakeWLAN(clock, up_after_ms=None)
    with pytest.raises(wifi.WiFiError, match=r"WiFi 'lab' not connected within 3000 ms \(status"):
        _station(clock, wlan).connect(3000, clock=clock)
    assert 3000 <= clock.t < 3200 and len(wlan.connects) == 1


def test_wifi_check_reconnects_a_dropped_link_with_backoff():
    clock = FakeClock()
    wlan = FakeWLAN(clock, up_after_ms=0)
    w = _station(clock, wlan, retry_ms=1000, retry_max_ms=4000).connect(1000, clock=clock)
    assert w.check(clock()) is True and len(wlan.connects) == 1
    wlan.drop()
    wlan.up_after_ms = None  # the access point is gone for a while
    seen = []
    for t in range(clock.t, clock.t + 12000, 100):  # the main loop, every 100 ms
        clock.t = t
        assert w.check(t) is False
        seen.append(len(wlan.connects))
    tries = [c[0] - wlan.connects[1][0] for c in wlan.connects[1:]]
    assert tries == [0, 1000, 3000, 7000, 11000], tries  # 1, 2, 4, 4 s apart
    assert w.drops == 1 and w.reconnects == 5 and not w.up
    wlan.up_after_ms = 500  # back: the next connect() gets through
    clock.t += 4000
    assert w.check(clock()) is False
    clock.t += 500
    assert w.check(clock()) is True and w.up
    assert w.stats() == {"up": True, "drops": 1, "reconnects": 6, "connect_errors": 0}


def test_wifi_check_counts_a_refused_connect_and_tries_again():
    clock = FakeClock()
    wlan = FakeWLAN(clock, up_after_ms=0)
    w = _station(clock, wlan, retry_ms=1000).connect(1000, clock=clock)
    wlan.drop()
    wlan.raise_on_connect = 1  # ESP32: "sta is connecting" while it reconnects itself
    assert w.check(clock()) is False and w.connect_errors == 1
    clock.t += 1000
    assert w.check(clock()) is False  # the second connect() went through
    clock.t += 1
    assert w.check(clock()) is True and w.reconnects == 2


def test_wifi_start_skips_without_ssid_or_network_module(monkeypatch):
    assert wifi.start(None) is None and wifi.start({"ssid": "", "password": ""}) is None
    monkeypatch.delitem(sys.modules, "network", raising=False)
    assert wifi.start({"ssid": "lab", "password": "pw"}) is None  # CPython/unix: no network


def test_wifi_start_uses_network_wlan(monkeypatch):
    clock = FakeClock()
    wlan = FakeWLAN(clock, up_after_ms=0)
    net = types.SimpleNamespace(STA_IF=0, WLAN=lambda i: wlan)
    monkeypatch.setitem(sys.modules, "network", net)
    w = wifi.start({"ssid": "lab", "password": "pw", "retry_ms": 500}, clock=clock)
    assert w.wlan is wlan and w.up and w.retry_ms == 500


def test_resolve_retries_name_lookups_with_backoff():
    calls, sleeps = [], []

    def gai(host, port, fam, socktype):
        calls.append(host)
        if len(calls) < 3:
            raise OSError(-2)  # MicroPython: [addrinfo error -2] before DNS is up
        return [(2, socktype, 0, "", ("10.0.0.5", port))]

    ai = wifi.resolve("svc", 5684, 2, getaddrinfo=gai, sleep_ms=sleeps.append)
    assert ai[-1] == ("10.0.0.5", 5684) and len(calls) == 3 and sleeps == [250, 500]
    calls.clear()
    sleeps.clear()
    with pytest.raises(OSError):
        wifi.resolve("nowhere", 1, 2, tries=3, getaddrinfo=_no_such_host, sleep_ms=sleeps.append)
    assert sleeps == [250, 500]


def _no_such_host(*args):
    raise OSError(-2)


# -- CPU frequency -------------------------------------------------------------------------
def test_cpu_freq_applied_through_machine_freq():
    hz = {"f": 160000000}

    def freq(v=None):
        if v is None:
            return hz["f"]
        if v not in (80000000, 160000000, 240000000):
            raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
        hz["f"] = v

    m = types.SimpleNamespace(freq=freq)
    assert cpu.apply_freq(240, m) == 240 and hz["f"] == 240000000
    assert cpu.apply_freq(None, m) is None and hz["f"] == 240000000
    with pytest.raises(ValueError):
        cpu.apply_freq(100, m)


def test_app_applies_cpu_freq_at_boot_and_refuses_a_bad_one(monkeypatch, capsys):
    from atls import app

    set_to = []
    monkeypatch.setitem(
        sys.modules,
        "machine",
        types.SimpleNamespace(freq=lambda v=None: set_to.append(v) or 80000000),
    )
    app._cpu_freq(80)
    assert set_to == [80000000, None] and '"mhz": 80' in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace(freq=_bad_freq))
    with pytest.raises(app.ConfigError, match="cpu_freq_mhz 100"):
        app._cpu_freq(100)


def _bad_freq(v=None):
    raise ValueError("bad frequency")


# -- board_config keys --------------------------------------------------------------------
def test_board_configs_set_uart_buffers_and_cpu_freq():
    esp, pico = boards.load_board("esp32"), boards.load_board("pico_w")
    for b in (esp, pico):
        assert b["config"]["xbee"]["txbuf"] == b["config"]["xbee"]["rxbuf"] == 2048
    assert esp["config"]["cpu_freq_mhz"] == 160  # ESP32_GENERIC's default, explicit


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda c: c["xbee"].update(txbuf=64), "xbee.txbuf must be 256..32768"),
        (lambda c: c["xbee"].update(rxbuf="2k"), "xbee.rxbuf must be"),
        (lambda c: c["xbee"].update(write_timeout_ms=0), "xbee.write_timeout_ms"),
        (lambda c: c.update(cpu_freq_mhz=100), "cpu_freq_mhz must be 80 or 160 or 240"),
        (lambda c: c.update(cpu_freq_mhz=True), "cpu_freq_mhz"),
    ],
)
def test_board_config_validation_of_driver_keys(edit, problem):
    b = json.loads((ROOT / "boards/esp32/board.json").read_text())
    b["config"] = json.loads((ROOT / "boards/esp32/board_config.json").read_text())
    assert boards.validate_board(b, "esp32") == []
    edit(b["config"])
    problems = boards.validate_board(b, "esp32")
    assert any(problem in p for p in problems), problems


def test_from_board_passes_uart_buffers_and_write_timeout(monkeypatch):
    made = []

    class UART:
        def __init__(self, uid, **kw):
            made.append((uid, kw))

    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace(UART=UART))
    from atls.drivers.xbee import from_board

    cfg = json.loads((ROOT / "boards/pico_w/board_config.json").read_text())["xbee"]
    t = from_board(dict(cfg, write_timeout_ms=700))
    assert made == [
        (0, {"baudrate": 9600, "timeout": 0, "tx": 0, "rx": 1, "rxbuf": 2048, "txbuf": 2048})
    ]
    assert t.write_timeout_ms == 700
