"""The simulated ZigBee medium and the emulated XBee 3 modules (sim/radio/).

Most tests run the medium on VirtualClock (deterministic time) and talk to
the modules in real API frames, encoded and decoded at the test's end by
Digi's own codec (digi-xbee): every frame a module writes to its UART must
parse with Digi's checksum and escaping, re-encode to the same bytes and
equal what atls.xbee decodes from the same stream.  Checked: loss rate near
the configured probability (binomial bound) and reproducible per seed,
whatever the interleaving of senders; delivery time = airtime + latency with
the channel serialised, airtime = (payload + 30) x 8 / 250 kbit/s, and the
counters; payload limits 84 / 66 (EE=1) with Transmit Status 0x74 and nothing
on the air; joining (window closed, NJ, NJ=0xFF, CB 2, expiry, ID and EE
mismatch, leave, restart rejoin, coordinator re-forming); addressing (not
joined 0x22, unknown 0x24, coordinator to device, broadcast); taps (observe,
tamper, drop) and forged frames; AP changes and command mode; the JSON
stats.  Real time: the CLI with its pty, TCP ports and control port.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import serial
from conftest import ROOT
from digi_codec import DigiStream, digi_encode

from atls import xbee as X
from sim.radio import (
    COORDINATOR_BASE,
    DEVICE_BASE,
    DROP,
    Medium,
    Module,
    VirtualClock,
    addr64,
    hex64,
)


class Net:
    """A medium on virtual time; every module's UART output is decoded by
    Digi's codec (and, compared, by atls.xbee) and kept as (time, parsed
    frame); what the test writes to a module is encoded by Digi's codec."""

    def __init__(self, devices=1, coordinator_ap=1, device_ap=1, ee=0, joined=False, **kw):
        self.clock = VirtualClock()
        self.m = Medium(self.clock, **kw)
        self.out = {}
        self.streams = []
        self.c = self._add(
            Module(
                self.m,
                COORDINATOR_BASE + 1,
                coordinator=True,
                api_mode=coordinator_ap,
                ee=ee,
                pan_id=0x1234,
            )
        )
        self.d = [
            self._add(Module(self.m, DEVICE_BASE + i + 1, api_mode=device_ap, ee=ee, joined=joined))
            for i in range(devices)
        ]

    def _add(self, mod):
        self.m.add(mod)
        self.out[mod] = []
        streams = {1: DigiStream(False), 2: DigiStream(True)}
        self.streams.extend(streams.values())

        def sink(data, mod=mod):
            if mod.ap == 0:
                self.out[mod].append((self.clock.time(), ("text", data)))
                return
            for f in streams[mod.ap].feed(data):
                self.out[mod].append((self.clock.time(), f))

        mod.attach(sink)
        return mod

    @property
    def frames_checked(self):
        return sum(s.frames for s in self.streams)

    def write(self, mod, frame_data):
        mod.serial_in(digi_encode(frame_data, mod.ap == 2))

    def at(self, mod, cmd, param=b"", fid=0x42):
        self.write(mod, X.at_command(fid, cmd, param))
        r = [f for _, f in self.out[mod] if f[0] == "at_response" and f[1] == fid]
        assert r, "no AT response"
        self.out[mod] = [(t, f) for t, f in self.out[mod] if f not in r]
        return r[-1][3], r[-1][4]

    def tx(self, mod, payload, dest=X.COORDINATOR64, fid=1):
        self.write(mod, X.tx_request(fid, dest, payload, 0xFFFE))

    def take(self, mod, kind):
        got = [(t, f) for t, f in self.out[mod] if f[0] == kind]
        self.out[mod] = [(t, f) for t, f in self.out[mod] if f[0] != kind]
        return got

    def join_all(self):
        self.at(self.c, b"NJ", b"\xff")
        self.clock.advance(1)
        assert all(d.joined for d in self.d)
        for mod in self.out:
            self.out[mod].clear()


# ---- loss ------------------------------------------------------------------------------------
def _outcomes(net, mod, n, size=20):
    for i in range(n):
        net.tx(mod, bytes(size), fid=i % 255 + 1)
        net.clock.advance(0.01)
    return [f[4] for _, f in net.take(mod, "tx_status")]


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("seed", [1, 2])
def test_loss_rate_near_configured_probability(loss, seed):
    n = 4000
    net = Net(loss=loss, seed=seed, latency_ms=1)
    net.join_all()
    st = _outcomes(net, net.d[0], n)
    assert len(st) == n and set(st) <= {X.DELIVERY_SUCCESS, X.NETWORK_ACK_FAILURE}
    lost = st.count(X.NETWORK_ACK_FAILURE)
    bound = 4.5 * math.sqrt(n * loss * (1 - loss)) + 1  # 4.5 sigma: p < 1e-5 per case
    assert abs(lost - n * loss) <= bound
    rx = net.take(net.c, "rx")
    assert len(rx) == n - lost  # every success arrived, no lost frame did
    assert net.d[0].counters["lost"] == lost == net.m.totals["lost"]
    assert net.d[0].counters["delivered"] == n - lost


