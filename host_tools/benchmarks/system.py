"""System-level figures for `make bench` (CPython only; docs/BENCHMARKS.md).

Each section is a function `name(quick=False) -> {metric: value}` that
measures and never asserts; `host_tools.bench` runs them after the
per-primitive scripts and stores them in build/bench.json under `sections`.

  link_overhead       bytes on the wire per message and for a full PSK+ECDHE
                      handshake (firmware TLS client + client Link against the
                      service in-process), per suite and MTU (issue 4)
  service_handshakes  handshakes/s of the service path against a raw
                      pyOpenSSL memory-BIO handshake loop, same run (issue 4)
  zigbee              frames and bytes on air (sim.radio's medium) for a
                      handshake and per message; the real gateway process
                      against a plain asyncio UDP relay, frames/s (issue 5)
  sim_scale           the simulator with 10 and 100 devices: wall time, time
                      to all up, peak RSS per process (issue 6)
  boards              .mpy bytes per board, heap to import everything (issue 7)

Helper processes started by the sections (`python -m
host_tools.benchmarks.system relay|sim-child ...`) are defined here too.
"""

import argparse
import contextlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PSK = bytes(range(32))
IDENTITY = b"dev-01"  # as the simulator names devices (the IETF anchor assumes 1 byte)
SUITES = (
    ("ccm8", 0x1305, "TLS_AES_128_CCM_8_SHA256"),
    ("ccm", 0x1304, "TLS_AES_128_CCM_SHA256"),
    ("gcm", 0x1301, "TLS_AES_128_GCM_SHA256"),
)
MTUS = (64, 66, 84, 1200)
# draft-ietf-iotops-security-protocol-comparison (shared/reference/README.md):
# TLS 1.3 PSK+ECDHE, x25519, CCM_8, 1-byte identifiers: flights 163 + 157 + 50
ANCHOR_FLIGHTS = (163, 157, 50)
ANCHOR_HS = 370
AIR_OVERHEAD = 30  # sim/radio.py: PHY 6 + MAC 11 + NWK 8 + APS 5 bytes per frame
LABEL = b"application-layer-tls"

NOTES = {
    "link_overhead": "real handshakes (firmware TLSClient + Link vs Service in-process, no "
    "sockets, no loss); TLS bytes = flights as TLS produced them; wire = every "
    "link datagram incl. HS_ACK; PSK+ECDHE x25519",
    "service_handshakes": "PSK+ECDHE x25519 CCM_8; *_server_* = CPU time on the server side "
    "only (client excluded); ratio = service / raw OpenSSL server",
    "zigbee": "air = payload + 30 B/frame (PHY+MAC+NWK+APS, sim/radio.py); gateway and relay "
    "are separate processes, driven by this process over a pty / loopback UDP",
    "sim_scale": "python -m sim (default scenario) as a subprocess; RSS from /proc VmHWM",
    "boards": "mpy-cross per board (host_tools.boards.mpy_sizes); import RAM = unix port "
    "gc.mem_alloc() after importing every module (64-bit: ~2x a 32-bit MCU)",
}


@contextlib.contextmanager
def _quiet_stderr():
    """The service logs a JSON line per handshake: keep the work, drop the text."""
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        yield


# -- in-process ATLS pair: firmware client + the service --------------------------------


class _Transport:
    """Stands in for the service's asyncio UDP transport."""

    def __init__(self):
        self.out = []

    def sendto(self, data, addr):
        self.out.append(bytes(data))


def _service(suite_name, mtu, identity=IDENTITY):
    from atls.link import LinkConfig
    from host_tools.service import Service
    from host_tools.tls_server import ServerConfig

    svc = Service(
        ServerConfig(psks={identity: PSK}, suites=(suite_name,)),
        LinkConfig(mtu=mtu),
        limits={"rate_per_s": 10**9, "rate_burst": 10**9},
    )
    tr = _Transport()
    svc.connection_made(tr)
    return svc, tr


class _Device:
    """The firmware client side (atls.tls.client + atls.link), as
    atls.session.DeviceSession glues them, without its retry policy."""

    def __init__(self, suite, mtu, identity=IDENTITY):
        from atls.link import Link, LinkConfig
        from atls.tls.client import ClientConfig, TLSClient

        self.tls = TLSClient(ClientConfig(suites=(suite,), psk=PSK, psk_identity=identity))
        self.link = Link("client", LinkConfig(mtu=mtu))
        self.flights = []  # ("c"|"s", TLS bytes)
        self.messages = []

    def start(self, now):
        self.tls.start(now)
        out = self.tls.data_to_send()
        self.flights.append(("c", len(out)))
        self.link.send_flight(out, now)

    def pump(self, now):
        for ev in self.link.events():
            if ev[0] == "flight":
                self.flights.append(("s", len(ev[1])))
                self.tls.receive(ev[1], now)
                out = self.tls.data_to_send()
                if out:
                    self.flights.append(("c", len(out)))
                    self.link.send_flight(out, now)
                if self.tls.connected and self.link.channel is None:
                    self.link.start_channel(self.tls.exporter(LABEL, b"", 56), self.tls.suite)
            elif ev[0] == "message":
                self.messages.append(ev[1])


