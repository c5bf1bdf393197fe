"""Section `abuse` (issue 14): the service and the gateway under flood, on
loopback only (127.0.0.0/8), as real processes (python -m host_tools.service
/ gateway).  It measures whatever they do today and never asserts.

Phase 1, the service: for `seconds` (60, --quick 10) a child process
(bench.abuse_flood spoof) sends replayed first flights plus ~10 % malformed
packets from `sources` UDP sockets on 20 loopback addresses at up to 10,000
per second, another (abuse_flood longpoll) holds 1,000 concurrent HTTP
long-polls on one session of the service's HTTP binding, while 100 honest
devices (the firmware's TLS client + Link, native crypto, in this process,
each its own UDP socket on its own 127.0.1.x address) handshake, send a
message, get the service's echo of it, and start again.
Phase 2, the gateway: the gateway process forwards WiFi/UDP devices to the
same service; 10,000 spoofed sources (50 addresses) send first flights to its
UDP side while the honest devices go through it.

Figures: honest_handshake_success (attempts that reached an open channel and
the echo of a message within ATTEMPT_S, retrying after RETRY_S when refused /
attempts), honest_answered (attempts that got any datagram back: through the
gateway, 1.0 means its flow table never locked the device out, whatever the
service answered), honest_p95_ms (start to echo), service_rss_growth_mb (max VmRSS during the flood -
VmRSS before it), max_amplification (max over spoofed addresses of bytes the
service sent there / bytes received from there; the 100 probe addresses send
one ClientHello each and only listen), gateway_honest_success, fds_max (max of
/proc/PID/fd of the service and the gateway), spoof_rate_achieved (what this
machine managed: it may be below 10,000/s, and the load generator shares the
CPUs with the processes it loads).
"""

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atls.protocol import SUITE_NAMES
from atls.session import DISCARDS
from host_tools.bench.pair import CCM8, PSK, Device
from host_tools.bench.procs import proc_status, stop, wait_path
from host_tools.toolchain import ROOT, free_port

NOTE = (
    "loopback only; service and gateway are real processes; spoofers and long-polls "
    "are child processes on the same 2 cores; spoof_rate_achieved is what was sent"
)
ATTEMPT_S = 10.0  # an honest attempt that is not done by then counts as failed
RETRY_S = 0.5  # within an attempt, a failed try (e.g. ERROR busy) starts again after this
HONEST = 100


def _fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def _rss_mb(pid):
    st = proc_status(pid)
    return st["VmRSS"] / 1024.0 if st else 0.0


def _pump(dev, now):
    """bench.pair.Device.pump, also saying why the link stopped (or None);
    a server flight not made for our ClientHello is discarded as
    atls.session does (issue 14: stale flights of an earlier attempt)."""
    from atls.channel import key_block

    for ev in dev.link.events():
        if ev[0] == "flight":
            n = dev.tls.discarded
            dev.tls.receive(ev[1], now)
            out = dev.tls.data_to_send()
            if n != dev.tls.discarded or (not out and not dev.tls.connected and dev.tls.discard()):
                dev.link.refuse_flight(now)
                dev.stale += 1
                continue
            if out:
                dev.link.send_flight(out, now)
            if dev.tls.connected and dev.link.channel is None:
                dev.link.start_channel(key_block(dev.tls), dev.tls.suite, dev.base)
        elif ev[0] == "message":
            dev.messages.append(ev[1])
        elif ev[0] in ("error", "closed"):
            return "%s_%s" % ev
    return None


