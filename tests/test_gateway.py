"""The ZigBee ⇄ UDP gateway (host_tools.gateway) and the device's XBee
driver, with real processes and real API frames.

* End to end (simulator: MicroPython device on an emulated XBee, radio with
  10 % frame loss, gateway on the coordinator's pty, service): pairing, an
  ATLS session and 100 messages each way exactly once; every byte the
  gateway handled is scanned for the plaintext markers the device sent.
* The gateway process against a pty the test drives as the coordinator
  module: unpaired devices get nothing through, pairing with the code,
  forwarding both ways, the table survives a restart, unpair cuts a device
  off, corrupt frames are dropped and counted without losing the next one.
* The device driver over a socket stream fed corrupt frames.
The test's coordinator end encodes and decodes with Digi's codec (digi-xbee,
tests/digi_codec.py), so the gateway's frames are checked against Digi's,
not only against atls.xbee.
"""

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from digi_codec import DigiStream, digi_encode

from atls import pairing, xbee
from atls.drivers.xbee import SocketStream, XBeeTransport

DEV = bytes.fromhex("0013A20041000001")
OTHER = bytes.fromhex("0013A20041000002")


def test_end_to_end_100_each_way_10pct_loss_no_plaintext_at_gateway(tmp_path):
    report = tmp_path / "r.json"
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim",
            "--devices",
            "1",
            "--loss",
            "0.1",
            "--count",
            "100",
            "--period",
            "20",
            "--duration",
            "150",
            "--capture",
            "--seed",
            "5",
            "--report",
            str(report),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rep = json.loads(report.read_text())
    assert rep["verdict"] == "pass", proc.stdout[-3000:]
    d = rep["devices"][0]
    assert d["acknowledged"] == 100 and d["delivered"] == 100 and d["duplicated"] == 0
    assert d["received_from_service"] >= 100 and d["retransmissions"] > 0
    cap = (work / "gateway-capture.bin").read_bytes()
    assert len(cap) > 5000
    # the capture holds the traffic (positive control): ATLS packets, and the
    # pairing request, which names the device in clear by design
    assert b"dev-01" in cap and b"\xa0" in cap
    for marker in (b'"boot":"', b'"cmd":"echo"', b'{"dev":"dev-01"', b'"n":'):
        assert marker not in cap, marker


class Coordinator:
    """The test plays the XBee coordinator on the gateway's serial port."""

    def __init__(self):
        self.master, slave = os.openpty()
        import tty

        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self.slave = slave
        self.dec = DigiStream(escaped=True)

    def write(self, frame_data):
        os.write(self.master, digi_encode(frame_data, True))

    def raw(self, data):
        os.write(self.master, data)

    def rx(self, src64, payload):
        self.write(xbee.rx_packet(src64, 0x1234, payload))

    def frames(self, timeout=1.0):
        out = []
        end = time.time() + timeout
        while time.time() < end:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                for p in self.dec.feed(os.read(self.master, 4096)):
                    if p[0] == "at_command":  # answer the gateway's AT commands
                        self.write(xbee.at_response(p[1], p[2], 0))
                        continue
                    out.append(p)
            elif out:
                break
        return out