def test_loss_reproducible_per_seed_and_independent_of_interleaving():
    def run(seed, order):
        net = Net(devices=2, loss=0.2, seed=seed, latency_ms=1)
        net.join_all()
        for i in range(300):
            for j in order(i):
                net.tx(net.d[j], b"\xa0%d" % i, fid=i % 255 + 1)
            net.clock.advance(0.01)
        return [[f[4] for _, f in net.take(d, "tx_status")] for d in net.d]

    a = run(7, lambda i: (0, 1))
    assert a == run(7, lambda i: (0, 1))
    assert a == run(7, lambda i: (1, 0) if i % 3 else (0, 1))  # per-sender RNG
    assert a != run(8, lambda i: (0, 1))
    assert a[0] != a[1]


# ---- time and airtime ------------------------------------------------------------------------
def test_delivery_time_is_airtime_plus_latency_and_channel_serialised():
    net = Net(devices=2, latency_ms=5)
    net.join_all()
    t0 = net.clock.time()
    air60 = (60 + 30) * 8 / 250000  # 2.88 ms
    air20 = (20 + 30) * 8 / 250000  # 1.6 ms
    net.tx(net.d[0], b"\xa0" * 60)
    net.tx(net.d[1], b"\xa1" * 20)  # waits for the channel
    net.clock.advance(0.1)
    (ta, a), (tb, b) = net.take(net.c, "rx")
    assert a[4] == b"\xa0" * 60 and b[4] == b"\xa1" * 20
    assert ta - t0 == pytest.approx(air60 + 0.005)
    assert tb - t0 == pytest.approx(air60 + air20 + 0.005)
    ((ts, s),) = net.take(net.d[0], "tx_status")
    assert ts == pytest.approx(ta) and s[4] == X.DELIVERY_SUCCESS and s[2] == 0x0000
    c = net.d[0].counters
    assert (c["tx_frames"], c["tx_bytes"], c["air_bytes"]) == (1, 60, 90)
    assert c["airtime_ms"] == pytest.approx(2.88)
    assert net.m.totals["airtime_ms"] == pytest.approx(2.88 + 1.6)
    assert net.m.totals["air_bytes"] == 90 + 50
    assert net.c.counters["rx_frames"] == 2 and net.c.counters["rx_bytes"] == 80
    # lost frames use the channel too
    net.m.loss = 1.0
    net.tx(net.d[0], bytes(10))
    net.clock.advance(0.1)
    assert net.d[0].counters["airtime_ms"] == pytest.approx(2.88 + 40 * 8 / 250)


# ---- payload limits --------------------------------------------------------------------------
@pytest.mark.parametrize("ee,limit", [(0, 84), (1, 66)])
def test_payload_limit_np_and_0x74(ee, limit):
    net = Net(ee=ee)
    net.join_all()
    assert net.at(net.d[0], b"NP") == (X.AT_OK, limit.to_bytes(2, "big"))
    assert net.at(net.c, b"NP") == (X.AT_OK, limit.to_bytes(2, "big"))
    net.tx(net.d[0], bytes(limit), fid=1)
    net.tx(net.d[0], bytes(limit + 1), fid=2)
    net.clock.advance(0.1)
    st = {f[1]: f[4] for _, f in net.take(net.d[0], "tx_status")}
    assert st == {1: X.DELIVERY_SUCCESS, 2: X.PAYLOAD_TOO_LARGE}
    assert [len(f[4]) for _, f in net.take(net.c, "rx")] == [limit]
    assert net.d[0].counters["too_large"] == 1 and net.m.totals["frames"] == 1
    # and the other direction
    net.write(net.c, X.tx_request(3, net.d[0].addr64, bytes(limit + 1)))
    net.clock.advance(0.1)
    assert net.take(net.c, "tx_status")[0][1][4] == X.PAYLOAD_TOO_LARGE


