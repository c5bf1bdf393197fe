"""Section `service_handshakes` (issue 4): handshakes per second of the
service path against a raw pyOpenSSL memory-BIO loop, interleaved in the same
run; then the real service process over loopback UDP."""

import json
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN, SUITE_NAMES
from host_tools.bench import openssl_peers
from host_tools.bench.pair import CCM8, IDENTITY, PSK, Device, exchange, make_service, quiet_stderr
from host_tools.bench.procs import proc_cpu_s, stop, wait_path
from host_tools.toolchain import ROOT

NOTE = (
    "PSK+ECDHE x25519 CCM_8; *_server_* = CPU time on the server side "
    "only (client excluded); ratio = service / raw OpenSSL server"
)


def _bare_handshake(sctx, server_time):
    """Firmware client (native crypto) <-> host_tools.service.tls_engine.ServerConnection,
    no link: server side timed = ServerConnection + feed() + export()."""
    from atls.tls.client import ClientConfig, TLSClient
    from host_tools.service.tls_engine import ServerConnection

    pc = time.perf_counter
    cl = TLSClient(ClientConfig(suites=(CCM8,), psk=PSK, psk_identity=IDENTITY))
    cl.start(0)
    t = pc()
    sc = ServerConnection(sctx)
    out = sc.feed(cl.data_to_send())
    server_time[0] += pc() - t
    cl.receive(out, 0)
    t = pc()
    sc.feed(cl.data_to_send())
    sc.export(EXPORTER_LABEL, KEY_BLOCK_LEN)
    server_time[0] += pc() - t
    if not (sc.done and cl.connected):
        raise RuntimeError("bare ServerConnection handshake failed")


def floor_handshake(ctx, sid, server_time, clock=time.thread_time):
    """The least a service does per handshake, timed on the server side:
    firmware client (native crypto) + Link <-> ServerConnection on `ctx` and
    a server Link, then the exporter and the channel (start_channel) - no
    session table, admission, logs or sockets.  What the service's Python
    could be brought down to (scale.single_vs_raw's floor figure)."""
    from atls.link import Link, LinkConfig
    from host_tools.service.tls_engine import SUITES, ServerConnection

    dev = Device(CCM8, 1200)
    dev.start(0)
    t = clock()
    link = Link("server", LinkConfig(mtu=1200), sid)
    conn = ServerConnection(ctx)
    server_time[0] += clock() - t
    now = 0
    for _ in range(12):  # the same datagrams as the service's: ACKs on their timers
        up = dev.link.datagrams(now)
        t = clock()
        for d in up:  # one at a time, as the service takes them
            link.receive(d, now)
            for ev in link.events():
                if ev[0] == "flight" and link.channel is None:
                    out = conn.feed(ev[1])
                    if out:
                        link.send_flight(out, now)
                    if conn.done:
                        suite = SUITES[conn.info()["suite"]]
                        link.start_channel(conn.export(), suite, 1 << 32, bytes(17))
        down = link.datagrams(now)
        server_time[0] += clock() - t
        for d in down:
            dev.link.receive(d, now)
        dev.pump(now)
        if dev.settled and link.next_timer_ms() is None:
            return
        now += 50
    if not dev.settled:
        raise RuntimeError("floor handshake did not settle")


def _service_handshake(svc, tr, i, mtu, server_time):
    """Firmware client + Link <-> Service.datagram_received (the UDP service's
    whole per-datagram path: rate limit, session lookup, Link, ServerConnection,
    exporter, channel, logging, app on_connect); server side timed."""
    dev = Device(CCM8, mtu)
    dev.start(0)
    addr = ("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255), 40000 + i % 20000)
    exchange(dev, svc, tr, addr, server_time=server_time)
    if not dev.up:
        raise RuntimeError("service handshake did not complete")


def _write_service_config(tmp, slots):
    reg = {"devices": {"dev-%02d" % k: {"psk": PSK.hex()} for k in range(slots)}}
    (tmp / "devices.json").write_text(json.dumps(reg))
    big = 10**9
    (tmp / "service.json").write_text(
        json.dumps(
            {
                "listen": "127.0.0.1:0",
                "registry": "devices.json",
                "suites": [SUITE_NAMES[CCM8]],
                "link": {"mtu": 1200},
                "limits": {"rate_per_s": big, "rate_burst": big, "max_half_open": 4 * slots},
            }
        )
    )


def service_udp(seconds, slots=16, client="firmware"):
    """The real service process (python -m host_tools.service) over loopback
    UDP, driven by `slots` concurrent clients in this process: the firmware's
    (native crypto), or with client="openssl" pyOpenSSL over the firmware's
    Link (openssl_peers.LinkDevice: the baseline's own client, cheap enough
    to keep the service busy).  A handshake counts when the service has
    acknowledged the client's Finished (HS_ACK).  Returns (handshakes/s wall,
    handshakes per CPU-second of the service process, handshakes)."""
    tmp = Path(tempfile.mkdtemp(prefix="atls-bench-svc-"))
    _write_service_config(tmp, slots)
    null = open(os.devnull, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.service",
            "--config",
            str(tmp / "service.json"),
            "--ready-file",
            str(tmp / "ready"),
            "--stats",
            str(tmp / "stats.json"),
        ],
        cwd=ROOT,
        stdout=null,
        stderr=null,
    )
    sel = selectors.DefaultSelector()
    socks = []
    try:
        host, port = wait_path(tmp / "ready", proc, "service").rsplit(":", 1)
        target = (host, int(port))
        t0 = time.monotonic()

        def now():
            return int((time.monotonic() - t0) * 1000)

        devs = [None] * slots

        def flush(k):
            for d in devs[k].link.datagrams(now()):
                socks[k].sendto(d, target)

        cctxs = [
            openssl_peers.client_context(SUITE_NAMES[CCM8], b"dev-%02d" % k) for k in range(slots)
        ]

        def fresh(k):
            if client == "openssl":
                devs[k] = openssl_peers.LinkDevice(cctxs[k])
            else:
                devs[k] = Device(CCM8, 1200, identity=b"dev-%02d" % k)
            devs[k].start(now())
            flush(k)

        for k in range(slots):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, k)
        for k in range(slots):  # warm-up round, not counted
            fresh(k)
        done = 0
        counting = False
        cpu0 = w0 = None
        end = None
        while True:
            for key, _ in sel.select(0.05):
                k = key.data
                dev = devs[k]
                while True:
                    try:
                        d = socks[k].recv(4096)
                    except BlockingIOError:
                        break
                    dev.link.receive(d, now())
                dev.pump(now())
                flush(k)
                # the service's HS_ACK for the client's Finished: it has completed
                if dev.settled:
                    done += 1
                    if not counting and done >= slots:
                        counting = True
                        done = 0
                        cpu0 = proc_cpu_s(proc.pid)
                        w0 = time.monotonic()
                        end = w0 + seconds
                    fresh(k)
            for k in range(slots):  # timers (retransmissions, should any be lost)
                flush(k)
            if counting and time.monotonic() >= end:
                break
            if time.monotonic() - t0 > seconds + 30:
                raise RuntimeError("service over UDP: handshakes stalled")
        wall = time.monotonic() - w0
        cpu = proc_cpu_s(proc.pid) - cpu0
        return done / wall, (done / cpu if cpu > 0 else None), done
    finally:
        for s in socks:
            s.close()
        stop(proc)
        null.close()
        shutil.rmtree(tmp, ignore_errors=True)


