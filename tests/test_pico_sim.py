"""`make sim PICO=N` wiring (issue 16), without starting anything: attach() moves the
first N devices onto emulated Picos, the service gets timers for them, device.json loses
its TCP XBee (the board's UART0 takes over), and the live table marks Pico devices."""

import io
import time

import pytest

from sim.__main__ import Live
from sim.device_state import DeviceState
from sim.pico.fleet import SERVICE_LINK, attach, pico_device_json

pytestmark = pytest.mark.pico


class FakeFleet:
    def __init__(self, n):
        self.n = n
        self.started = 0.0
        self.devices = {"dev-%02d" % (i + 1): DeviceState("dev-%02d" % (i + 1)) for i in range(n)}
        self.unix = []

    def start_device(self, name):
        self.unix.append(name)


def test_attach_runs_the_first_n_devices_on_picos():
    f = attach(FakeFleet(3), 2)
    assert f.pico_names == {"dev-01", "dev-02"}
    assert f.service_link == SERVICE_LINK
    f.start_device("dev-03")  # not a Pico: the unix-port launcher as before
    assert f.unix == ["dev-03"]


def test_pico_device_json_uses_the_board_uart():
    dev = {"device_id": "dev-01", "link": {"type": "xbee", "xbee": {"tcp": "127.0.0.1:1"}}}
    out = pico_device_json(dev)
    assert out["link"] == {"type": "xbee", "xbee": {}}
    assert dev["link"]["xbee"]["tcp"] == "127.0.0.1:1"  # the fleet's copy is left alone


def test_live_table_marks_pico_devices():
    f = attach(FakeFleet(2), 1)
    out = io.StringIO()
    out.isatty = lambda: True
    Live(f, stream=out)()
    rows = out.getvalue().splitlines()
    assert any(r.strip().startswith("dev-01*") for r in rows)
    assert any(r.strip().startswith("dev-02 ") for r in rows)


def test_a_pico_fleet_waits_for_a_code_before_refusing_it_and_keeps_the_window_open(monkeypatch):
    """A Pico sends its REVEAL before its console shows the code (seconds apart under
    load): the simulated person must not refuse the request in between (it did: the
    exchange was lost and pairing never completed), and the join window must outlast
    a slow boot."""
    from sim.pico import fleet as pf

    class PairFleet(FakeFleet):
        def __init__(self):
            super().__init__(1)
            self.sent, self.windows = [], []

        def gateway(self, req):
            self.sent.append(req)
            return {"ok": True}

        def pair_all(self, names, timeout=60):
            self.windows.append(timeout)
            return True

    f = attach(PairFleet(), 1)
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    refuse = {"cmd": "confirm", "addr64": "00", "code": "123456", "accept": False}
    assert f.gateway(dict(refuse)) == {} and f.sent == []  # held back: not shown yet
    now[0] += pf.REFUSE_AFTER_S - 1
    f.gateway(dict(refuse))
    assert f.sent == []
    now[0] += 2
    f.gateway(dict(refuse))  # still no device shows it: refused
    assert f.sent == [refuse]
    f.gateway({"cmd": "confirm", "addr64": "01", "code": "654321", "accept": True})
    assert f.sent[-1]["accept"] is True  # a confirmation is never held back
    f.pair_all(["dev-01"], timeout=60)
    assert f.windows == [pf.PAIR_WINDOW_S]