def test_ee_change_changes_np():
    net = Net()
    assert net.at(net.c, b"EE", b"\x01")[0] == X.AT_OK
    assert net.at(net.c, b"NP")[1] == b"\x00\x42"
    assert net.at(net.c, b"EE", b"\x02")[0] == X.AT_INVALID_PARAMETER


# ---- joining ---------------------------------------------------------------------------------
def test_join_needs_open_window_and_emits_modem_status():
    net = Net(devices=2, join_delay_ms=50)
    d = net.d[0]
    net.clock.advance(5)
    assert not d.joined and net.at(d, b"AI")[1] == b"\x23" and net.at(d, b"MY")[1] == b"\xff\xfe"
    net.tx(d, b"x", fid=9)
    assert net.take(d, "tx_status")[0][1][4] == X.NOT_JOINED
    assert net.at(net.c, b"NJ", b"\x3c") == (X.AT_OK, b"")  # 60 s window
    net.clock.advance(0.049)
    assert not d.joined and net.at(d, b"AI")[1] == b"\xff"  # joining
    net.clock.advance(0.002)
    assert d.joined and net.at(d, b"AI")[1] == b"\x00"
    assert [f for _, f in net.take(d, "modem_status")] == [("modem_status", X.JOINED)]
    assert net.at(d, b"MY")[1] != b"\xff\xfe"
    assert net.at(net.c, b"NJ")[1] == b"\x3c"
    # window expires: a device that leaves cannot come back
    net.clock.advance(61)
    net.d[1].leave()
    net.clock.advance(1)
    assert not net.d[1].joined and net.at(net.d[1], b"AI")[1] == b"\x23"
    assert [f[1] for _, f in net.take(net.d[1], "modem_status")] == [X.JOINED, X.DISASSOCIATED]
    net.at(net.c, b"CB", b"\x02")  # commissioning button: 60 s window
    net.clock.advance(1)
    assert net.d[1].joined
    net.at(net.c, b"NJ", b"\x00")  # close
    net.d[1].leave(rejoin=True)
    net.clock.advance(5)
    assert not net.d[1].joined


def test_join_refused_on_id_or_ee_mismatch():
    net = Net(devices=2)
    net.at(net.d[0], b"EE", b"\x01")
    net.at(net.d[1], b"ID", b"\x99\x99")
    net.at(net.c, b"NJ", b"\xff")
    net.clock.advance(1)
    assert not net.d[0].joined and net.at(net.d[0], b"AI")[1] == b"\x27"
    assert not net.d[1].joined and net.at(net.d[1], b"AI")[1] == b"\x22"
    net.at(net.d[1], b"ID", b"\x12\x34")
    net.at(net.d[0], b"EE", b"\x00")
    net.at(net.d[0], b"CB", b"\x01")
    net.at(net.d[1], b"CB", b"\x01")
    net.clock.advance(1)
    assert net.d[0].joined and net.d[1].joined


def test_restart_rejoins_without_window_and_leave_needs_one():
    net = Net(devices=1, joined=True)
    d = net.d[0]
    assert d.joined and net.at(d, b"AI")[1] == b"\x00"
    net.m.restart(hex64(d.addr64))
    net.clock.advance(1)
    assert [f[1] for _, f in net.take(d, "modem_status")] == [X.HARDWARE_RESET, X.JOINED]
    assert d.counters["restarts"] == 1
    net.at(d, b"CB", b"\x04")  # leave through the commissioning button
    net.clock.advance(1)
    assert not d.joined and [f[1] for _, f in net.take(d, "modem_status")] == [X.DISASSOCIATED]
    net.m.restart(d.addr64)
    net.clock.advance(1)
    assert not d.joined  # left: no network to rejoin
    assert net.at(d, b"FR")[0] == X.AT_OK
    net.clock.advance(1)
    assert [f[1] for _, f in net.take(d, "modem_status")] == [X.HARDWARE_RESET, X.WATCHDOG_RESET]


def test_coordinator_reforming_network_makes_devices_leave():
    net = Net(devices=2)
    net.join_all()
    net.at(net.c, b"ID", b"\x77")
    net.clock.advance(1)
    for d in net.d:
        assert [f[1] for _, f in net.take(d, "modem_status")] == [X.DISASSOCIATED, X.JOINED]
        assert d.network == (0x77, 0)  # NJ=0xFF still open: rejoined the new PAN