def _exchange(dev, svc, tr, addr, now=0, server_time=None):
    """Move datagrams both ways until nothing moves (no loss, no timers):
    returns (client->service datagrams, service->client datagrams)."""
    up, down = [], []
    pc = time.perf_counter
    while True:
        moved = False
        for d in dev.link.datagrams(now):
            up.append(d)
            if server_time is None:
                svc.datagram_received(d, addr)
            else:
                t = pc()
                svc.datagram_received(d, addr)
                server_time[0] += pc() - t
            moved = True
        out, tr.out = tr.out, []
        for d in out:
            down.append(d)
            dev.link.receive(d, now)
            moved = True
        dev.pump(now)
        if not moved:
            return up, down


def _sum(ds):
    return sum(len(d) for d in ds)


def link_overhead(quick=False):
    """Per-message overhead per suite; link framing on full handshakes."""
    from atls import wire

    res = {}
    for short, suite, name in SUITES:
        for mtu in (64, 1200) if quick and short != "ccm8" else MTUS:
            with _quiet_stderr():
                svc, tr = _service(name, mtu)
                dev = _Device(suite, mtu)
                dev.start(0)
                up, down = _exchange(dev, svc, tr, ("10.0.0.1", 5684))
            if dev.link.channel is None:
                raise RuntimeError("handshake did not complete (%s, mtu %d)" % (name, mtu))
            c_tls = sum(n for who, n in dev.flights if who == "c")
            s_tls = sum(n for who, n in dev.flights if who == "s")
            tls, wire_b = c_tls + s_tls, _sum(up) + _sum(down)
            hs_ack = _sum(d for d in up + down if (d[0] & 7) == wire.HS_ACK)
            k = "hs_%s_mtu%d_" % (short, mtu)
            if short == "ccm8":
                res[k + "up_tls_bytes"] = c_tls
                res[k + "up_wire_bytes"] = _sum(up)
                res[k + "down_tls_bytes"] = s_tls
                res[k + "down_wire_bytes"] = _sum(down)
                res[k + "datagrams"] = len(up) + len(down)
                res[k + "hs_ack_bytes"] = hs_ack
                res[k + "framing_no_hs_ack_pct"] = round((wire_b - hs_ack - tls) * 100.0 / tls, 2)
            res[k + "framing_pct"] = round((wire_b - tls) * 100.0 / tls, 2)
            if mtu == 1200:
                res["hs_%s_tls_bytes" % short] = tls
                res["hs_%s_flights" % short] = "+".join(str(n) for _, n in dev.flights)
            if mtu == 64:
                # a message and its ACK on the channel this handshake made
                with _quiet_stderr():
                    for size in (0, 16):
                        dev.link.send(bytes(size), 0)
                        u, dn = _exchange(dev, svc, tr, ("10.0.0.1", 5684))
                        data = [d for d in u if (d[0] & 7) == wire.DATA]
                        acks = [d for d in dn if (d[0] & 7) == wire.ACK]
                        if size == 0:
                            res["data_overhead_bytes_%s" % short] = len(data[0])
                            res["channel_share_bytes_%s" % short] = len(data[0]) - 3
                            res["ack_bytes_%s" % short] = len(acks[0])
                        else:
                            res["data_16B_wire_bytes_%s" % short] = len(data[0])
    res["hs_ccm8_vs_anchor_pct"] = round(
        (res["hs_ccm8_tls_bytes"] - ANCHOR_HS) * 100.0 / ANCHOR_HS, 1
    )
    # the anchor's assumptions (1-byte PSK identity): what differs is then OpenSSL's
    # record layout (EncryptedExtensions and Finished in two records, +14 bytes)
    with _quiet_stderr():
        svc, tr = _service("TLS_AES_128_CCM_8_SHA256", 1200, identity=b"d")
        dev = _Device(0x1305, 1200, identity=b"d")
        dev.start(0)
        _exchange(dev, svc, tr, ("10.0.0.1", 5684))
    res["hs_ccm8_1B_identity_flights"] = "+".join(str(n) for _, n in dev.flights)
    res["hs_ccm8_1B_identity_tls_bytes"] = sum(n for _, n in dev.flights)
    res["anchor_ietf_tls13_psk_ecdhe_bytes"] = ANCHOR_HS
    res["anchor_ietf_flights"] = "+".join(str(n) for n in ANCHOR_FLIGHTS)
    res["anchor_oscore_overhead_bytes"] = "13/11"
    res["anchor_tls13_record_overhead_ccm8_bytes"] = 14
    return res


# -- service handshakes per second ------------------------------------------------------


