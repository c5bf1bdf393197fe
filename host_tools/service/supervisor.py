"""`python -m host_tools.service --workers N`: N worker processes of the
service on one machine sharing its ports with SO_REUSEPORT (service.worker,
docs/SCALE.md), watched by this process.

* Ports: a listener with port 0 in the config (tests) is given one free port
  before the workers start, so that all of them bind the same one.
* Restarts: a worker that exits while the supervisor runs is started again
  at once (same index, same server id), at most `MAX_RESTARTS` times within
  `RESTART_WINDOW_S` per index; past that the index is given up (logged,
  counted in the stats) and the others keep serving; when every index is
  given up the supervisor exits with status 1 (its service manager sees it).
* Signals: SIGTERM/SIGINT go to every worker (each drains: service.worker);
  those still alive after `--grace` seconds get SIGKILL.
* Files: worker i writes `<ready>.w<i>` and `<stats>.w<i>.json`; the
  supervisor writes `<ready>` ("host:port" of UDP) once every worker is
  listening, `<ready>.json` ({"udp", "workers": [{index, pid, server_id,
  metrics}]}, rewritten after a restart) and `<stats>` ({"total": counters
  summed over the workers, "workers": per index, "restarts", "given_up"}).
* A worker dies with the supervisor (PR_SET_PDEATHSIG on Linux), so a
  killed supervisor leaves no orphan holding the port.
"""

import collections
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from host_tools.common import log
from host_tools.service.config import DEFAULT_LISTEN, split_hostport
from host_tools.service.errors import ConfigError

__all__ = ["supervise", "Supervisor", "MAX_RESTARTS", "RESTART_WINDOW_S"]

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
_POLL_S = 0.05


def _die_with_parent():
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port(host, kind):
    """A port free for `kind` (SOCK_DGRAM/SOCK_STREAM) on `host`, found with
    SO_REUSEPORT set, released before the workers bind it."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _listeners(args):
    """Worker arguments that pin every shared listener to a concrete port."""
    try:
        cfg = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("config %s: %s" % (args.config, e))
    out = []
    for opt, key, kind, default in (
        ("--listen", "listen", socket.SOCK_DGRAM, DEFAULT_LISTEN),
        ("--http-listen", "http_listen", socket.SOCK_STREAM, None),
        ("--coap-listen", "coap_listen", socket.SOCK_DGRAM, None),
    ):
        spec = getattr(args, key) or cfg.get(key) or default
        if not spec:
            continue
        host, port = split_hostport(spec)
        if port == 0:
            port = _free_port(host, kind)
        out += [opt, "%s:%d" % (host, port)]
    return out


class Supervisor:
    def __init__(self, n, base_argv, ready=None, stats=None, grace_s=10.0):
        self.n = n
        self.base = base_argv  # python -m host_tools.service --config ... --listen ...
        self.ready = Path(ready) if ready else None
        self.stats = Path(stats) if stats else None
        self.grace_s = grace_s
        self.procs = {}  # index -> Popen
        self.restarts = collections.Counter()
        self.recent = collections.defaultdict(collections.deque)  # index -> restart times
        self.given_up = set()
        self.stopping = False
        self._ready_written = False
        self.ever_ready = False

    def _files(self, i):
        r = Path(str(self.ready) + ".w%d" % i) if self.ready else None
        st = Path(str(self.stats) + ".w%d.json" % i) if self.stats else None
        return r, st

    def start(self, i):
        r, st = self._files(i)
        argv = list(self.base) + ["--worker", "%d/%d" % (i, self.n)]
        if r is not None:
            for stale in (r, Path(str(r) + ".json")):
                stale.unlink(missing_ok=True)
            argv += ["--ready-file", str(r)]
        if st is not None:
            argv += ["--stats", str(st)]
        self.procs[i] = subprocess.Popen(argv, preexec_fn=_die_with_parent)
        log("worker_started", worker=i, pid=self.procs[i].pid)

    def _reap(self, now):
        for i, p in list(self.procs.items()):
            rc = p.poll()
            if rc is None or self.stopping:
                continue
            del self.procs[i]
            log("worker_exited", worker=i, pid=p.pid, status=rc)
            if rc == 2 and not self.ever_ready:  # a config error: restarting cannot help
                self.given_up.add(i)
                continue
            q = self.recent[i]
            while q and now - q[0] > RESTART_WINDOW_S:
                q.popleft()
            if len(q) >= MAX_RESTARTS:
                self.given_up.add(i)
                log("worker_given_up", worker=i, restarts=len(q), window_s=RESTART_WINDOW_S)
                continue
            q.append(now)
            self.restarts[i] += 1
            self.start(i)
            self._ready_written = False  # rewrite ready.json with the new pid

    def _workers_ready(self):
        if self.ready is None:
            return None
        rows = []
        for i in sorted(self.procs):
            r, _ = self._files(i)
            if not (r.exists() and r.read_text().strip()):
                return None
            row = {"index": i, "pid": self.procs[i].pid}
            try:
                extra = json.loads(Path(str(r) + ".json").read_text())
                row.update(server_id=extra.get("server_id"), metrics=extra.get("metrics"))
            except (OSError, ValueError):
                pass
            rows.append(row)
        return rows, r.read_text().strip()

    def _write_ready(self):
        got = self._workers_ready()
        if got is None:
            return
        rows, udp = got
        _write_json(str(self.ready) + ".json", {"udp": udp, "workers": rows})
        if not self.ready.exists():
            self.ready.write_text(udp + "\n")
        self._ready_written = self.ever_ready = True

    def _write_stats(self):
        per, total = {}, collections.Counter()
        for i in range(self.n):
            _, st = self._files(i)
            try:
                c = json.loads(st.read_text())
            except (OSError, ValueError):
                continue
            per[i] = c
            total.update({k: v for k, v in c.items() if isinstance(v, int)})
        out = {
            "total": dict(total),
            "workers": per,
            "restarts": {str(k): v for k, v in self.restarts.items()},
            "given_up": sorted(self.given_up),
        }
        _write_json(self.stats, out)

    def stop(self, *_):
        self.stopping = True

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        for i in range(self.n):
            self.start(i)
        stats_at = 0.0
        while not self.stopping:
            now = time.monotonic()
            self._reap(now)
            if not self.procs and self.given_up:
                log("supervisor_failed", given_up=sorted(self.given_up))
                return 1 if self.ever_ready else 2
            if not self._ready_written:
                self._write_ready()
            if self.stats is not None and now >= stats_at:
                stats_at = now + 1.0
                self._write_stats()
            time.sleep(_POLL_S)
        return self._shutdown()

    def _shutdown(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for i, p in self.procs.items():
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log("worker_killed", worker=i, pid=p.pid, after_s=self.grace_s)
                p.kill()
                p.wait()
        if self.stats is not None:
            self._write_stats()
        log("supervisor_stopped", workers=self.n, restarts=sum(self.restarts.values()))
        return 0


def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def supervise(args):
    """Run the supervisor for the parsed CLI `args` (cli.main); exit status."""
    try:
        pinned = _listeners(args)
    except ConfigError as e:
        print("service: %s" % e, file=sys.stderr)
        return 2
    base = [sys.executable, "-m", "host_tools.service", "--config", str(args.config)] + pinned
    sup = Supervisor(args.workers, base, args.ready_file, args.stats, args.grace)
    return sup.run()
