"""Public-key speed on the device (issue 17): what the `pico` bench section
runs on the emulated Pico, and the same script on the unix port.

    files = device_files(tmp)          # {path on the device: local file}
    out = <run host_tools/mpy/native_bench.py there with script_args()>
    figures(parse(out))                # x25519_ms, ecdsa_p256_sign_ms, ...

The device script times each operation with time.ticks_us, which on the
emulator is emulated time (cycles at 125 MHz), and replays recorded TLS
handshakes (host_tools.benchmarks.tls_fixtures) for the CPU time of a whole
client handshake.  `run(runner)` glues the three steps to any runner
`runner(files, script, args) -> stdout`; `run_unix()` is that runner for the
MicroPython unix port (the firmware built for BOARD=unix), `run_pico()` for
the emulated Pico (sim/pico; the `pico` bench section takes its spreads).
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

from host_tools.boards.mpy import build_mpy
from host_tools.toolchain import ROOT, compile_mpy, micropython_binary

SCRIPT = ROOT / "host_tools" / "mpy" / "native_bench.py"
BENCHMARKS = ROOT / "host_tools" / "benchmarks"
FIXTURES = ("psk_x25519", "psk_p256", "cert_p256_chain2")
# figure name -> key printed by native_bench.py
FIGURES = {
    "x25519_ms": "x25519_ms",
    "x25519_pure_ms": "x25519_pure_ms",
    "ecdsa_p256_sign_ms": "ecdsa_p256_sign_ms",
    "ecdsa_p256_verify_ms": "ecdsa_p256_verify_ms",
    "ecdh_p256_ms": "ecdh_p256_ms",
    "ed25519_verify_ms": "ed25519_verify_ms",
    "psk_handshake_cpu_ms": "psk_x25519_handshake_ms",
    "psk_p256_handshake_cpu_ms": "psk_p256_handshake_ms",
    "cert_handshake_cpu_ms": "cert_p256_chain2_handshake_ms",
    "x25519_time_spread": "x25519_spread",
    "ecdsa_sign_time_spread": "ecdsa_p256_sign_spread",
}


def device_files(out_dir, board="pico_w", fixtures=FIXTURES):
    """Compile the firmware for `board`, the replay helpers and the handshake
    recordings into out_dir: {path on the device: local path}."""
    from host_tools.benchmarks import tls_fixtures

    out_dir = Path(out_dir)
    b = build_mpy(board, out_root=out_dir / "fw")
    files = {f.as_posix(): b["dir"] / f for f in b["files"]}
    for name in ("tls_replay_run", "detrng"):
        dst = out_dir / (name + ".mpy")
        compile_mpy(BENCHMARKS / (name + ".py"), dst, name + ".py")
        files[dst.name] = dst
    if fixtures:
        tls_fixtures.write(out_dir / "fixtures")
        for name in fixtures:
            files[name + ".json"] = out_dir / "fixtures" / (name + ".json")
    return files


def script_args(reps=4, fixtures=FIXTURES):
    """Arguments of native_bench.py: random scalars per spread, recordings."""
    return [str(reps)] + [name + ".json" for name in fixtures]


def parse(stdout):
    """The JSON line native_bench.py printed last."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("native_bench printed no result: %s" % stdout[-400:])


def figures(res):
    """Bench figures (ms rounded to 0.1, spreads as fractions) plus which
    implementation served each algorithm."""
    out = {k: round(res[v], 1 if k.endswith("_ms") else 5) for k, v in FIGURES.items() if v in res}
    for k in ("x25519_impl", "p256_impl", "ed25519_impl"):
        out[k] = res.get(k)
    return out


def run(runner, reps=4, board="pico_w", fixtures=FIXTURES):
    with tempfile.TemporaryDirectory() as tmp:
        files = device_files(tmp, board, fixtures)
        return figures(parse(runner(files, SCRIPT, script_args(reps, fixtures))))


def unix_runner(files, script, args, timeout=600):
    """Run `script` under the unix port with `files` laid out as on a device."""
    with tempfile.TemporaryDirectory() as root:
        for dest, src in files.items():
            p = Path(root) / dest
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(Path(src).read_bytes())
        env = dict(os.environ, MICROPYPATH=".frozen:" + root)
        proc = subprocess.run(
            [micropython_binary(), str(script)] + list(args),
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=timeout,
        )
        if proc.returncode:
            raise RuntimeError("native_bench failed: %s" % (proc.stderr or proc.stdout)[-400:])
        return proc.stdout


def run_unix(reps=2, fixtures=FIXTURES):
    """The same figures on the unix port (native x64 code): a smoke run."""
    return run(unix_runner, reps, "unix", fixtures)


def pico_runner(files, script, args, timeout=1800):
    """Run `script` on the emulated Pico: the firmware deployed as `make
    deploy` does (sim.pico.deployed), the other files of `files` on top."""
    from sim.pico.driver import Pico, deployed

    extra = {
        dest: Path(src).read_bytes()
        for dest, src in files.items()
        if not dest.startswith("atls/") and dest not in ("main.py", "board_config.json")
    }
    argv = "import sys\nsys.argv.clear()\nsys.argv.extend(%r)\n" % (
        ["native_bench.py"] + list(args)
    )
    with Pico(flash=deployed(extra=extra, leave_out=("main.py",))) as p:
        return p.run(argv + Path(script).read_text(), timeout=timeout).out


def run_pico(reps=6, fixtures=()):
    """The figures on the emulated Pico (emulated time: cycles at 125 MHz),
    among them the constant-time evidence x25519_time_spread and
    ecdsa_sign_time_spread (fractions, issue 17: <= 0.01)."""
    return run(pico_runner, reps, "pico_w", fixtures)