class Honest:
    """`n` firmware devices over real UDP sockets toward `target`, each on its
    own loopback address 127.0.1.k, running attempts back to back."""

    def __init__(self, target, n, attempt_s=ATTEMPT_S):
        self.target = target
        self.attempt_s = attempt_s
        self.sel = selectors.DefaultSelector()
        self.socks, self.devs, self.t0s = [], [None] * n, [0.0] * n
        self.sent = [False] * n
        self.retry_at = [None] * n  # a failed try waits RETRY_S, then starts again
        self.reasons = {}
        self.heard = [False] * n  # this attempt got any datagram back
        self.n_heard = 0
        self.ok, self.failed, self.lat_ms = 0, 0, []
        self.stale = 0  # server flights the devices discarded
        self.clock0 = time.monotonic()
        for k in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.1.%d" % (k + 1), 0))
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, k)

    def now(self):
        return int((time.monotonic() - self.clock0) * 1000)

    def _flush(self, k):
        for d in self.devs[k].link.datagrams(self.now()):
            try:
                self.socks[k].sendto(d, self.target)
            except OSError:
                pass

    def _fresh(self, k, new_attempt=True):
        # each attempt is a new power-up (a fresh boot number, docs/PROTOCOL.md §4):
        # with one boot its message would repeat an id the service delivered
        boot = int.from_bytes(os.urandom(4), "big") << 32
        self.devs[k] = Device(
            CCM8, 1200, identity=b"dev-%02d" % (k + 1), discards=DISCARDS, base=boot
        )
        if new_attempt:
            self.t0s[k] = time.monotonic()
            self.heard[k] = False
        self.retry_at[k] = None
        self.sent[k] = False
        self.devs[k].start(self.now())
        self._flush(k)

    def _step(self, k, counting):
        dev = self.devs[k]
        if self.retry_at[k] is not None:
            return
        try:
            stopped = _pump(dev, self.now())
        except Exception as e:  # an alert from the TLS client: try again
            return self._retry(k, type(e).__name__)
        finally:
            self.stale, dev.stale = self.stale + dev.stale, 0
        if dev.messages:  # the service's echo of our message: end to end
            self._flush(k)  # its ACK, as a device sends it (else the service keeps it)
            return self._end(k, True, counting)
        if stopped:
            return self._retry(k, stopped)
        if dev.up and not self.sent[k]:
            dev.link.send(b"reading %d" % k, self.now())
            self.sent[k] = True
        self._flush(k)

    def _retry(self, k, reason):
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.retry_at[k] = time.monotonic() + RETRY_S

    def _end(self, k, ok, counting):
        self.n_heard += self.heard[k]
        if counting:
            if ok:
                self.ok += 1
                self.lat_ms.append((time.monotonic() - self.t0s[k]) * 1000)
            else:
                self.failed += 1
        if time.monotonic() < self.last_start:
            self._fresh(k)
        else:
            self.devs[k] = None  # done: no new attempt that could not finish in time

    def run(self, seconds, tick=None):
        """Attempts for `seconds`: new ones start until attempt_s before the
        end, so that each ends (done or failed) within the run.  `tick()` is
        called every ~0.25 s."""
        end = time.monotonic() + seconds
        self.attempt_s = min(self.attempt_s, seconds / 2)
        self.last_start = end - self.attempt_s
        for k in range(len(self.devs)):
            self._fresh(k)
        next_tick = 0.0
        while time.monotonic() < end and any(d is not None for d in self.devs):
            for key, _ in self.sel.select(0.02):
                k = key.data
                if self.devs[k] is None:
                    continue
                while True:
                    try:
                        d = self.socks[k].recv(4096)
                    except OSError:
                        break
                    self.heard[k] = True
                    try:
                        self.devs[k].link.receive(d, self.now())
                    except Exception:
                        pass  # dropped by the link
                self._step(k, True)
            now = time.monotonic()
            for k in range(len(self.devs)):
                if self.devs[k] is None:
                    continue
                if now - self.t0s[k] > self.attempt_s:
                    self._end(k, False, True)
                elif self.retry_at[k] is not None:
                    if now >= self.retry_at[k]:
                        self._fresh(k, new_attempt=False)
                else:
                    self._flush(k)  # retransmissions
            if tick and now >= next_tick:
                tick()
                next_tick = now + 0.25
        for k, d in enumerate(self.devs):  # out of time
            if d is not None:
                self.failed += 1
                self.n_heard += self.heard[k]

    def figures(self):
        n = self.ok + self.failed
        lat = sorted(self.lat_ms)
        return {
            "attempts": n,
            "success": round(self.ok / n, 4) if n else None,
            "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
            "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
            "retries": dict(self.reasons),
            "answered": round(self.n_heard / n, 4) if n else None,
            "stale": self.stale,
        }

    def close(self):
        for s in self.socks:
            s.close()


