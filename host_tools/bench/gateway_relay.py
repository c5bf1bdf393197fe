"""The `zigbee` section's forwarding figures: frames/s through the real
gateway process (its ZigBee side over a pty, and its UDP side) and through a
plain asyncio UDP relay (bench.relay), same sizes, same run.  This process
drives all three paths and plays both the devices and the service."""

import json
import os
import pty
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from atls import xbee as X
from atls.protocol import DATA, MARKER
from host_tools.bench.procs import PINNED_MALLOC, proc_cpu_s, stop, wait_path
from host_tools.toolchain import ROOT, free_port

DEV64 = bytes.fromhex("0013A20041000001")
DATA_HEADER = bytes([MARKER | DATA])
SIZES = (23, 66)  # a 10-byte reading with CCM_8; a full NP=66 frame


class Sink:
    """The 'service' end: a UDP socket that counts what arrives and can send
    datagrams back to the gateway/relay flow it came from."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()
        self.peer = None

    def recv_all(self):
        n = 0
        while True:
            try:
                _, a = self.sock.recvfrom(4096)
            except BlockingIOError:
                return n
            self.peer = a
            n += 1


def prime_udp_flow(dev, gw_addr, sink, timeout=5.0):
    """The gateway gives a WiFi source a flow only for a first flight and
    keeps it once the source sends back the session id the service gave it
    (host_tools/gateway/flows.py): play that shape once before measuring."""
    from atls import wire

    dev.sendto(wire.encode_hs(0, 0, 0, b"\x01", last=True), gw_addr)
    end = time.monotonic() + timeout
    sink.peer = None
    while sink.peer is None and time.monotonic() < end:
        select.select([sink.sock], [], [], 0.05)
        sink.recv_all()
    sink.sock.sendto(wire.encode_hs(0x0101, 1, 0, b"\x02", last=True), sink.peer)
    select.select([dev], [], [], timeout)
    dev.sendto(wire.encode_hs(0x0101, 2, 0, b"\x03", last=True), gw_addr)
    select.select([sink.sock], [], [], timeout)
    sink.recv_all()
    while True:
        try:
            dev.recv(4096)
        except BlockingIOError:
            return


def windowed(n, window, send, readable_fd, collect, timeout=3.0):
    """Send n packets keeping at most `window` unanswered; returns (seconds,
    received).  A stall longer than `timeout` ends the phase (counted as lost)."""
    sent = got = 0
    t0 = time.perf_counter()
    last = t0
    while got < n:
        while sent < n and sent - got < window:
            send(sent)
            sent += 1
        r, _, _ = select.select([readable_fd], [], [], 0.2)
        if r:
            k = collect()
            if k:
                got += k
                last = time.perf_counter()
        elif time.perf_counter() - last > timeout:
            break
    return last - t0, got


class PtyFrames:
    """The driver's end of the gateway's serial port: API frames out, and
    Transmit Requests coming back counted."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.dec = X.FrameDecoder(False)

    def frames(self):
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return []
        return [X.parse(fd) for fd in self.dec.feed(data)]

    def answer_at(self):
        """Answer the gateway's start-up AT NJ (else it waits 2 s for it)."""
        for f in self.frames():
            if f[0] == "at_command":
                self.write(X.encode_frame(X.at_response(f[1], f[2], 0)))

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                k = os.write(self.master, view)
                view = view[k:]
            except BlockingIOError:
                select.select([], [self.master], [], 0.5)

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def _write_gateway_config(tmp, serial, sink_port, gw_udp):
    state = tmp / "gw-state"
    state.mkdir()
    paired = {DEV64.hex(): {"device": "bench", "service": "default", "paired_at": 0}}
    (state / "pairing.json").write_text(json.dumps({"version": 1, "devices": paired}))
    big = 10**9
    (tmp / "gateway.json").write_text(
        json.dumps(
            {
                "serial": serial,
                "escaped": False,
                "services": {"default": "127.0.0.1:%d" % sink_port},
                "udp_listen": "127.0.0.1:%d" % gw_udp,
                "state_dir": "gw-state",
                "limits": {"rate_per_s": big, "rate_burst": big, "max_payload": 84},
            }
        )
    )


def _start(args, tmp, logs):
    return subprocess.Popen(
        [sys.executable, "-m"] + args + ["--ready-file", str(tmp / (args[0] + ".ready"))],
        cwd=ROOT,
        stdout=logs,
        stderr=logs,
        env=dict(os.environ, **PINNED_MALLOC),
    )