def _openssl_client_ctx(suite_name, identity=IDENTITY):
    """A pyOpenSSL TLS 1.3 client offering an external PSK (psk_dhe_ke, x25519)
    through SSL_CTX_set_psk_use_session_callback (no pyOpenSSL API for it)."""
    from OpenSSL import SSL
    from OpenSSL._util import ffi, lib

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # CCM_8 (64-bit tag) needs level 0
    ctx.set_tls13_ciphersuites(suite_name.encode())
    if lib.SSL_CTX_set1_curves_list(ctx._context, b"X25519") != 1:
        raise RuntimeError("X25519 not available")
    ident = ffi.new("unsigned char[]", identity)

    def use_session(ssl, md, idp, idlenp, sessp):
        sessp[0] = ffi.NULL
        cipher = lib.SSL_CIPHER_find(ssl, b"\x13\x01")  # SHA-256: the PSK's hash
        sess = lib.Cryptography_SSL_SESSION_new()
        if (
            lib.SSL_SESSION_set1_master_key(sess, PSK, len(PSK)) != 1
            or lib.SSL_SESSION_set_cipher(sess, cipher) != 1
            or lib.SSL_SESSION_set_protocol_version(sess, lib.TLS1_3_VERSION) != 1
        ):
            lib.SSL_SESSION_free(sess)
            return 0
        idp[0] = ident
        idlenp[0] = len(identity)
        sessp[0] = sess
        return 1

    cb = ffi.callback(
        "int(SSL *, const EVP_MD *, const unsigned char **, size_t *, SSL_SESSION **)",
        use_session,
        error=0,
    )
    lib.SSL_CTX_set_psk_use_session_callback(ctx._context, cb)
    ctx._bench_keep = (cb, ident)
    return ctx


def _drain(conn):
    from OpenSSL import SSL

    out = b""
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            return out
        if not chunk:
            return out
        out += chunk


def _step(conn):
    from OpenSSL import SSL

    try:
        conn.do_handshake()
        return True
    except SSL.WantReadError:
        return False


def _raw_openssl_handshake(cctx, sctx, server_time):
    """One PSK+ECDHE handshake, pyOpenSSL client <-> pyOpenSSL server, memory
    BIOs both sides.  Server side (timed): Connection, bio_write, do_handshake,
    bio_read, and the 56-byte exporter the service needs."""
    from OpenSSL import SSL

    pc = time.perf_counter
    c = SSL.Connection(cctx, None)
    c.set_connect_state()
    _step(c)
    to_s = _drain(c)
    t = pc()
    s = SSL.Connection(sctx, None)
    s.set_accept_state()
    server_time[0] += pc() - t
    c_done = s_done = False
    for _ in range(6):
        if to_s:
            t = pc()
            s.bio_write(to_s)
            s_done = s_done or _step(s)
            to_c = _drain(s)
            server_time[0] += pc() - t
            to_s = b""
            if to_c:
                c.bio_write(to_c)
                c_done = c_done or _step(c)
                to_s = _drain(c)
        if c_done and s_done and not to_s:
            break
    t = pc()
    s.export_keying_material(LABEL, 56)
    server_time[0] += pc() - t
    from OpenSSL._util import lib

    if not (c_done and s_done) or not lib.SSL_session_reused(s._ssl) or s.get_group_name() is None:
        raise RuntimeError("raw OpenSSL loop did not complete a PSK+ECDHE handshake")


def _bare_handshake(sctx, server_time):
    """Firmware client (native crypto) <-> host_tools.tls_server.ServerConnection,
    no link: server side timed = ServerConnection + feed() + export()."""
    from atls.tls.client import ClientConfig, TLSClient
    from host_tools.tls_server import ServerConnection

    pc = time.perf_counter
    cl = TLSClient(ClientConfig(suites=(0x1305,), psk=PSK, psk_identity=IDENTITY))
    cl.start(0)
    t = pc()
    sc = ServerConnection(sctx)
    out = sc.feed(cl.data_to_send())
    server_time[0] += pc() - t
    cl.receive(out, 0)
    t = pc()
    sc.feed(cl.data_to_send())
    sc.export(LABEL, 56)
    server_time[0] += pc() - t
    if not (sc.done and cl.connected):
        raise RuntimeError("bare ServerConnection handshake failed")


