"""`make soak`: the fuzzers' bulk under CPython and a sample under the unix port.

    python -m fuzz [--n 1000000] [--mpy-n 18000] [--seed 1] [--out build/soak.json]
(run with tests/ on PYTHONPATH, as the Makefile does).  FUZZ_N inputs are
spread over the targets by WEIGHTS; the MicroPython sample runs mpy_main.py
on the same corpus.  Progress goes to stderr every few seconds; the summary
(inputs per target, outcomes by exception type, wall time) to stdout and
--out; every failure is saved as build/soak/crash-<target>-<n>.bin with a
.json beside it (seed, input index, seed input, error); `python -m fuzz
--replay build/soak/crash-<target>-<n>.json` re-runs one against the saved
build/soak/corpus.json (recorded OpenSSL flights differ per build).  Exit status 1 when
anything but success or a typed error came out.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from fuzz import corpus as corpus_mod
from fuzz.runner import TARGETS, build_targets, dec, fuzz, one
from host_tools.toolchain import FIRMWARE, ROOT, micropython_binary

WEIGHTS = {"wire": 28, "pairing": 12, "xbee": 14, "link": 18, "tls": 14, "session": 7, "x509": 7}
MPY_WEIGHTS = {"wire": 1, "pairing": 1, "xbee": 1, "link": 1, "tls": 1, "session": 1, "x509": 1}


def split(n, weights):
    total = sum(weights.values())
    return {k: max(1, int(n * w / total)) for k, w in weights.items()}


def progress(name, i, n, secs, stats):
    sys.stderr.write(
        "soak %-8s %9d/%d  %6.0f/s  %s\n" % (name, i, n, i / max(secs, 1e-9), stats["errors"])
    )
    sys.stderr.flush()


def save_failures(outdir, name, seed, target, failures, count):
    for fl in failures:
        count += 1
        base = os.path.join(outdir, "crash-%s-%d" % (name, count))
        data = fl["input"]
        if isinstance(data, str):
            data = bytes.fromhex(data)
        with open(base + ".bin", "wb") as f:
            f.write(data)
        meta = dict(fl, input=data.hex(), target=name, seed=seed)
        meta["seed_input"] = bytes(target.seeds[fl["seed_index"]]).hex()
        with open(base + ".json", "w") as f:
            json.dump(meta, f, indent=1)
    return count


def run_mpy(corpus_path, seed, name, n, timeout):
    """One target's sample in its own unix-port process (a crash of the
    interpreter is that target's failure)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(FIRMWARE), str(ROOT / "tests")])
    args = [micropython_binary(), str(ROOT / "tests" / "fuzz" / "mpy_main.py"), corpus_path]
    args += [str(seed), "%s=%d" % (name, n)]
    t0 = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    got = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not got:
        err = "exit %d: %s" % (p.returncode, (p.stderr or p.stdout)[-500:])
        return {
            "target": name,
            "inputs": 0,
            "ok": 0,
            "errors": {"crash:micropython": 1},
            "failures": [
                {
                    "index": -1,
                    "seed_index": 0,
                    "kind": "crash",
                    "type": "micropython",
                    "error": err,
                    "input": "",
                }
            ],
            "seconds": time.monotonic() - t0,
        }
    return got[0]


def replay(path):
    """Re-run a saved failure: the corpus.json next to it, then (target,
    seed, index) regenerate the exact mutant and generator state; the
    exception (or nothing, once fixed) shows with its traceback."""
    with open(path) as f:
        meta = json.load(f)
    with open(os.path.join(os.path.dirname(path), "corpus.json")) as f:
        corpus = dec(json.load(f))
    target = build_targets(corpus, [meta["target"]])[meta["target"]]
    _, m, rng = one(target, meta["seed"], meta["index"])
    if m.hex() != meta["input"]:
        print("replay: the mutant differs from the saved input (another corpus?)")
        return 2
    target.run(m, rng)
    print("replay: %s input %d is accepted now" % (meta["target"], meta["index"]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fuzz")
    ap.add_argument("--n", type=int, default=1000000, help="CPython inputs, all targets")
    ap.add_argument("--mpy-n", type=int, default=18000, help="unix-port inputs, all targets")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="build/soak.json")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--replay", metavar="CRASH_JSON", help="re-run one saved failure")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    names = [t for t in args.targets.split(",") if t]
    outdir = os.path.join(os.path.dirname(args.out) or ".", "soak")
    os.makedirs(outdir, exist_ok=True)
    t0 = time.monotonic()
    corpus = corpus_mod.build()
    corpus_path = os.path.join(outdir, "corpus.json")
    corpus_mod.save(corpus, corpus_path)
    targets = build_targets(corpus, names)
    plan = split(args.n, {k: WEIGHTS[k] for k in names})
    report = {"seed": args.seed, "cpython": {}, "micropython": {}, "failures": 0}
    nfail = 0
    for name in names:
        st = fuzz(targets[name], plan[name], args.seed, progress)
        nfail = save_failures(outdir, name, args.seed, targets[name], st["failures"], nfail)
        st["failures"] = len(st["failures"])
        report["cpython"][name] = st
        progress(name, st["inputs"], plan[name], st["seconds"], st)
    if args.mpy_n:
        mplan = split(args.mpy_n, {k: MPY_WEIGHTS[k] for k in names})
        sys.stderr.write("soak micropython sample %s\n" % mplan)
        mt = time.monotonic()
        for name, n in mplan.items():
            st = run_mpy(corpus_path, args.seed, name, n, timeout=1800)
            progress("mpy " + name, st["inputs"], n, st["seconds"], st)
            nfail = save_failures(outdir, name, args.seed, targets[name], st["failures"], nfail)
            st["failures"] = len(st["failures"])
            report["micropython"][name] = st
        report["micropython_seconds"] = round(time.monotonic() - mt, 1)
    report["failures"] = nfail
    report["inputs"] = sum(s["inputs"] for s in report["cpython"].values())
    report["inputs_micropython"] = sum(s["inputs"] for s in report["micropython"].values())
    report["wall_seconds"] = round(time.monotonic() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(
        "soak: %d CPython inputs, %d under the unix port, %.0f s"
        % (report["inputs"], report["inputs_micropython"], report["wall_seconds"])
    )
    for where in ("cpython", "micropython"):
        for name, st in report[where].items():
            print(
                "  %-11s %-8s %8d inputs  %7.1f s  ok %d  %s"
                % (where, name, st["inputs"], st["seconds"], st["ok"], st["errors"])
            )
    print("failures: %d%s" % (nfail, " (reproducers in %s)" % outdir if nfail else ""))
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
