"""make mutants: mutation testing of the security-critical modules (cosmic-ray).

For every module listed in tests/mutants/modules.toml, cosmic-ray makes
one-change mutants (a comparison, a boolean, a number, an exception type, a
loop, ...; the operator subset is in modules.toml) and runs that module's
fast CPython tests against each: a mutant is *killed* when a test fails (or
times out), *survived* when every test passes.  Mutants listed in
tests/mutants/equivalent.txt (the program behaves the same, with the reason)
are counted apart.  The report goes to build/mutants/ (report.md,
report.json, survivors.txt in the equivalents file's key format).

cosmic-ray mutates files in place, so each worker runs in its own copy of the
tree (build/mutants/work/wN) with PYTHONPATH pointing at the copy, which wins
over the editable install; the checkout itself is never modified.  Workers
take whole modules, largest first.  The test command is a client of a warm
pytest per work copy (forkserver.py: pytest, hypothesis and the crypto
libraries imported once, a fork per mutant, the project's modules imported
afresh in each child), with plugin autoloading off; a module's CPU time is
cosmic-ray's plus what the server's children used during it.

    python tests/mutants/run.py [--workers 2] [--modules der,channel]
                                [--sample K] [--out build/mutants]
                                [--retest | --report-only]

--sample K runs every K-th mutant only (in a stable order, to measure and
extrapolate the time of a whole run; --offset J takes another slice); the
report says so.  --retest runs the
last run's survivors again, after tests were added, and rewrites the report.
"""

import argparse
import json
import os
import queue
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: cosmic-ray depends on toml
    import toml as tomllib

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
COPY = ("firmware", "host_tools", "sim", "tests", "pyproject.toml")
SOCKET = "pytest.sock"  # forkserver.py's, in each work copy


def load_config(path=HERE / "modules.toml"):
    return tomllib.loads(path.read_text())


def key_of(module, operator, diff):
    """A stable key for a mutant: module, operator and the changed line
    before => after (comments and indentation stripped), so a key survives
    edits elsewhere in the file.  Identical keys get #2, #3, ... in order."""
    old = new = ""
    for line in (diff or "").splitlines():
        if line.startswith("---") or line.startswith("+++"):
            continue
        if line.startswith("-") and not old:
            old = line[1:]
        elif line.startswith("+") and not new:
            new = line[1:]

    def clean(s):
        return re.sub(r"\s+#.*$", "", s).strip()

    return "%s :: %s :: %s => %s" % (module, operator.split("/")[-1], clean(old), clean(new))


def load_equivalents(path=HERE / "equivalent.txt"):
    """{key: reason} from equivalent.txt: `key :: reason` per line."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, reason = line.rpartition(" :: ")
        out[key.strip()] = reason.strip()
    return out


def cr_config(cfg, module, spec, workdir):
    tests = " ".join(spec["tests"])
    select = spec.get("select")
    # pytest in a child of the work copy's warm server (forkserver.py), with
    # pytest-timeout only: run_module turns plugin autoloading off (xdist,
    # hypothesis' plugin: their imports cost every mutant; hypothesis itself
    # still works for the test files that import it)
    cmd = "%s -S %s %s -x -q -p no:cacheprovider -p pytest_timeout --timeout %d %s%s" % (
        BIN / "python",
        HERE / "fork_client.py",
        workdir / SOCKET,
        int(cfg["test-timeout"]),
        ("-k %s " % _quote(select)) if select else "",
        tests,
    )
    lines = [
        "[cosmic-ray]",
        "module-path = %s" % json.dumps(module),
        "timeout = %s" % float(spec.get("timeout", cfg["timeout"])),
        "excluded-modules = []",
        "test-command = %s" % json.dumps(cmd),
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        "exclude-operators = %s" % json.dumps(cfg["exclude-operators"]),
        "",
    ]
    path = workdir / ("cr-%s.toml" % _slug(module))
    path.write_text("\n".join(lines))
    return path


def _quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def _slug(module):
    return module.replace("/", "_").replace(".py", "")


def make_copy(dest):
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    # Bytecode for the whole copy, checked against a hash of its source at
    # every import: the mutated module's stale bytecode is never used (its
    # hash differs, so it is compiled again), and the ~400 unchanged modules
    # and pytest's rewritten test files are not compiled again for every
    # mutant (that was 60 % of a mutant's CPU time; a timestamp check could
    # miss a same-size mutation written within the second).
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "checked-hash",
            str(dest),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_server(copy, env):
    """forkserver.py for this work copy, once its socket is up."""
    sock = copy / SOCKET
    if sock.exists():
        sock.unlink()
    proc = subprocess.Popen(
        [str(BIN / "python"), str(HERE / "forkserver.py"), str(sock)],
        cwd=copy,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError("forkserver.py did not start (exit %s)" % proc.poll())
        time.sleep(0.05)
    return proc


def _cpu_so_far(pid):
    """CPU seconds of process `pid` and of its children it has waited for."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def stop_server(proc):
    """Stop the server; its CPU seconds, its test children's included."""
    proc.terminate()
    _, _, ru = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return ru.ru_utime + ru.ru_stime