def _service_handshake(svc, tr, i, mtu, server_time):
    """Firmware client + Link <-> Service.datagram_received (the UDP service's
    whole per-datagram path: rate limit, session lookup, Link, ServerConnection,
    exporter, channel, logging, app on_connect); server side timed."""
    dev = _Device(0x1305, mtu)
    dev.start(0)
    addr = ("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255), 40000 + i % 20000)
    _exchange(dev, svc, tr, addr, server_time=server_time)
    if dev.link.channel is None:
        raise RuntimeError("service handshake did not complete")


def _openssl_server_ctx(suite_name, identity=IDENTITY):
    """The raw baseline's server: a plain pyOpenSSL TLS 1.3 context doing what
    the service's OpenSSL does (same suite, groups X25519:P-256, external PSK
    via the find-session callback, session cache off), without the service's
    message callback and bookkeeping."""
    from OpenSSL import SSL
    from OpenSSL._util import ffi, lib

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    ctx.set_tls13_ciphersuites(suite_name.encode())
    lib.SSL_CTX_set1_curves_list(ctx._context, b"X25519:P-256")
    ctx.set_session_id(b"atls-bench")
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    psks = {identity: PSK}

    def find_session(ssl, ident, ident_len, sessp):
        sessp[0] = ffi.NULL
        key = psks.get(bytes(ffi.buffer(ident, ident_len)))
        if key is None:
            return 1
        sess = lib.Cryptography_SSL_SESSION_new()
        if (
            lib.SSL_SESSION_set1_master_key(sess, key, len(key)) != 1
            or lib.SSL_SESSION_set_cipher(sess, lib.SSL_CIPHER_find(ssl, b"\x13\x01")) != 1
            or lib.SSL_SESSION_set_protocol_version(sess, lib.TLS1_3_VERSION) != 1
        ):
            lib.SSL_SESSION_free(sess)
            return 0
        sessp[0] = sess
        return 1

    cb = ffi.callback("int(SSL *, unsigned char *, size_t, SSL_SESSION **)", find_session, error=0)
    lib.SSL_CTX_set_psk_find_session_callback(ctx._context, cb)
    ctx._bench_keep = cb
    return ctx


def _proc_cpu_s(pid):
    """utime + stime of a process, seconds (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _service_udp(seconds, slots=16):
    """The real service process (python -m host_tools.service) over loopback
    UDP, driven by `slots` concurrent firmware clients (native crypto) in this
    process.  A handshake counts when the service has acknowledged the
    client's Finished (HS_ACK).  Returns (handshakes/s wall, handshakes per
    CPU-second of the service process, handshakes)."""
    import selectors

    tmp = Path(tempfile.mkdtemp(prefix="atls-bench-svc-"))
    reg = {"devices": {"dev-%02d" % k: {"psk": PSK.hex()} for k in range(slots)}}
    (tmp / "devices.json").write_text(json.dumps(reg))
    big = 10**9
    (tmp / "service.json").write_text(
        json.dumps(
            {
                "listen": "127.0.0.1:0",
                "registry": "devices.json",
                "suites": ["TLS_AES_128_CCM_8_SHA256"],
                "link": {"mtu": 1200},
                "limits": {"rate_per_s": big, "rate_burst": big, "max_half_open": 4 * slots},
            }
        )
    )
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
        host, port = _wait_path(tmp / "ready", proc, "service").rsplit(":", 1)
        target = (host, int(port))
        t0 = time.monotonic()

        def now():
            return int((time.monotonic() - t0) * 1000)

        devs = [None] * slots

        def flush(k):
            for d in devs[k].link.datagrams(now()):
                socks[k].sendto(d, target)

        def fresh(k):
            devs[k] = _Device(0x1305, 1200, identity=b"dev-%02d" % k)
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
                # the link drops its own last flight once it is acknowledged (the
                # service's HS_ACK for Finished): the service has completed
                if dev.link.channel is not None and dev.link._tx is None:
                    done += 1
                    if not counting and done >= slots:
                        counting = True
                        done = 0
                        cpu0 = _proc_cpu_s(proc.pid)
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
        cpu = _proc_cpu_s(proc.pid) - cpu0
        return done / wall, (done / cpu if cpu > 0 else None), done
    finally:
        for s in socks:
            s.close()
        _stop(proc)
        null.close()
        shutil.rmtree(tmp, ignore_errors=True)


def service_handshakes(quick=False):
    """Handshakes/s: the service path vs a raw pyOpenSSL loop, interleaved."""
    from host_tools.tls_server import ServerConfig, openssl_version

    name = "TLS_AES_128_CCM_8_SHA256"
    rounds, per = (1, 3) if quick else (7, 150)
    raw_sctx = _openssl_server_ctx(name)
    sctx = ServerConfig(psks={IDENTITY: PSK}, suites=(name,)).build()
    cctx = _openssl_client_ctx(name)
    with _quiet_stderr():
        services = {mtu: _service(name, mtu) for mtu in (1200, 66)}
    kinds = ("raw", "bare", "service", "service_mtu66")
    rates = {k: [] for k in kinds}
    loop_rates = {k: [] for k in kinds}
    count = [0]

    def run(kind, st):
        if kind == "raw":
            _raw_openssl_handshake(cctx, raw_sctx, st)
        elif kind == "bare":
            _bare_handshake(sctx, st)
        else:
            mtu = 66 if kind.endswith("66") else 1200
            svc, tr = services[mtu]
            count[0] += 1
            _service_handshake(svc, tr, count[0], mtu, st)

    with _quiet_stderr():
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
    udp_wall, udp_cpu, udp_n = _service_udp(0.5 if quick else 4.0, slots=4 if quick else 16)
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


# -- ZigBee: on air, and the gateway against a plain relay ------------------------------


class _Air:
    """One device module and the coordinator on sim.radio's Medium (virtual
    clock, no loss), each end speaking API frames through atls.xbee."""

    def __init__(self, ee):
        from atls import xbee as X
        from sim.radio import COORDINATOR_BASE, DEVICE_BASE, Medium, Module, VirtualClock

        self.X = X
        self.clock = VirtualClock()
        self.medium = Medium(self.clock, loss=0.0, latency_ms=5.0, seed=1)
        self.coord = self.medium.add(
            Module(self.medium, COORDINATOR_BASE + 1, coordinator=True, ee=ee)
        )
        self.dev = self.medium.add(Module(self.medium, DEVICE_BASE + 1, ee=ee, joined=True))
        self.np = self.coord.max_payload()
        self.rx = {"coord": [], "dev": []}
        self.uart = {"coord": 0, "dev": 0}
        for name, mod in (("coord", self.coord), ("dev", self.dev)):
            dec = X.FrameDecoder(False)
            mod.attach(lambda data, n=name, d=dec: self._uart_out(n, d, data))
        self.fid = 0

    def _uart_out(self, name, dec, data):
        for fd in dec.feed(data):
            f = self.X.parse(fd)
            if f[0] == "rx":
                self.rx[name].append(f[4])

    def send(self, frm, payload):
        X = self.X
        self.fid = self.fid % 255 + 1
        if frm == "dev":
            raw = X.encode_frame(X.tx_request(self.fid, X.COORDINATOR64, payload))
            self.dev.serial_in(raw)
        else:
            raw = X.encode_frame(X.tx_request(self.fid, self.dev.addr64, payload))
            self.coord.serial_in(raw)
        self.uart[frm] += len(raw)
        self.clock.run_until_idle()

    def take(self, name):
        out, self.rx[name] = self.rx[name], []
        return out

    def snapshot(self):
        return dict(self.medium.totals)


def _air_handshake(ee):
    """A full PSK+ECDHE (CCM_8) handshake with every link datagram carried as
    one ZigBee frame; then one 16-byte message each way."""
    air = _Air(ee)
    mtu = air.np
    with _quiet_stderr():
        svc, tr = _service("TLS_AES_128_CCM_8_SHA256", mtu)
    dev = _Device(0x1305, mtu)
    dev.start(0)
    addr = ("10.9.9.9", 1)

    def run():
        while True:
            moved = False
            for d in dev.link.datagrams(0):
                air.send("dev", d)
                moved = True
            for d in air.take("coord"):
                with _quiet_stderr():
                    svc.datagram_received(d, addr)
                moved = True
            out, tr.out = tr.out, []
            for d in out:
                air.send("coord", d)
                moved = True
            for d in air.take("dev"):
                dev.link.receive(d, 0)
                moved = True
            dev.pump(0)
            if not moved:
                return

    run()
    if dev.link.channel is None:
        raise RuntimeError("handshake over the emulated radio failed")
    res = {}
    t = air.snapshot()
    mods = {n: dict(m.counters) for n, m in (("dev", air.dev), ("coord", air.coord))}
    k = "np%d_" % mtu
    res[k + "hs_frames_on_air"] = t["frames"]
    res[k + "hs_frames_up"] = mods["dev"]["tx_frames"]
    res[k + "hs_frames_down"] = mods["coord"]["tx_frames"]
    res[k + "hs_payload_bytes"] = t["bytes"]
    res[k + "hs_air_bytes"] = t["air_bytes"]
    res[k + "hs_airtime_ms"] = round(t["airtime_ms"], 2)
    res[k + "hs_uart_bytes_device"] = air.uart["dev"] + mods["dev"]["serial_out_bytes"]
    # one 16-byte message device -> service (DATA up, ACK down), then one
    # service -> device (DATA down, ACK up); the application is silenced so
    # that no echo mixes the two
    sess = next(iter(svc.sessions.values()))
    sess.service.app = type(
        "Quiet",
        (),
        {"on_message": lambda *a: None, "on_connect": lambda *a: None, "on_close": lambda *a: None},
    )()
    for direction in ("up", "down"):
        before = air.snapshot()
        if direction == "up":
            dev.link.send(bytes(16), 0)
        else:
            sess.send(bytes(16))
            svc._transmit(sess, svc.now_ms())
            out, tr.out = tr.out, []
            for d in out:
                air.send("coord", d)
        run()
        after = air.snapshot()
        res[k + "msg16_%s_frames" % direction] = after["frames"] - before["frames"]
        res[k + "msg16_%s_air_bytes" % direction] = after["air_bytes"] - before["air_bytes"]
        res[k + "msg16_%s_airtime_ms" % direction] = round(
            after["airtime_ms"] - before["airtime_ms"], 2
        )
    res[k + "msg_max_payload_bytes"] = mtu - 13  # DATA: 3 + 2 + 8-byte tag (CCM_8)
    return res


# asyncio's datagram transport calls recvfrom(256 KiB) for every datagram.  With
# glibc's default (dynamic) mmap threshold, a process either mmaps, faults in and
# unmaps that buffer per datagram (~3x the cost) or takes it from its heap,
# depending on its allocation history: pinning the threshold puts the gateway
# and the relay in the same regime (docs/BENCHMARKS.md).
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def _free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_path(path, proc, what, timeout=20, poll=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if poll:
            poll()
        if Path(path).exists() and Path(path).read_text().strip():
            return Path(path).read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError("%s exited early (code %s)" % (what, proc.returncode))
        time.sleep(0.02)
    raise RuntimeError("%s did not start" % what)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _Sink:
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


def _windowed(n, window, send, readable_fd, collect, timeout=3.0):
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


class _PtyFrames:
    """The driver's end of the gateway's serial port: API frames out, and
    Transmit Requests coming back counted."""

    def __init__(self):
        from atls import xbee as X

        self.X = X
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
        return [self.X.parse(fd) for fd in self.dec.feed(data)]

    def answer_at(self):
        """Answer the gateway's start-up AT NJ (else it waits 2 s for it)."""
        for f in self.frames():
            if f[0] == "at_command":
                self.write(self.X.encode_frame(self.X.at_response(f[1], f[2], 0)))

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