class GatewayProc:
    def __init__(self, tmp, serial, service_port):
        self.cfg = tmp / "gateway.json"
        self.cfg.write_text(
            json.dumps(
                {
                    "serial": serial,
                    "escaped": True,
                    "services": {"default": "127.0.0.1:%d" % service_port},
                    "state_dir": "gw",
                    "limits": {"max_payload": 84},
                }
            )
        )
        self.tmp = tmp
        self.start()

    def start(self):
        ready = self.tmp / "gw.ready"
        if ready.exists():
            ready.unlink()
        self.log = open(self.tmp / "gateway.log", "a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "host_tools.gateway",
                "run",
                "--config",
                str(self.cfg),
                "--ready-file",
                str(ready),
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=self.log,
        )
        end = time.time() + 15
        while not ready.exists():
            assert self.proc.poll() is None and time.time() < end, "gateway did not start"
            time.sleep(0.05)

    def cli(self, *args):
        return subprocess.run(
            [sys.executable, "-m", "host_tools.gateway", args[0], "--config", str(self.cfg)]
            + list(args[1:]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def control(self, req):
        from host_tools.gateway import Config, control

        return control(Config(self.cfg), req)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def rig(tmp_path):
    svc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    svc.bind(("127.0.0.1", 0))
    svc.settimeout(1.0)
    coord = Coordinator()
    gw = GatewayProc(tmp_path, coord.path, svc.getsockname()[1])
    coord.frames(0.5)  # the gateway's start-up AT commands
    yield coord, gw, svc
    gw.stop()
    os.close(coord.master)


def _recv(sock, timeout=1.0):
    sock.settimeout(timeout)
    try:
        return sock.recvfrom(2048)
    except socket.timeout:
        return None, None


def _exchange(coord, addr, device):
    """The device's side up to its REVEAL (pairing version 2, §8); returns the
    DevicePairing, waiting for the person."""
    from atls.pairing_client import DevicePairing

    d = DevicePairing(addr, device, "default")
    coord.rx(addr, d.poll(0)[0])
    replies = [f for f in coord.frames() if f[0] == "tx_request"]
    assert replies and pairing.decode(replies[-1][6])[0] == "response"
    d.receive(replies[-1][6], 0)
    coord.rx(addr, d.poll(1000)[0])  # REVEAL
    replies = [f for f in coord.frames() if f[0] == "tx_request"]
    assert pairing.decode(replies[-1][6])[0] == "pending"
    return d


def _pair(coord, gw, addr, device="dev-1"):
    gw.control({"cmd": "open_join", "seconds": 30})
    d = _exchange(coord, addr, device)
    pend = gw.control({"cmd": "pending"})["pending"]
    assert [p["code"] for p in pend] == [d.code] and pend[0]["device"] == device
    gw.control({"cmd": "confirm", "addr64": addr.hex(), "code": d.code})
    replies = [f for f in coord.frames() if f[0] == "tx_request"]
    d.receive(replies[-1][6], 2000)
    assert d.state == "PAIRED" and replies[-1][2] == addr


def test_pairing_forwarding_restart_unpair(rig):
    coord, gw, svc = rig
    atls_pkt = bytes([0xA0, 0, 0, 0, 0]) + b"client-hello-fragment"
    # unpaired: nothing gets through
    coord.rx(DEV, atls_pkt)
    assert _recv(svc, 0.5)[0] is None
    assert gw.control({"cmd": "stats"})["counters"]["drops"]["unpaired"] == 1
    # a wrong code is refused
    gw.control({"cmd": "open_join", "seconds": 30})
    _exchange(coord, OTHER, "intruder")
    pend = gw.control({"cmd": "pending"})["pending"][0]
    wrong = "%06d" % ((int(pend["code"]) + 1) % 1000000)
    r = gw.cli("pair", "--window", "1", "--code", wrong, "--count", "1")
    assert "code mismatch" in r.stdout
    # pairing with the right code, then forwarding both ways
    _pair(coord, gw, DEV)
    coord.rx(DEV, atls_pkt)
    data, flow_addr = _recv(svc)
    assert data == atls_pkt
    reply = bytes([0xA3, 0, 7]) + b"sealed-data"
    svc.sendto(reply, flow_addr)
    tx = [f for f in coord.frames() if f[0] == "tx_request"]
    assert tx and tx[-1][2] == DEV and tx[-1][6] == reply
    # non-ATLS payloads from a paired device are dropped and counted
    coord.rx(DEV, b"\x42plain text")
    time.sleep(0.2)
    assert gw.control({"cmd": "stats"})["counters"]["drops"]["not_atls"] == 1
    # restart: the pairing table is on disk, the device keeps working
    gw.stop()
    gw.start()
    coord.frames(0.5)
    listed = gw.cli("list")
    assert DEV.hex() in listed.stdout and "dev-1" in listed.stdout
    coord.rx(DEV, atls_pkt + b"2")
    assert _recv(svc)[0] == atls_pkt + b"2"
    # unpair: cut off both ways
    r = gw.cli("unpair", "dev-1")
    assert r.returncode == 0 and DEV.hex() in r.stdout
    coord.rx(DEV, atls_pkt + b"3")
    assert _recv(svc, 0.5)[0] is None
    assert gw.cli("unpair", "dev-1").returncode == 1  # already gone: clear error


def test_corrupt_frames_dropped_counted_next_frame_kept(rig):
    coord, gw, svc = rig
    _pair(coord, gw, DEV)
    good = digi_encode(xbee.rx_packet(DEV, 0x1234, bytes([0xA0, 0, 0, 1, 0]) + b"ok"), True)
    bad_sum = bytearray(good)
    bad_sum[-1] ^= 0xFF
    junk = [
        b"\x00\x11garbage\x42",
        bytes(bad_sum),
        b"\x7e\x00\x05\x90\x7d\x01\x02\x03\x04",
        b"\x7e\x00\x10\x90\x00",
        b"\x7e\x7f\xff" + bytes(20),
        xbee.encode_frame(b"\x55unknown-type", True),
    ]
    for j in junk:
        coord.raw(j + good)
    got = []
    for _ in junk:
        data, _ = _recv(svc)
        got.append(data)
    assert all(g == bytes([0xA0, 0, 0, 1, 0]) + b"ok" for g in got)
    st = gw.control({"cmd": "stats"})["counters"]
    fe = st["frame_errors"]
    assert fe["garbage_bytes"] > 0 and fe["bad_checksum"] >= 1
    assert fe["bad_escape"] + fe["truncated"] + fe["oversized"] >= 2
    assert st["drops"].get("unknown_frame", 0) >= 1


def test_wifi_side_in_process_marker_rate_and_one_flow_per_device(tmp_path):
    """A WiFi device's packets (Gateway in process, real UDP service socket):
    no marker, dropped as not_atls; a burst of 2 per device, the third
    dropped as rate; each device its own flow (source address)."""
    from host_tools.gateway import Config, Gateway

    svc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    svc.bind(("127.0.0.1", 0))
    cfg = tmp_path / "gateway.json"
    cfg.write_text(
        json.dumps(
            {
                "services": {"default": "127.0.0.1:%d" % svc.getsockname()[1]},
                "state_dir": "gw",
                "limits": {"rate_per_s": 1, "rate_burst": 2},
            }
        )
    )
    pkt = bytes([0xA8, 0, 0, 0, 0]) + b"hello"
    a, b = ("udp", ("10.0.0.1", 1)), ("udp", ("10.0.0.2", 2))

    async def go():
        gw = Gateway(Config(cfg))
        gw.upstream(a, b"\x42plain text")
        for _ in range(3):
            gw.upstream(a, pkt)
        gw.upstream(b, pkt)
        return gw.stats()

    st = asyncio.run(go())
    assert st["drops"] == {"not_atls": 1, "rate": 1}
    assert st["up_packets"] == 3 and st["up_bytes"] == 3 * len(pkt) and st["flows"] == 2
    got = [_recv(svc) for _ in range(3)]
    assert [d for d, _ in got] == [pkt] * 3 and len({addr for _, addr in got}) == 2
    svc.close()


def test_device_driver_survives_corrupt_frames():
    a, b = socket.socketpair()
    drv = XBeeTransport(SocketStream(a), escaped=False)
    good = xbee.encode_frame(xbee.rx_packet(xbee.COORDINATOR64, 0x0000, b"\xa0payload"))
    bad = bytearray(good)
    bad[-1] ^= 1
    b.sendall(b"noise" + bytes(bad) + good + b"\x7e\xff\xff" + bytes(10) + good)
    got = []
    end = time.time() + 2
    while len(got) < 2 and time.time() < end:
        got += drv.recv(100)
    assert got == [b"\xa0payload", b"\xa0payload"]
    dec = drv.stats()["decoder"]
    assert dec["bad_checksum"] >= 1 and dec["garbage_bytes"] > 0 and dec["oversized"] >= 1
    a.close()
    b.close()
