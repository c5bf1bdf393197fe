"""The per-primitive steps of `make bench`: the `bench_*.py` scripts in
host_tools/benchmarks/ (plain modules that run under MicroPython and CPython
alike, found through MICROPYPATH / PYTHONPATH), each run in three columns,
and the memory step (smallest unix-port heap per recorded handshake).

Columns:
  micropython     the firmware code as on the device (unix port)
  cpython_pure    the same pure algorithms under CPython (ATLS_PURE_CRYPTO=1)
  cpython_native  CPython with the host backend (`cryptography`) where one exists
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from host_tools.boards.mpy import firmware_modules
from host_tools.toolchain import BUILD, FIRMWARE, ROOT, compile_tree, micropython_binary

SCRIPTS = ROOT / "host_tools" / "benchmarks"
COLUMNS = ("micropython", "cpython_pure", "cpython_native")
HEAP_MODES = ("psk_x25519", "psk_p256", "cert_p256_chain2", "cert_rsa2048", "cert_ed25519")

_HEAP_RUN = """import gc, sys
import tls_replay_run as R
spec, fl = R.load(sys.argv[1])
gc.collect()
base = gc.mem_alloc()
R.handshake(spec, fl)
print(base)
"""


def bench_scripts():
    """Every bench_*.py script, sorted."""
    return sorted(SCRIPTS.glob("bench_*.py"))


def _last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result line")


def run_script(script, column, timeout=900):
    """One script in one column: its JSON result line, or {"error": [...]}."""
    env = dict(os.environ)
    if column == "micropython":
        env["MICROPYPATH"] = ":".join([".frozen", str(FIRMWARE), str(SCRIPTS)])
        cmd = [micropython_binary(), str(script)]
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(FIRMWARE), str(SCRIPTS)])
        env["ATLS_PURE_CRYPTO"] = "1" if column == "cpython_pure" else "0"
        cmd = [sys.executable, str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return _last_json(proc.stdout)


def prepare_fixtures():
    """Record the OpenSSL server flights that bench_tls.py replays."""
    from host_tools.benchmarks import tls_fixtures

    out = BUILD / "tls_fixtures"
    tls_fixtures.write(out)
    os.environ["ATLS_TLS_FIXTURES"] = str(out)
    return out


def _min_heap(runner, fixture, env):
    """(smallest heap in KiB that completes the handshake, heap taken by the
    imports in bytes) or (None, None)."""

    def ok(kib):
        p = subprocess.run(
            [micropython_binary(), "-X", "heapsize=%dK" % kib, str(runner), fixture],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout else None

    lo, hi = 8, 512
    if not ok(hi):
        return None, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, int(ok(512))


def measure_heap(fixtures):
    """Smallest -X heapsize (KiB) with which the unix port completes each
    recorded handshake, firmware imported from .mpy as deployed; also the
    heap taken by imports before the handshake starts."""
    out_dir = BUILD / "mpy-heap"
    shutil.rmtree(out_dir, ignore_errors=True)
    compile_tree(FIRMWARE, out_dir, files=[FIRMWARE / m for m in firmware_modules(arch=None)])
    compile_tree(SCRIPTS, out_dir, files=[SCRIPTS / "detrng.py", SCRIPTS / "tls_replay_run.py"])
    runner = out_dir / "heap_run.py"
    runner.write_text(_HEAP_RUN)
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(out_dir))
    res = {}
    for mode in HEAP_MODES:
        kib, imports = _min_heap(runner, str(Path(fixtures) / (mode + ".json")), env)
        res["min_heap_kib_" + mode] = kib
        if kib is not None:
            res["imports_kib_" + mode] = round(imports / 1024.0, 1)
    return res