def retest_survivors(module, spec, cfg, copy, out, log):
    """Run the survivors of the last run of `module` again (after new tests)."""
    db = out / ("%s.sqlite" % _slug(module))
    if not db.exists():
        return
    con = sqlite3.connect(str(db))
    with con:
        n = con.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    con.close()
    if n:
        log("%s: %d survivors again" % (module, n))
        run_module(module, spec, cfg, copy, out, None, log)


def run_module(module, spec, cfg, copy, out, sample, log):
    env = dict(os.environ)
    env["PYTHONPATH"] = "%s:%s" % (copy / "firmware", copy)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # cr_config loads the one plugin it needs
    conf = cr_config(cfg, module, spec, copy)
    db = out / ("%s.sqlite" % _slug(module))
    retest = sample is None  # the session exists: run what is pending in it
    if db.exists() and not retest:
        db.unlink()
    meta_path = out / ("%s.meta.json" % _slug(module))
    old_meta = json.loads(meta_path.read_text()) if retest and meta_path.exists() else {}

    def cr(*args):
        return subprocess.run(
            [str(BIN / args[0])] + [str(a) for a in args[1:]],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )

    t0 = time.monotonic()
    if not retest:
        r = cr("cosmic-ray", "init", conf, db)
        if r.returncode:
            log("%s: init failed: %s" % (module, r.stderr[-2000:]))
            return
        cr("cr-filter-operators", db, conf)
        if sample > 1:
            _keep_every(db, sample, cfg.get("_offset", 0))
    server = start_server(copy, env)
    try:
        base = cr("cosmic-ray", "baseline", conf)
        if base.returncode:
            log(
                "%s: BASELINE FAILS (the tests fail unmutated):\n%s" % (module, base.stdout[-3000:])
            )
            return
        # exec as a child of its own so its CPU time (with the test runs it
        # waited for) is known: wall time depends on what else the machine
        # runs, CPU not; the server's so far (imports, baseline) is not the
        # mutants'
        before = _cpu_so_far(server.pid)
        p = subprocess.Popen(
            [str(BIN / "cosmic-ray"), "exec", str(conf), str(db)],
            cwd=copy,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            log("%s: exec failed: %s" % (module, err[-2000:].decode(errors="replace")))
    finally:
        server_cpu = stop_server(server)
    # the tests ran in the server's children
    cpu = ru.ru_utime + ru.ru_stime + server_cpu - before
    log("%s: done in %.0f s (%.0f s CPU)" % (module, time.monotonic() - t0, cpu))
    meta = {
        "seconds": round(time.monotonic() - t0, 1),
        "cpu_seconds": round(cpu, 1),
        "sample_every": sample or 1,  # None: a --retest with no first run's meta
    }
    if retest and old_meta:  # the first run's figures stand; note the retest
        meta = dict(old_meta, retested_seconds=meta["seconds"])
    meta_path.write_text(json.dumps(meta))


def _keep_every(db, k, offset=0):
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(db)) as wdb:
        # a stable order (operator, then place), so a sample is the same
        # mutants run after run while the module does not change
        items = sorted(
            wdb.pending_work_items,
            key=lambda it: (
                it.mutations[0].operator_name,
                tuple(it.mutations[0].start_pos),
                it.mutations[0].occurrence,
            ),
        )
        for i, item in enumerate(items):
            if i % k != offset % k:
                wdb.set_result(
                    item.job_id,
                    WorkResult(output="not sampled", worker_outcome=WorkerOutcome.SKIPPED),
                )


