"""`make bench`: measure every benchmark script under the MicroPython unix port
and under CPython side by side, print a table and write build/bench.json.

Columns:
  micropython     the firmware code as on the device (unix port)
  cpython_pure    the same pure algorithms under CPython (ATLS_PURE_CRYPTO=1)
  cpython_native  CPython with the host backend (`cryptography`) where one exists
Then the system-level sections (host_tools/bench/sections.py, CPython only:
link_overhead, service_handshakes, zigbee, sim_scale, boards), each a table of
metrics.  docs/BENCHMARKS.md says what every figure means.

    python -m host_tools.bench [--out build/bench.json] [--only a,b] [--quick]

--only   comma-separated; runs the memory step, scripts and sections whose
         name contains one of the words (e.g. --only aead,link_overhead); a
         word that is a section's name runs that section only (--only scale)
--quick  small sizes for the system sections (the smoke test uses it; the
         per-primitive scripts and the memory step are unchanged)
Benchmarks measure; they never assert.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from host_tools.bench import scripts
from host_tools.bench.sections import NOTES, SECTIONS


def wanted(name, only):
    """--only: a comma-separated list of words; a step runs when its name
    contains one of them (no --only: everything runs).  A word that is a
    section's whole name selects that section only (`scale`, not `sim_scale`)."""
    if not only:
        return True
    names = {n for n, _ in SECTIONS}
    return any(w and (w == name or (w in name and w not in names)) for w in only.split(","))


def run_sections(sections, only=None, quick=False, save=None):
    """The system-level sections (CPython only), into `sections`; save()
    after each one, so an interrupted run keeps what it measured."""
    for name, fn in SECTIONS:
        if not wanted(name, only):
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
            "note": NOTES.get(name, ""),
            "quick": quick,
            "seconds": round(time.time() - t0, 1),
        }
        _print_metrics(metrics)
        if save:
            save()


def run_memory(sections, fixtures):
    print("== memory (unix port, firmware as .mpy)", flush=True)
    mem = scripts.measure_heap(fixtures)
    sections["memory"] = {
        "metrics": mem,
        "note": "x86-64 unix port: objects are twice the size of a "
        "32-bit MCU's; .mpy code is loaded into the heap",
    }
    for k, v in mem.items():
        print("   %-34s %s" % (k, v))


def run_script_section(sections, script):
    name = script.stem[len("bench_") :]
    print("== %s" % name, flush=True)
    cols = {}
    for col in scripts.COLUMNS:
        print("   running under %s ..." % col, flush=True)
        cols[col] = scripts.run_script(script, col)
    metrics = sorted({k for c in cols.values() for k in c if k != "error"})
    table = {m: {c: cols[c].get(m) for c in scripts.COLUMNS} for m in metrics}
    errors = {c: cols[c]["error"] for c in scripts.COLUMNS if "error" in cols[c]}
    sections[name] = {"metrics": table}
    if errors:
        sections[name]["errors"] = errors
    _print_table(name, table, errors)


def _machine():
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.bench", description=__doc__.splitlines()[0]
    )
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
    results["machine"] = _machine()
    sections = results.setdefault("sections", {})

    todo = [s for s in scripts.bench_scripts() if wanted(s.name, args.only)]
    fixtures = None
    if wanted("memory", args.only) or todo:
        fixtures = scripts.prepare_fixtures()
    if wanted("memory", args.only):
        run_memory(sections, fixtures)
    for script in todo:
        run_script_section(sections, script)

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
