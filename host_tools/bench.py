"""`make bench`: measure every benchmark script under the MicroPython unix port
and under CPython side by side, print a table and write build/bench.json.

Columns:
  micropython     the firmware code as on the device (unix port)
  cpython_pure    the same pure algorithms under CPython (ATLS_PURE_CRYPTO=1)
  cpython_native  CPython with the host backend (`cryptography`) where one exists
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/bench.json")
    ap.add_argument("--only", help="run only scripts whose name contains this")
    args = ap.parse_args(argv)

    out = Path(args.out)
    results = {}
    if out.exists():  # later steps of `make bench` add to the same file
        try:
            results = json.loads(out.read_text())
        except ValueError:
            results = {}
    results["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0],
                          "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    sections = results.setdefault("sections", {})

    scripts = sorted(SCRIPTS.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if args.only in s.name]
    for script in scripts:
        name = script.stem[len("bench_"):]
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

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("wrote %s" % out)
    return 0


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.1f" % v if v >= 10 else "%.3f" % v
    return str(v)


def _print_table(name, table, errors):
    w = max([len(m) for m in table] + [10])
    print("%-*s %14s %14s %14s %10s" % (w, name, "micropython", "cpython_pure",
                                         "cpython_native", "mpy/pure"))
    for m, row in table.items():
        a, b = row["micropython"], row["cpython_pure"]
        ratio = "%.1fx" % (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
        print("%-*s %14s %14s %14s %10s" % (w, m, _fmt(a), _fmt(b), _fmt(row["cpython_native"]), ratio))
    for c, e in errors.items():
        print("   %s failed: %s" % (c, e))


if __name__ == "__main__":
    sys.exit(main())