# ---- addressing ------------------------------------------------------------------------------
def test_coordinator_to_device_broadcast_and_unknown_destination():
    net = Net(devices=3)
    net.join_all()
    d0, d1, d2 = net.d
    net.write(net.c, X.tx_request(5, d1.addr64, b"\xa0down"))
    net.write(net.c, X.tx_request(6, b"\x00\x13\xa2\x00\x00\x00\x00\x99", b"x"))
    net.write(net.c, X.tx_request(7, X.BROADCAST64, b"\xa0all"))
    net.write(net.c, X.tx_request(0, d2.addr64, b"\xa0nostatus"))
    net.clock.advance(0.1)
    st = {f[1]: (f[2], f[4]) for _, f in net.take(net.c, "tx_status")}
    assert st == {
        5: (d1.my16, X.DELIVERY_SUCCESS),
        6: (0xFFFE, X.ADDRESS_NOT_FOUND),
        7: (0xFFFD, X.DELIVERY_SUCCESS),
    }  # frame id 0: no status
    rx1 = [f for _, f in net.take(d1, "rx")]
    assert rx1[0] == ("rx", net.c.addr64, 0x0000, X.RX_ACKED, b"\xa0down")
    assert rx1[1] == ("rx", net.c.addr64, 0x0000, X.RX_BROADCAST, b"\xa0all")
    assert [f[4] for _, f in net.take(d0, "rx")] == [b"\xa0all"]
    assert [f[4] for _, f in net.take(d2, "rx")] == [b"\xa0all", b"\xa0nostatus"]
    net.tx(d0, b"self", dest=d0.addr64, fid=8)
    assert net.take(d0, "tx_status")[0][1][4] == X.SELF_ADDRESSED


# ---- hooks -----------------------------------------------------------------------------------
def test_taps_observe_tamper_drop_and_forged_frames():
    net = Net(devices=1, latency_ms=1)
    net.join_all()
    seen = []
    net.m.taps.append(lambda ev: seen.append(dict(ev)))
    net.tx(net.d[0], b"\xa0one", fid=1)
    net.clock.advance(0.1)
    assert seen[0]["src"] == net.d[0].addr64 and seen[0]["dst"] == net.c.addr64
    assert seen[0]["payload"] == b"\xa0one" and seen[0]["kind"] == "unicast"
    net.m.taps.append(lambda ev: ev["payload"][:-1] + b"X")  # tamper
    net.tx(net.d[0], b"\xa0two", fid=2)
    net.clock.advance(0.1)
    net.m.taps[-1] = lambda ev: DROP
    net.tx(net.d[0], b"\xa0three", fid=3)
    net.clock.advance(0.1)
    assert [f[4] for _, f in net.take(net.c, "rx")] == [b"\xa0one", b"\xa0twX"]
    st = {f[1]: f[4] for _, f in net.take(net.d[0], "tx_status")}
    assert st == {1: 0, 2: 0, 3: X.NETWORK_ACK_FAILURE}
    assert net.m.totals["tampered"] == 1 and net.m.totals["tap_drops"] == 1
    net.m.taps.clear()
    net.m.inject(b"\x00\x13\xa2\x00\xba\xdb\xad\x00", X.COORDINATOR64, b"\xa0forged", 0x1111)
    net.clock.advance(0.1)
    assert net.take(net.c, "rx")[0][1] == (
        "rx",
        b"\x00\x13\xa2\x00\xba\xdb\xad\x00",
        0x1111,
        X.RX_ACKED,
        b"\xa0forged",
    )


def test_stats_are_json():
    net = Net(devices=2)
    net.join_all()
    net.tx(net.d[0], b"abc")
    net.clock.advance(0.1)
    s = json.loads(json.dumps(net.m.stats()))
    assert set(s) == {"time", "config", "medium", "modules"}
    mod = s["modules"]["0013A20041000001"]
    assert mod["counters"]["tx_frames"] == 1 and mod["joined"] is True and mod["np"] == 84
    assert s["modules"]["0013A20040000001"]["role"] == "coordinator"
    assert s["config"]["overhead_bytes"] == 30 and s["config"]["bitrate"] == 250000


# ---- API modes, AT commands, command mode ----------------------------------------------------
def test_ap_change_applies_after_response_and_escapes():
    net = Net(device_ap=1)
    d = net.d[0]
    assert net.at(d, b"AP", b"\x02") == (X.AT_OK, b"")  # answered in AP=1
    assert d.ap == 2
    assert net.at(d, b"SH") == (X.AT_OK, b"\x00\x13\xa2\x00")  # 0x13: escaped on the wire
    assert net.at(d, b"SL") == (X.AT_OK, b"\x41\x00\x00\x01")
    assert net.at(d, b"AP", b"\x03")[0] == X.AT_INVALID_PARAMETER
    assert net.at(d, b"XX")[0] == X.AT_INVALID_COMMAND
    assert net.at(d, b"CE") == (X.AT_OK, b"\x00") and net.at(net.c, b"CE") == (X.AT_OK, b"\x01")
    assert net.at(d, b"CE", b"\x01")[0] == X.AT_INVALID_PARAMETER
    assert d.decoder_counters()["bad_checksum"] == 0
    assert net.frames_checked >= 7  # every answer above went through Digi's decoder