def _relay_main(a):
    """A minimal asyncio UDP relay: one flow socket per source toward the
    target, datagrams forwarded both ways as they are; nothing else."""
    import asyncio

    host, port = a.listen.rsplit(":", 1)
    thost, tport = a.target.rsplit(":", 1)
    target = (thost, int(tport))

    class Side(asyncio.DatagramProtocol):
        def __init__(self):
            self.flows = {}
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            s = self.flows.get(addr)
            if s is None:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(target)
                loop.add_reader(s.fileno(), self.back, s, addr)
                self.flows[addr] = s
            try:
                s.send(data)
            except OSError:
                pass

        def back(self, s, addr):
            for _ in range(64):
                try:
                    data = s.recv(2048)
                except (BlockingIOError, InterruptedError, OSError):
                    return
                self.transport.sendto(data, addr)

    async def amain():
        await loop.create_datagram_endpoint(Side, local_addr=(host, int(port)))
        Path(a.ready_file).write_text("ok\n")
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(amain())
    return 0


def _gateway_vs_relay(quick):
    """Frames/s through the real gateway process (ZigBee side over a pty, and
    its UDP side) and through a plain asyncio UDP relay, same sizes, same run."""
    from atls import xbee as X

    n, reps, window = (200, 1, 16) if quick else (20000, 3, 32)
    sizes = (23, 66)  # a 10-byte reading with CCM_8; a full NP=66 frame
    tmp = Path(tempfile.mkdtemp(prefix="atls-bench-gw-"))
    sink = _Sink()
    ptyf = _PtyFrames()
    dev64 = bytes.fromhex("0013A20041000001")
    state = tmp / "gw-state"
    state.mkdir()
    (state / "pairing.json").write_text(
        json.dumps(
            {
                "version": 1,
                "devices": {dev64.hex(): {"device": "bench", "service": "default", "paired_at": 0}},
            }
        )
    )
    gw_udp = _free_port()
    big = 10**9
    (tmp / "gateway.json").write_text(
        json.dumps(
            {
                "serial": ptyf.path,
                "escaped": False,
                "services": {"default": "127.0.0.1:%d" % sink.addr[1]},
                "udp_listen": "127.0.0.1:%d" % gw_udp,
                "state_dir": "gw-state",
                "limits": {"rate_per_s": big, "rate_burst": big, "max_payload": 84},
            }
        )
    )
    py = sys.executable
    logs = open(tmp / "procs.log", "w")
    env = dict(os.environ, **PINNED_MALLOC)
    gw = subprocess.Popen(
        [
            py,
            "-m",
            "host_tools.gateway",
            "run",
            "--config",
            str(tmp / "gateway.json"),
            "--ready-file",
            str(tmp / "gw.ready"),
        ],
        cwd=ROOT,
        stdout=logs,
        stderr=logs,
        env=env,
    )
    relay_port = _free_port()
    relay = subprocess.Popen(
        [
            py,
            "-m",
            "host_tools.benchmarks.system",
            "relay",
            "--listen",
            "127.0.0.1:%d" % relay_port,
            "--target",
            "127.0.0.1:%d" % sink.addr[1],
            "--ready-file",
            str(tmp / "relay.ready"),
        ],
        cwd=ROOT,
        stdout=logs,
        stderr=logs,
        env=env,
    )
    dev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dev.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    dev.bind(("127.0.0.1", 0))
    dev.setblocking(False)
    res = {}
    try:
        _wait_path(tmp / "gw.ready", gw, "gateway", poll=ptyf.answer_at)
        _wait_path(tmp / "relay.ready", relay, "relay")
        ptyf.frames()

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
            for size in sizes:
                payload = bytes([0xA3]) + os.urandom(size - 1)  # an ATLS DATA packet's shape
                frame = X.encode_frame(X.rx_packet(dev64, 0x1234, payload))
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
                    c0 = _proc_cpu_s(pid)
                    t_up, got_up = _windowed(n, window, send_up, sink.sock.fileno(), sink.recv_all)
                    c1 = _proc_cpu_s(pid)
                    peer = sink.peer
                    t_dn, got_dn = _windowed(
                        n,
                        window,
                        lambda i, p=payload, a=peer: sink.sock.sendto(p, a),
                        down_fd,
                        down_collect,
                    )
                    c2 = _proc_cpu_s(pid)
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
        for size in sizes:
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
                    x: 2.0 / (1.0 / res[x + "up_per_s"] + 1.0 / res[x + "down_per_s"])
                    for x in (gk, rk)
                }
                res["ratio_%s_vs_relay_%dB_wall" % (gwn, size)] = round(both[gk] / both[rk], 3)
        res["packets_per_phase"] = n
        res["window"] = window
        res["lost"] = lost
    finally:
        _stop(gw)
        _stop(relay)
        logs.close()
        ptyf.close()
        dev.close()
        sink.sock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def zigbee(quick=False):
    res = {}
    for ee in (1, 0):  # NP 66 (network encryption, as the simulator runs) and 84
        res.update(_air_handshake(ee))
    res.update(_gateway_vs_relay(quick))
    # for scale (computed, not measured): a full 66-byte Receive Packet is 16 + 66
    # bytes on the coordinator's UART (8N1: 10 bits a byte) and 66 + 30 on the air
    res["bound_uart_115200_frames_per_s_66B"] = round(115200 / (10.0 * (16 + 66)))
    res["bound_air_250k_frames_per_s_66B"] = round(250000 / (8.0 * (66 + AIR_OVERHEAD)))
    return res