def _ratios(res):
    for size in SIZES:
        rk = "relay_udp_%dB_" % size
        for gwn in ("gateway_zigbee", "gateway_udp"):
            gk = "%s_%dB_" % (gwn, size)
            # capacity: CPU per forwarded packet, up + down (the driver may be the
            # bottleneck of the wall-clock rates, never of the CPU figures)
            # (/proc counts CPU in 10 ms ticks: too coarse for --quick's short phases)
            g_cpu = res[gk + "up_cpu_us"] + res[gk + "down_cpu_us"]
            r_cpu = res[rk + "up_cpu_us"] + res[rk + "down_cpu_us"]
            res["ratio_%s_vs_relay_%dB_cpu" % (gwn, size)] = (
                round(r_cpu / g_cpu, 3) if g_cpu and r_cpu else None
            )
            # wall clock, both directions: 2 packets in 1/up + 1/down seconds
            both = {
                x: 2.0 / (1.0 / res[x + "up_per_s"] + 1.0 / res[x + "down_per_s"]) for x in (gk, rk)
            }
            res["ratio_%s_vs_relay_%dB_wall" % (gwn, size)] = round(both[gk] / both[rk], 3)


def gateway_vs_relay(quick):
    """Frames/s through the real gateway process (ZigBee side over a pty, and
    its UDP side) and through a plain asyncio UDP relay, same sizes, same run."""
    n, reps, window = (200, 1, 16) if quick else (20000, 3, 32)
    tmp = Path(tempfile.mkdtemp(prefix="atls-bench-gw-"))
    sink = Sink()
    ptyf = PtyFrames()
    gw_udp = free_port()
    _write_gateway_config(tmp, ptyf.path, sink.addr[1], gw_udp)
    logs = open(tmp / "procs.log", "w")
    gw = _start(["host_tools.gateway", "run", "--config", str(tmp / "gateway.json")], tmp, logs)
    relay_port = free_port()
    relay = _start(
        [
            "host_tools.bench.relay",
            "--listen",
            "127.0.0.1:%d" % relay_port,
            "--target",
            "127.0.0.1:%d" % sink.addr[1],
        ],
        tmp,
        logs,
    )
    dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dev.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    dev.bind(("127.0.0.1", 0))
    dev.setblocking(False)
    res = {}
    try:
        wait_path(tmp / "host_tools.gateway.ready", gw, "gateway", poll=ptyf.answer_at)
        wait_path(tmp / "host_tools.bench.relay.ready", relay, "relay")
        ptyf.frames()
        prime_udp_flow(dev, ("127.0.0.1", gw_udp), sink)

        def udp_recv_all():
            k = 0
            while True:
                try:
                    dev.recv(4096)
                except BlockingIOError:
                    return k
                k += 1

        def tx_requests():
            return sum(1 for f in ptyf.frames() if f[0] == "tx_request")

        results = {}
        procs = {"gateway_zigbee": gw, "gateway_udp": gw, "relay_udp": relay}
        lost = 0
        for _ in range(reps):
            for size in SIZES:
                payload = DATA_HEADER + os.urandom(size - 1)  # an ATLS DATA packet's shape
                frame = X.encode_frame(X.rx_packet(DEV64, 0x1234, payload))
                paths = (
                    ("gateway_zigbee", lambda i, f=frame: ptyf.write(f), ptyf.master, tx_requests),
                    (
                        "gateway_udp",
                        lambda i, p=payload: dev.sendto(p, ("127.0.0.1", gw_udp)),
                        dev.fileno(),
                        udp_recv_all,
                    ),
                    (
                        "relay_udp",
                        lambda i, p=payload: dev.sendto(p, ("127.0.0.1", relay_port)),
                        dev.fileno(),
                        udp_recv_all,
                    ),
                )
                for name, send_up, down_fd, down_collect in paths:
                    pid = procs[name].pid
                    r = results.setdefault(
                        (name, size), {"up": [], "down": [], "cpu_up": [], "cpu_down": []}
                    )
                    sink.recv_all()
                    c0 = proc_cpu_s(pid)
                    t_up, got_up = windowed(n, window, send_up, sink.sock.fileno(), sink.recv_all)
                    c1 = proc_cpu_s(pid)
                    peer = sink.peer
                    t_dn, got_dn = windowed(
                        n,
                        window,
                        lambda i, p=payload, a=peer: sink.sock.sendto(p, a),
                        down_fd,
                        down_collect,
                    )
                    c2 = proc_cpu_s(pid)
                    r["up"].append(got_up / t_up if t_up > 0 else 0.0)
                    r["down"].append(got_dn / t_dn if t_dn > 0 else 0.0)
                    r["cpu_up"].append((c1 - c0) * 1e6 / max(got_up, 1))
                    r["cpu_down"].append((c2 - c1) * 1e6 / max(got_dn, 1))
                    lost += 2 * n - got_up - got_dn
        for (name, size), r in results.items():
            k = "%s_%dB_" % (name, size)
            for d in ("up", "down"):
                res[k + d + "_per_s"] = round(statistics.median(r[d]))
                res[k + d + "_cpu_us"] = round(statistics.median(r["cpu_" + d]), 1)
        _ratios(res)
        res["packets_per_phase"] = n
        res["window"] = window
        res["lost"] = lost
    finally:
        stop(gw)
        stop(relay)
        logs.close()
        ptyf.close()
        dev.close()
        sink.sock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return res