def test_transparent_command_mode():
    net = Net(device_ap=0)
    d, clock = net.d[0], net.clock
    clock.advance(2)
    d.serial_in(b"+++")
    clock.advance(0.5)
    assert net.out[d] == []  # guard time (GT = 1 s) not over yet
    clock.advance(0.6)
    assert net.out[d][-1][1] == ("text", b"OK\r")
    for line, reply in (
        (b"ATNP\r", b"54\r"),
        (b"ATSH\r", b"13A200\r"),
        (b"ATEE1\r", b"OK\r"),
        (b"ATNP\r", b"42\r"),
        (b"ATZZ\r", b"ERROR\r"),
        (b"ATAP 2\r", b"OK\r"),
    ):
        d.serial_in(line)
        assert net.out[d][-1][1] == ("text", reply), line
    assert d.ap == 0  # applied when command mode ends
    d.serial_in(b"ATCN\r")
    assert d.ap == 2
    assert net.at(d, b"EE") == (X.AT_OK, b"\x01")
    # "+++" is data unless framed by silence; API mode ignores it
    net2 = Net(device_ap=0)
    net2.clock.advance(2)
    net2.d[0].serial_in(b"a+++")
    net2.clock.advance(2)
    assert net2.out[net2.d[0]] == []


def test_addr64_helper():
    assert (
        addr64("0013A20041000001") == addr64(DEVICE_BASE + 1) == bytes.fromhex("0013A20041000001")
    )
    with pytest.raises(ValueError):
        addr64(b"\x00" * 7)


# ---- the CLI, in real time -------------------------------------------------------------------
def test_cli_pty_tcp_control_port(tmp_path):
    state_file = tmp_path / "radio.json"
    stats_file = tmp_path / "stats.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.radio",
            "--devices",
            "2",
            "--loss",
            "0.1",
            "--latency-ms",
            "5",
            "--seed",
            "1",
            "--state-file",
            str(state_file),
            "--stats-file",
            str(stats_file),
            "--stats-interval",
            "0.2",
            "--coordinator-ap",
            "2",
            "--joined",
        ],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        state = json.loads(line)
        assert json.loads(state_file.read_text()) == state
        assert [d["address64"] for d in state["devices"]] == [
            "0013A20041000001",
            "0013A20041000002",
        ]
        ser = serial.Serial(state["coordinator"]["pty"], 9600, timeout=0)
        ser.reset_input_buffer()
        dec = X.FrameDecoder(True)

        def frames(pred, timeout=5):
            end = time.monotonic() + timeout
            got = []
            while time.monotonic() < end:
                got += [X.parse(f) for f in dec.feed(ser.read(4096))]
                hit = [f for f in got if pred(f)]
                if hit:
                    return hit[0]
                time.sleep(0.01)
            raise AssertionError(got)

        ser.write(X.encode_frame(X.at_command(1, b"SL"), True))
        assert frames(lambda f: f[0] == "at_response")[4] == b"\x40\x00\x00\x01"
        dev = socket.create_connection(("127.0.0.1", state["devices"][1]["port"]))
        for i in range(20):  # 10 % loss: some of 20 get through
            dev.sendall(X.encode_frame(X.tx_request(i + 1, X.COORDINATOR64, b"\xa0%d" % i)))
        rx = frames(lambda f: f[0] == "rx")
        assert rx[1] == bytes.fromhex("0013A20041000002")
        ctl = socket.create_connection(("127.0.0.1", state["control_port"]))
        f = ctl.makefile("rw")
        f.write(json.dumps({"cmd": "stats"}) + "\n")
        f.flush()
        stats = json.loads(f.readline())["stats"]
        assert stats["modules"]["0013A20041000002"]["counters"]["tx_frames"] == 20
        f.write(json.dumps({"cmd": "bogus"}) + "\n")
        f.flush()
        assert json.loads(f.readline())["ok"] is False
        time.sleep(0.5)
        assert json.loads(stats_file.read_text())["config"]["loss"] == 0.1
        ser.close()
        dev.close()
        ctl.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        assert rc == 0, proc.stderr.read().decode()[-3000:]