def _start(args, tmp, name):
    log = open(tmp / (name + ".log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m"] + args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return proc


def _service(tmp):
    reg = {"devices": {"dev-%02d" % k: {"psk": PSK.hex()} for k in range(HONEST + 1)}}
    (tmp / "devices.json").write_text(json.dumps(reg))
    http = free_port(socket.SOCK_STREAM)
    (tmp / "service.json").write_text(
        json.dumps(
            {
                "listen": "127.0.0.1:0",
                "http_listen": "127.0.0.1:%d" % http,
                "registry": "devices.json",
                "suites": [SUITE_NAMES[CCM8]],
                "link": {"mtu": 1200},
            }
        )
    )
    args = ["host_tools.service", "--config", str(tmp / "service.json")]
    args += ["--stats", str(tmp / "svc-stats.json")]
    proc = _start(args + ["--ready-file", str(tmp / "ready")], tmp, "service")
    host, port = wait_path(tmp / "ready", proc, "service", timeout=60).rsplit(":", 1)
    return proc, (host, int(port)), "http://127.0.0.1:%d/atls" % http


def _gateway(tmp, svc_addr):
    port = free_port()
    (tmp / "gateway.json").write_text(
        json.dumps(
            {
                "services": {"default": "%s:%d" % svc_addr},
                "udp_listen": "127.0.0.1:%d" % port,
                "state_dir": "gw",
            }
        )
    )
    args = ["host_tools.gateway", "run", "--config", str(tmp / "gateway.json")]
    proc = _start(args + ["--ready-file", str(tmp / "gw-ready")], tmp, "gateway")
    wait_path(tmp / "gw-ready", proc, "gateway", timeout=60)
    return proc, ("127.0.0.1", port)


def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _fresh_json(path, since, wait_s=5.0):
    """The stats file rewritten after `since` (time.time()): the processes
    rewrite theirs every second, later than that when the flood starves
    them of CPU; what is there after wait_s otherwise."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            if os.path.getmtime(path) > since:
                break
        except OSError:
            pass
        time.sleep(0.1)
    return _json(path)


def _child_result(proc, path, wait_s):
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        stop(proc)
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"error": "no result (exit %s)" % proc.returncode}


def abuse(quick=False, seconds=None, sources=None, gw_sources=None, polls=None, honest=HONEST):
    seconds = seconds or (10.0 if quick else 60.0)
    sources = sources or (1000 if quick else 2000)
    gw_sources = gw_sources or (2000 if quick else 10000)
    polls = 1000 if polls is None else polls
    tmp = Path(tempfile.mkdtemp(prefix="atls-bench-abuse-"))
    procs = []
    peak = {"svc_rss": 0.0, "svc_fds": 0, "gw_fds": 0}
    try:
        svc, svc_addr, url = _service(tmp)
        procs.append(svc)
        # baseline: the honest devices alone, 2 s (also warms the service up)
        base = Honest(svc_addr, honest)
        base.run(2.0)
        base.close()
        rss0 = _rss_mb(svc.pid)
        time.sleep(1.1)  # the service rewrites its stats every second
        svc_in0 = _json(tmp / "svc-stats.json").get("datagrams_in") or 0

        def sample():
            peak["svc_rss"] = max(peak["svc_rss"], _rss_mb(svc.pid))
            peak["svc_fds"] = max(peak["svc_fds"], _fds(svc.pid))

        flood = [
            "host_tools.bench.abuse_flood",
            "spoof",
            "--target",
            "%s:%d" % svc_addr,
            "--seconds",
            str(seconds),
            "--sources",
            str(sources),
            "--out",
            str(tmp / "spoof.json"),
        ]
        lp = [
            "host_tools.bench.abuse_flood",
            "longpoll",
            "--url",
            url,
            "--identity",
            "dev-00",
            "--polls",
            str(polls),
            "--seconds",
            str(seconds),
            "--out",
            str(tmp / "longpoll.json"),
        ]
        lpp = None
        if polls:  # its session first: today the flood would keep it out
            lpp = _start(lp, tmp, "longpoll")
            try:
                wait_path(tmp / "longpoll.json.up", lpp, "longpoll", timeout=20)
            except RuntimeError:
                pass  # reported by its result
        fp = _start(flood, tmp, "spoof")
        time.sleep(1.0)  # sockets bound, flood under way
        h1 = Honest(svc_addr, honest)
        h1.run(max(1.0, seconds - 1.0), tick=sample)
        h1.close()
        spoof = _child_result(fp, tmp / "spoof.json", 60)
        longpoll = _child_result(lpp, tmp / "longpoll.json", 30) if lpp else {}
        sample()
        p1 = h1.figures()
        svc_stats = _fresh_json(tmp / "svc-stats.json", time.time())
        svc_in = (svc_stats.get("datagrams_in") or 0) - svc_in0
        # phase 2: through the gateway's WiFi/UDP side
        gw, gw_addr = _gateway(tmp, svc_addr)
        procs.append(gw)

        def sample2():
            sample()
            peak["gw_fds"] = max(peak["gw_fds"], _fds(gw.pid))

        gseconds = seconds / 2 if quick else seconds
        gflood = list(flood)
        gflood[3] = "%s:%d" % gw_addr
        gflood[5] = str(gseconds)
        gflood[7] = str(gw_sources)
        gflood[9] = str(tmp / "gw-spoof.json")
        gflood += ["--ips", "50", "--ip-base", "127.0.3"]
        gp = _start(gflood, tmp, "gw-spoof")
        time.sleep(1.0 if quick else 2.0)  # 10,000 sockets to bind
        h2 = Honest(gw_addr, honest)
        h2.run(max(1.0, gseconds - 1.0), tick=sample2)
        h2.close()
        gspoof = _child_result(gp, tmp / "gw-spoof.json", 60)
        sample2()
        p2 = h2.figures()
        gstats = _fresh_json(tmp / "gw" / "stats.json", time.time())
        return {
            "honest_handshake_success": p1["success"],
            "honest_p95_ms": p1["p95_ms"],
            "honest_p50_ms": p1["p50_ms"],
            "honest_attempts": p1["attempts"],
            "honest_retries": p1["retries"],
            "honest_answered": p1["answered"],
            "honest_stale_flights": p1["stale"],
            "service_rss_growth_mb": round(max(0.0, peak["svc_rss"] - rss0), 1),
            "service_rss_before_mb": round(rss0, 1),
            "max_amplification": spoof.get("max_amplification"),
            "flood_max_amplification": spoof.get("flood_max_amplification"),
            "service_max_amplification": svc_stats.get("max_amplification"),
            "service_drops": svc_stats.get("drops"),
            "spoof_fresh": spoof.get("fresh"),
            "longpoll_requests": longpoll.get("requests"),
            "longpoll_backoffs": longpoll.get("backoffs"),
            "spoof_rate_target": 10000,
            "spoof_rate_achieved": spoof.get("rate_achieved"),
            "spoof_sent": spoof.get("sent"),
            "spoof_malformed": spoof.get("malformed"),
            "service_datagrams_in": svc_in,
            "spoof_sources": sources,
            "longpolls": polls,
            "longpoll_session_up": longpoll.get("handshake"),
            "longpoll_max_open": longpoll.get("max_open"),
            "longpoll_answered": longpoll.get("answered"),
            "longpoll_errors": longpoll.get("errors"),
            "longpoll_error_kinds": longpoll.get("error_kinds") or longpoll.get("handshake_error"),
            "gateway_honest_success": p2["success"],
            "gateway_honest_p95_ms": p2["p95_ms"],
            "gateway_honest_attempts": p2["attempts"],
            "gateway_honest_retries": p2["retries"],
            "gateway_honest_answered": p2["answered"],
            "gateway_honest_stale_flights": p2["stale"],
            "gateway_spoof_sources": gw_sources,
            "gateway_spoof_ips": 50,
            "gateway_spoof_rate_achieved": gspoof.get("rate_achieved"),
            "gateway_flows_at_end": gstats.get("flows"),
            "gateway_up_packets": gstats.get("up_packets"),
            "gateway_evicted": gstats.get("evicted"),
            "gateway_drops": gstats.get("drops"),
            "fds_max": max(peak["svc_fds"], peak["gw_fds"]),
            "service_fds_max": peak["svc_fds"],
            "gateway_fds_max": peak["gw_fds"],
            "seconds": seconds,
        }
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
