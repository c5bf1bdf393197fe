"""Section `scale` (issue 19): the real service under thousands of devices
(host_tools.loadgen: the firmware's session code, one process, loopback UDP)
and one service process against raw OpenSSL.

  devices, workers, handshakes_per_s, messages_per_s, lost, duplicated
        the largest run (10,000 devices; 4 workers (--workers) with a real
        Redis and nginx in front when the service has worker mode, else one
        process)
  cpu_us_per_msg_<n>, cpu_us_per_handshake_<n>
        service CPU (process tree, /proc) per acknowledged message and per
        handshake at n = 100, 1,000, 10,000 devices, the same aggregate
        message rate for every n (so the figures show what the number of
        sessions costs), and msg_growth_100_to_<max> their ratio
  kill_*  (worker mode only) a worker is SIGKILLed after the steady phase:
        lost, duplicated, rehandshakes (whole run), worker_sessions (devices
        whose session it held), recovery_ms (the longest send-to-ACK of an
        affected device's first message after the kill), all_next_acked_ms
        (kill until every device's next message is acknowledged: includes
        up to one send period)
  single_worker_vs_raw_openssl
        handshakes per CPU-second of the real service process over UDP
        (service_handshakes' UDP driver) / handshakes per server CPU-second
        of a raw pyOpenSSL memory-BIO loop on the same suite (PSK+ECDHE,
        x25519, CCM_8), measured in the same run: raw before and after,
        the mean of the two
  single_worker_vs_raw_openssl_same_client
        the same with the raw loop's own pyOpenSSL client (over the
        firmware's Link) driving the service: its OpenSSL then answers the
        very ClientHello the baseline's server answers (a cross-check that
        the firmware client's hello costs the server nothing extra)
  floor_engine_link_vs_raw_openssl
        the ceiling of the ratio above for this design: the service's TLS
        engine, a server Link and the channel alone, in this process, server
        side timed with the thread CPU clock (service_handshakes.
        floor_handshake: no session table, admission, logs, sockets or
        event loop), over the raw loop run alternately with it, handshake
        by handshake (floor_raw_openssl_hs_per_cpu_s)
"""

import importlib.util
import json
import os
import signal
import statistics
import time
from pathlib import Path

from atls.protocol import SUITE_NAMES
from host_tools.bench import openssl_peers
from host_tools.bench.pair import CCM8, IDENTITY, PSK, quiet_stderr
from host_tools.bench.service_handshakes import floor_handshake, service_udp
from host_tools.loadgen.provision import children
from host_tools.loadgen.run import load_run

NOTE = (
    "loadgen (firmware DeviceSession, native crypto) vs the real service over loopback UDP; "
    "CPU from /proc of the service process tree; same aggregate rate at every size"
)

__all__ = ["scale", "single_vs_raw", "worker_mode"]


def worker_mode():
    """True when the service has --workers (host_tools.service.supervisor)."""
    return importlib.util.find_spec("host_tools.service.supervisor") is not None


def raw_openssl_hs_per_cpu_s(n):
    """Handshakes per server CPU-second of the raw pyOpenSSL loop: the
    server side's steps timed with this thread's CPU clock (the client side
    runs in the same thread and is left out)."""
    name = SUITE_NAMES[CCM8]
    sctx, cctx = openssl_peers.server_context(name), openssl_peers.client_context(name)
    openssl_peers.raw_handshake(cctx, sctx, [0.0])  # warm-up
    st = [0.0]
    for _ in range(n):
        openssl_peers.raw_handshake(cctx, sctx, st, clock=time.thread_time)
    return n / st[0]


def floor_vs_raw(n):
    """(floor, raw): handshakes per server CPU-second of
    service_handshakes.floor_handshake (the TLS engine, link and channel
    alone, in this thread) and of the raw loop, one of each in turn, so that
    the machine's drift during the run (shared cores) falls on both alike."""
    from host_tools.service.tls_engine import ServerConfig

    cfg = ServerConfig(psks={IDENTITY: PSK}, suites=(SUITE_NAMES[CCM8],))
    cfg.hide_unknown_psk = True  # as the service sets it
    ctx = cfg.build()
    name = SUITE_NAMES[CCM8]
    sctx, cctx = openssl_peers.server_context(name), openssl_peers.client_context(name)
    floor_handshake(ctx, 1, [0.0])  # warm-up
    openssl_peers.raw_handshake(cctx, sctx, [0.0])
    f, r = [0.0], [0.0]
    for i in range(n):
        floor_handshake(ctx, 1 + i % 0xFFFF, f)
        openssl_peers.raw_handshake(cctx, sctx, r, clock=time.thread_time)
    return n / f[0], n / r[0]