def collect(cfg, out, modules):
    """Per-module results from the cosmic-ray sessions in out/."""
    equiv = load_equivalents()
    rows, survivors, used = [], [], set()
    for module in modules:
        db = out / ("%s.sqlite" % _slug(module))
        if not db.exists():
            continue
        r = subprocess.run(
            [str(BIN / "cosmic-ray"), "dump", str(db)], capture_output=True, text=True, check=True
        )
        counts = dict(killed=0, timeout=0, survived=0, equivalent=0, incompetent=0, pending=0)
        seen = {}
        rows_ = [json.loads(line) for line in r.stdout.splitlines()]
        # numbering of identical keys (#2, ...) follows the place in the file
        rows_.sort(
            key=lambda x: (
                tuple(x[0]["mutations"][0]["start_pos"]),
                x[0]["mutations"][0]["operator_name"],
            )
        )
        for item, result in rows_:
            m = item["mutations"][0]
            if result is None:
                counts["pending"] += 1
                continue
            if result["worker_outcome"] == "skipped":
                continue
            key = key_of(module, m["operator_name"], result.get("diff"))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += " #%d" % seen[key]
            outcome = result.get("test_outcome")
            if result["worker_outcome"] in ("exception", "abnormal"):
                counts["incompetent"] += 1
            elif outcome == "killed":
                counts["timeout" if result.get("output") == "timeout" else "killed"] += 1
            elif outcome == "incompetent":
                counts["incompetent"] += 1
            elif key in equiv:
                counts["equivalent"] += 1
                used.add(key)
            else:
                counts["survived"] += 1
                survivors.append((key, m["start_pos"][0], result.get("diff") or ""))
        meta = out / ("%s.meta.json" % _slug(module))
        meta = json.loads(meta.read_text()) if meta.exists() else {}
        counts["seconds"] = meta.get("seconds")
        counts["cpu_seconds"] = meta.get("cpu_seconds")
        counts["sample_every"] = meta.get("sample_every", 1)
        rows.append((module, counts))
    return rows, survivors, sorted(set(equiv) - used)