def service_handshakes(quick=False):
    """Handshakes/s: the service path vs a raw pyOpenSSL loop, interleaved."""
    from host_tools.service.tls_engine import ServerConfig, openssl_version

    name = SUITE_NAMES[CCM8]
    rounds, per = (1, 3) if quick else (7, 150)
    raw_sctx = openssl_peers.server_context(name)
    sctx = ServerConfig(psks={IDENTITY: PSK}, suites=(name,)).build()
    cctx = openssl_peers.client_context(name)
    with quiet_stderr():
        services = {mtu: make_service(name, mtu) for mtu in (1200, 66)}
    kinds = ("raw", "bare", "service", "service_mtu66")
    rates = {k: [] for k in kinds}
    loop_rates = {k: [] for k in kinds}
    count = [0]

    def run(kind, st):
        if kind == "raw":
            openssl_peers.raw_handshake(cctx, raw_sctx, st)
        elif kind == "bare":
            _bare_handshake(sctx, st)
        else:
            mtu = 66 if kind.endswith("66") else 1200
            svc, tr = services[mtu]
            count[0] += 1
            _service_handshake(svc, tr, count[0], mtu, st)

    with quiet_stderr():
        for k in kinds:  # warm up: imports, first allocations, OpenSSL tables
            run(k, [0.0])
        for _ in range(rounds):
            for k in kinds:
                st = [0.0]
                t0 = time.perf_counter()
                for _ in range(per):
                    run(k, st)
                wall = time.perf_counter() - t0
                rates[k].append(per / st[0])
                loop_rates[k].append(per / wall)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lmed = {k: statistics.median(v) for k, v in loop_rates.items()}
    udp_wall, udp_cpu, udp_n = service_udp(0.5 if quick else 4.0, slots=4 if quick else 16)
    return {
        "raw_openssl_server_hs_per_s": round(med["raw"], 1),
        "raw_openssl_loop_hs_per_s": round(lmed["raw"], 1),
        "bare_serverconnection_server_hs_per_s": round(med["bare"], 1),
        "service_server_hs_per_s": round(med["service"], 1),
        "service_mtu66_server_hs_per_s": round(med["service_mtu66"], 1),
        "service_loop_hs_per_s": round(lmed["service"], 1),
        "service_udp_process_cpu_hs_per_s": round(udp_cpu, 1) if udp_cpu else None,
        "service_udp_wall_hs_per_s": round(udp_wall, 1),
        "service_udp_handshakes": udp_n,
        "ratio_service_vs_raw_openssl": round(med["service"] / med["raw"], 3),
        "ratio_service_mtu66_vs_raw_openssl": round(med["service_mtu66"] / med["raw"], 3),
        "ratio_service_udp_process_vs_raw_openssl": round(udp_cpu / med["raw"], 3)
        if udp_cpu
        else None,
        "ratio_bare_serverconnection_vs_raw_openssl": round(med["bare"] / med["raw"], 3),
        "server_us_per_hs_raw_openssl": round(1e6 / med["raw"], 1),
        "server_us_per_hs_bare_serverconnection": round(1e6 / med["bare"], 1),
        "server_us_per_hs_service": round(1e6 / med["service"], 1),
        "client_and_glue_us_per_hs_service_loop": round(
            1e6 / lmed["service"] - 1e6 / med["service"], 1
        ),
        "handshakes_measured_per_kind": rounds * per,
        "openssl": openssl_version(),
    }