# -- the simulator at scale -------------------------------------------------------------


def _proc_status(pid):
    """{'VmHWM': kB, 'VmRSS': kB} of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            out = {}
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
            return out
    except (OSError, ValueError):
        return None


def _sim_child(a, rest):
    """Run `python -m sim` in this process with probes: first "up" per device
    and peak RSS per process (sampled)."""
    import sim.__main__ as sm
    import sim.fleet as sf

    probe = {
        "up": {},
        "paired": {},
        "peak_kb": {},
        "peak_total_kb": 0,
        "peak_devices_kb": 0,
        "fleet": None,
    }
    feed = sf.DeviceState.feed

    def probe_feed(self, ev):
        k = ev.get("ev")
        now = time.time()
        if k == "up":
            probe["up"].setdefault(self.name, now)
        elif k in ("paired", "handshaking"):
            probe["paired"].setdefault(self.name, now)
        return feed(self, ev)

    sf.DeviceState.feed = probe_feed
    init = sf.Fleet.__init__

    def probe_init(self, *args, **kw):
        init(self, *args, **kw)
        probe["fleet"] = self

    sf.Fleet.__init__ = probe_init
    stop = threading.Event()

    def sampler():
        while not stop.wait(0.5):
            fleet = probe["fleet"]
            if fleet is None:
                continue
            total = devs = 0
            for name, p in list(fleet.procs.items()):
                st = _proc_status(p.pid)
                if not st:
                    continue
                key = "%s:%d" % (name, p.pid)
                probe["peak_kb"][key] = max(probe["peak_kb"].get(key, 0), st.get("VmHWM", 0))
                total += st.get("VmRSS", 0)
                if name.startswith("dev-"):
                    devs += st.get("VmRSS", 0)
            probe["peak_total_kb"] = max(probe["peak_total_kb"], total)
            probe["peak_devices_kb"] = max(probe["peak_devices_kb"], devs)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.time()
    rc = sm.main(rest)
    wall = time.time() - t0
    stop.set()
    th.join(2)
    fleet = probe["fleet"]
    started = fleet.started if fleet is not None else t0
    dev_peaks = [v for k, v in probe["peak_kb"].items() if k.startswith("dev-")]
    host = {k.split(":")[0]: v for k, v in probe["peak_kb"].items() if not k.startswith("dev-")}
    out = {
        "rc": rc,
        "wall_s": round(wall, 2),
        "up": len(probe["up"]),
        "all_up_s": round(max(probe["up"].values()) - started, 2)
        if fleet is not None and len(probe["up"]) == fleet.n
        else None,
        "first_up_s": round(min(probe["up"].values()) - started, 2) if probe["up"] else None,
        "all_paired_s": round(max(probe["paired"].values()) - started, 2)
        if fleet is not None and len(probe["paired"]) == fleet.n
        else None,
        "device_peak_rss_kb_max": max(dev_peaks) if dev_peaks else None,
        "device_peak_rss_kb_mean": round(statistics.mean(dev_peaks)) if dev_peaks else None,
        "devices_peak_rss_kb_sum": sum(dev_peaks),
        "devices_concurrent_rss_kb_peak": probe["peak_devices_kb"],
        "all_concurrent_rss_kb_peak": probe["peak_total_kb"],
        "host_peak_rss_kb": host,
    }
    Path(a.out).write_text(json.dumps(out))
    return 0


def _sim_run(n, duration, period, tmp):
    report = Path(tmp) / ("report-%d.json" % n)
    out = Path(tmp) / ("probe-%d.json" % n)
    cmd = [
        sys.executable,
        "-m",
        "host_tools.benchmarks.system",
        "sim-child",
        "--out",
        str(out),
        "--",
        "--devices",
        str(n),
        "--duration",
        str(duration),
        "--period",
        str(period),
        "--seed",
        "1",
        "--report",
        str(report),
        "--workdir",
        str(Path(tmp) / ("sim-%d" % n)),
    ]
    r0 = os.times()
    t0 = time.time()
    p = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(900, 20 * n + duration * 3)
    )
    wall = time.time() - t0
    r1 = os.times()
    if not out.exists():
        raise RuntimeError("sim-child (%d devices) failed: %s" % (n, (p.stderr or p.stdout)[-800:]))
    probe = json.loads(out.read_text())
    rep = json.loads(report.read_text()) if report.exists() else {}
    tot = rep.get("totals", {})
    k = "n%d_" % n
    res = {
        k + "wall_s": round(wall, 1),
        k + "cpu_s": round(
            (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 1
        ),
        k + "all_paired_s": probe["all_paired_s"],
        k + "first_up_s": probe["first_up_s"],
        k + "all_up_s": probe["all_up_s"],
        k + "up": probe["up"],
        k + "verdict": rep.get("verdict", "no report"),
        k + "handshake_ms_median": tot.get("handshake_ms_median"),
        k + "handshake_ms_p95": tot.get("handshake_ms_p95"),
        k + "messages_acknowledged": tot.get("acknowledged"),
        k + "retransmissions": tot.get("retransmissions"),
        k + "service_busy_drops": (rep.get("service") or {}).get("drops", {}).get("busy", 0),
        k + "device_peak_rss_kb_max": probe["device_peak_rss_kb_max"],
        k + "device_peak_rss_kb_mean": probe["device_peak_rss_kb_mean"],
        k + "devices_peak_rss_mb_total": round(probe["devices_concurrent_rss_kb_peak"] / 1024, 1),
        k + "all_processes_peak_rss_mb_total": round(probe["all_concurrent_rss_kb_peak"] / 1024, 1),
    }
    for name, kb in sorted(probe["host_peak_rss_kb"].items()):
        res[k + "%s_peak_rss_kb" % name] = kb
    failed = [c["check"] for c in rep.get("checks", []) if not c["passed"]]
    if failed:
        res[k + "failed_checks"] = "; ".join(failed)
    return res


def sim_scale(quick=False):
    """The simulator with 10 and 100 devices (2 and 4 with quick)."""
    small, large = (2, 4) if quick else (10, 100)
    duration, period = (1, 1000) if quick else (30, 5000)
    tmp = tempfile.mkdtemp(prefix="atls-bench-sim-")
    try:
        res = {"duration_s": duration, "period_ms": period}
        for n in (small, large):
            res.update(_sim_run(n, duration, period, tmp))
        a, b = "n%d_" % small, "n%d_" % large
        res["growth_devices_x"] = large / small
        res["growth_wall_x"] = round(res[b + "wall_s"] / res[a + "wall_s"], 2)
        if res[a + "all_up_s"] and res[b + "all_up_s"]:
            res["growth_all_up_x"] = round(res[b + "all_up_s"] / res[a + "all_up_s"], 2)
        if res[a + "cpu_s"]:
            res["growth_cpu_x"] = round(res[b + "cpu_s"] / res[a + "cpu_s"], 2)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- boards ------------------------------------------------------------------------------


def boards(quick=False):
    from host_tools import boards as B

    res = {}
    for name, size in sorted(B.mpy_sizes().items()):
        res["mpy_bytes_%s" % name] = size
    ram = B.import_ram()
    res["import_ram_bytes_unix"] = ram["bytes"]
    res["import_modules"] = ram["modules"]
    res["import_failed"] = len(ram["failed"])
    return res


SECTIONS = (
    ("link_overhead", link_overhead),
    ("service_handshakes", service_handshakes),
    ("zigbee", zigbee),
    ("sim_scale", sim_scale),
    ("boards", boards),
)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.benchmarks.system")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay", help="plain asyncio UDP relay (the gateway's baseline)")
    r.add_argument("--listen", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--ready-file", required=True)
    s = sub.add_parser("sim-child", help="python -m sim with probes (sim_scale)")
    s.add_argument("--out", required=True)
    s.add_argument("rest", nargs=argparse.REMAINDER)
    x = sub.add_parser("section", help="run one section and print its JSON")
    x.add_argument("name", choices=[n for n, _ in SECTIONS])
    x.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "relay":
        return _relay_main(a)
    if a.cmd == "sim-child":
        rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
        return _sim_child(a, rest)
    print(json.dumps(dict(SECTIONS)[a.name](quick=a.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