def write_report(cfg, out, modules):
    rows, survivors, stale = collect(cfg, out, modules)
    tot = {k: sum(c[k] for _, c in rows) for k in ("killed", "timeout", "survived", "equivalent")}
    tot["incompetent"] = sum(c["incompetent"] for _, c in rows)
    tot["seconds"] = sum(c["seconds"] or 0 for _, c in rows)
    tot["cpu_seconds"] = sum(c["cpu_seconds"] or 0 for _, c in rows)
    # a whole run on idle cores: every module's exec CPU time times its
    # sampling factor, spread over the workers
    full_cpu = sum((c["cpu_seconds"] or 0) * c["sample_every"] for _, c in rows)
    live = tot["killed"] + tot["timeout"] + tot["survived"]
    score = 100.0 * (tot["killed"] + tot["timeout"]) / live if live else 0.0
    lines = [
        "# Mutation testing report (make mutants)",
        "",
        "cosmic-ray over the security-critical modules; tests per module in "
        "tests/mutants/modules.toml; equivalents in tests/mutants/equivalent.txt.",
        "",
    ]
    sampled = sorted({c["sample_every"] for _, c in rows} - {1})
    if sampled:
        lines += [
            "**Sampled: modules marked `1/K` ran every K-th mutant only; the "
            "time of a whole run is about K times theirs.**",
            "",
        ]
    lines += [
        "| module | killed | timeout | survived | equivalent | incompetent | score "
        "| wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tot["sample_every"] = 1
    for module, c in rows + [("**total**", tot)]:
        n = c["killed"] + c["timeout"] + c["survived"]
        lines.append(
            "| %s | %d | %d | %d | %d | %d | %s | %s | %s |"
            % (
                module + (" (1/%d)" % c["sample_every"] if c["sample_every"] > 1 else ""),
                c["killed"],
                c["timeout"],
                c["survived"],
                c["equivalent"],
                c["incompetent"],
                "%.1f %%" % (100.0 * (c["killed"] + c["timeout"]) / n) if n else "-",
                "%.0f" % c["seconds"] if c["seconds"] else "-",
                "%.0f" % c["cpu_seconds"] if c["cpu_seconds"] else "-",
            )
        )
    lines += [
        "",
        "Score = (killed + timeout) / (killed + timeout + survived): equivalent "
        "mutants are out of it, incompetent ones (the mutant does not run) too.",
        "",
        "A whole run on 2 idle cores takes about %.1f min (the CPU time above, times "
        "each module's sampling factor, over 2 workers; wall time depends on what "
        "else the machine runs)." % (full_cpu / 2 / 60),
        "",
        "## Survivors (%d)" % len(survivors),
        "",
    ]
    for key, line, _ in survivors:
        lines += ["- `%s` (line %s)" % (key, line)]
    if stale:
        lines += [
            "",
            "## Equivalents not met in this run (%d)" % len(stale),
            "",
            "A sampled run meets only some; after a whole run, delete the ones listed here.",
            "",
        ]
        lines += ["- `%s`" % k for k in stale]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "survivors.txt").write_text(
        "".join("%s :: TODO why equivalent or which test kills it\n" % k for k, _, _ in survivors)
    )
    (out / "report.json").write_text(
        json.dumps(
            {
                "modules": {m: c for m, c in rows},
                "total": tot,
                "score_percent": round(score, 2),
                "full_run_cpu_seconds": round(full_cpu, 1),
                "survivors": [{"key": k, "line": ln, "diff": d} for k, ln, d in survivors],
                "stale_equivalents": stale,
            },
            indent=1,
        )
    )
    return score, tot, survivors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modules", default="", help="comma-separated substrings of module paths")
    ap.add_argument("--sample", type=int, default=1, help="run every K-th mutant only")
    ap.add_argument(
        "--offset", type=int, default=0, help="with --sample K: start at the J-th (another slice)"
    )
    ap.add_argument("--out", default=str(ROOT / "build" / "mutants"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--retest", action="store_true", help="run the last run's survivors again (after new tests)"
    )
    ap.add_argument("--min-score", type=float, default=0.0, help="exit 1 below this percentage")
    args = ap.parse_args(argv)
    cfg = load_config()
    cfg["_offset"] = args.offset
    specs = cfg["modules"]
    wanted = [w for w in args.modules.split(",") if w]
    modules = [m for m in specs if not wanted or any(w in m for w in wanted)]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        lock = threading.Lock()

        def log(msg):
            with lock:
                print(msg, flush=True)

        todo = queue.Queue()
        for m in sorted(modules, key=lambda m: -(ROOT / m).stat().st_size):
            todo.put(m)

        def worker(k):
            copy = out / "work" / ("w%d" % k)
            make_copy(copy)
            while True:
                try:
                    m = todo.get_nowait()
                except queue.Empty:
                    return
                log("w%d: %s" % (k, m))
                if args.retest:
                    retest_survivors(m, specs[m], cfg, copy, out, log)
                else:
                    run_module(m, specs[m], cfg, copy, out, args.sample, log)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.workers)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("wall time %.0f s with %d workers" % (time.monotonic() - t0, args.workers))
    score, tot, survivors = write_report(cfg, out, modules)
    print(
        "killed %d, timeout %d, survived %d, equivalent %d: score %.1f %% -> %s"
        % (
            tot["killed"],
            tot["timeout"],
            tot["survived"],
            tot["equivalent"],
            score,
            out / "report.md",
        )
    )
    return 1 if score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