def single_vs_raw(quick=False):
    n, secs, slots = (30, 0.5, 4) if quick else (600, 6.0, 16)
    with quiet_stderr():
        raw1 = raw_openssl_hs_per_cpu_s(n)
        floor, floor_raw = floor_vs_raw(n)
        _, udp_cpu, udp_n = service_udp(secs, slots=slots)
        _, same_cpu, _ = service_udp(secs, slots=slots, client="openssl")
        raw2 = raw_openssl_hs_per_cpu_s(n)
    raw = statistics.mean((raw1, raw2))

    def ratio(x):
        return round(x / raw, 3) if x else None

    return {
        "raw_openssl_server_hs_per_cpu_s": round(raw, 1),
        "service_udp_hs_per_cpu_s": round(udp_cpu, 1) if udp_cpu else None,
        "service_udp_handshakes": udp_n,
        "single_worker_vs_raw_openssl": ratio(udp_cpu),
        "service_udp_same_client_hs_per_cpu_s": round(same_cpu, 1) if same_cpu else None,
        "single_worker_vs_raw_openssl_same_client": ratio(same_cpu),
        "floor_engine_link_hs_per_cpu_s": round(floor, 1),
        "floor_raw_openssl_hs_per_cpu_s": round(floor_raw, 1),
        "floor_engine_link_vs_raw_openssl": round(floor / floor_raw, 3),
    }


def _kill_one(fleet, svc):
    """SIGKILL the first worker of the supervisor; the devices whose session
    it held (by the server id in their session ids, service.routing) are
    the affected ones (fleet.affected)."""
    info = json.loads(Path(str(svc.ready) + ".json").read_text())
    row = info["workers"][0]
    if row["pid"] not in children(svc.pid):
        return {"kill_error": "worker pid %s is not the supervisor's child" % row["pid"]}
    shift = 16 - _bits(len(info["workers"]))
    fleet.affected = {
        d.i
        for d in fleet.devices
        if d.sess.link is not None and d.sess.link.session_id >> shift == row["server_id"]
    }
    os.kill(row["pid"], signal.SIGKILL)
    return {"killed_worker_sessions": len(fleet.affected)}


def _bits(workers):
    return (workers - 1).bit_length()


def scale(quick=False, workers=None, sizes=None):
    """The section's metrics (module doc).  workers: None = 4 when the
    service has --workers, else one process."""
    if workers is None:
        workers = (2 if quick else 4) if worker_mode() else None
    sizes = sizes or ((8, 16) if quick else (100, 1000, 10000))
    rate, duration = (16.0, 1.5) if quick else (300.0, 20.0)
    res = {"rate_per_s": rate, "steady_s": duration}
    big = max(sizes)
    for n in sizes:
        during = _kill_one if (workers and workers > 1 and n == big) else None
        shared = bool(workers)  # worker mode: sessions in Redis, nginx in front
        extra = {"routing": {"server_id": 0, "server_bits": _bits(workers)}} if shared else None
        r = load_run(
            n,
            rate,
            duration,
            workers,
            during=during,
            redis=shared,
            nginx=shared,
            extra_config=extra,
        )
        res["cpu_us_per_msg_%d" % n] = r["cpu_us_per_msg"]
        res["cpu_us_per_handshake_%d" % n] = r["cpu_us_per_handshake"]
        if n != big:
            if r.get("lost") or r.get("duplicated") or r.get("error"):
                res["problem_%d" % n] = {k: r.get(k) for k in ("lost", "duplicated", "error")}
            continue
        res["devices"] = r["established"]
        res["workers"] = r["workers"]
        res["redis"], res["nginx"] = r["redis"], r["nginx"]
        for k in ("redis_cpu_us_per_msg", "nginx_cpu_us_per_msg", "loadgen_cpu_us_per_msg"):
            if k in r:
                res[k] = r[k]
        for k in ("handshakes_per_s", "messages_per_s", "lost", "duplicated", "rehandshakes"):
            res[k] = r[k]
        res["sent"], res["acknowledged"] = r["sent"], r["acknowledged"]
        if r.get("error"):
            res["error"] = r["error"]
        if during is not None:
            res["kill_lost"], res["kill_duplicated"] = r["lost"], r["duplicated"]
            res["kill_rehandshakes"] = r["rehandshakes"]
            for k in ("recovery_ms", "all_next_acked_ms", "recovered_devices"):
                res["kill_" + k] = r.get(k)
            res["kill_worker_sessions"] = r.get("killed_worker_sessions")
            if r.get("kill_error"):
                res["kill_error"] = r["kill_error"]
    a, b = res["cpu_us_per_msg_%d" % min(sizes)], res["cpu_us_per_msg_%d" % big]
    if a and b:
        res["msg_growth_%d_to_%d" % (min(sizes), big)] = round(b / a, 2)
    res.update(single_vs_raw(quick))
    return res
