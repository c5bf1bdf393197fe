"""The host side of an emulated Pico: start sim/pico/emu.mjs under Node, put the
firmware on its flash, run code through the raw REPL, follow the console.

    with Pico(flash=deployed()) as pico:          # firmware as .mpy, as `make deploy` puts it
        r = pico.exec("from atls.crypto import x25519")
        print(r.out, r.cycles)                     # emulated 125 MHz cycles of the job

Deploying (`deployed()`): the firmware is compiled exactly as `make deploy` does
(host_tools.boards.mpy.build_mpy: mpy-cross -march=armv6m for boards/pico_w), then written
file by file through the raw REPL onto the emulator's littlefs2 flash (MicroPython formats
it on first boot, as on a new board), and the flash is saved under build/pico/ keyed by the
content hash: later runs start from that snapshot in 0.3 s.
"""

import base64
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from host_tools.toolchain import BUILD, FIRMWARE

HERE = Path(__file__).resolve().parent
IMAGE = HERE / "image" / "RPI_PICO-v1.28.0.uf2"
IMAGE_SHA256 = "4dbcb0aa6be64a944ed73c71cea56d170f3149c601452e07e5af791dc29e292c"
EMU = HERE / "emu.mjs"
NODE_MODULES = HERE / "node_modules"
CACHE = BUILD / "pico"
CLOCK_HZ = 125_000_000
INSTALL_HINT = (
    "the Pico emulator needs Node.js >= 18 and npm: sudo apt-get install -y nodejs npm, "
    "then `make pico-setup` (npm ci in sim/pico)"
)


# What every emulator process of this Python process cost, summed at its exit
# (tests/test_pico.py reports it per test): emulated cycles with the CPU busy and
# idle, flash erase/program operations, the process's wall time.
TOTALS = {"processes": 0, "busy_cycles": 0, "idle_cycles": 0, "flash_ops": 0, "wall_ms": 0}


class EmulatorError(Exception):
    pass


class Result:
    """One raw-REPL job: stdout, the traceback (empty when it ran clean), emulated
    cycles, the GPIO spans it marked, wall time."""

    def __init__(self, out, err, ev, spans):
        self.out = out
        self.err = err
        self.cycles = ev.get("job_cycles", 0)
        self.core_cycles = ev.get("job_core_cycles", 0)
        self.wall_ms = ev.get("wall_ms", 0)
        self.spans = spans

    @property
    def ok(self):
        return not self.err

    def ms(self, cycles=None):
        return (self.cycles if cycles is None else cycles) * 1000 / CLOCK_HZ

    def lines(self, prefix):
        """Output lines starting with prefix, prefix removed."""
        return [ln[len(prefix) :].strip() for ln in self.out.splitlines() if ln.startswith(prefix)]

    def check(self):
        if self.err:
            raise EmulatorError("device raised:\n" + self.err.strip()[-3000:])
        return self


_image_ok = []


def check_image():
    """The carried image is the one its provenance names (image/PROVENANCE.md)."""
    if not _image_ok:
        got = hashlib.sha256(IMAGE.read_bytes()).hexdigest()
        if got != IMAGE_SHA256:
            raise EmulatorError("%s: sha256 %s, expected %s" % (IMAGE, got, IMAGE_SHA256))
        _image_ok.append(True)


def node_binary():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise EmulatorError("node not found: " + INSTALL_HINT)
    if not (NODE_MODULES / "rp2040js").is_dir():
        raise EmulatorError("sim/pico/node_modules is missing: " + INSTALL_HINT)
    return node


class Pico:
    """One emulator process. flash: a saved flash image (deployed()) or None (empty:
    MicroPython formats its filesystem at boot); uart0: "host:port" of a TCP serial
    end (the simulator's emulated XBee); max_speed: emulated time at most this many
    times wall time (0: no cap; 1 when a host process must answer in time)."""

    def __init__(
        self,
        flash=None,
        uart0=None,
        max_speed=0,
        log=None,
        on_console=None,
        persist=None,
        cut=None,
        cut_from="boot",
    ):
        check_image()
        cmd = [node_binary(), str(EMU), "--image", str(IMAGE)]
        if flash:
            cmd += ["--flash", str(flash)]
        if persist:  # the firmware's flash writes are saved back to this file
            cmd += ["--persist", str(persist)]
        if cut is not None:  # (k, torn): power cut before flash operation k (emu.mjs --cut)
            cmd += ["--cut", "ops:%d:%r" % (cut[0], float(cut[1])), "--cut-from", cut_from]
        if uart0:
            cmd += ["--uart0", "tcp:" + uart0]
        if max_speed:
            cmd += ["--max-speed", str(max_speed)]
        self.log = log
        self.on_console = on_console
        self.console = []  # console text outside raw-REPL jobs (boot, main.py)
        self.spans = []
        self.cycles = 0
        self.stats = {}  # the emulator's exit figures (TOTALS)
        self.span_ops = []  # flash erase/program operations in each span
        self.cut_event = None  # {"op", "torn", "flash_ops"} once a --cut happened
        self._events = queue.Queue()
        self._id = 0
        self._prompt = threading.Event()
        self.proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="latin-1",
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self):
        partial = ""
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.cycles = ev.get("cycles", self.cycles)
            kind = ev.get("ev")
            if kind == "console":
                self.console.append(ev["data"])
                if self.log:
                    self.log.write(ev["data"].replace("\r\n", "\n"))
                    self.log.flush()
                if self.on_console:
                    partial += ev["data"]
                    *done, partial = partial.split("\n")
                    for ln in done:
                        self.on_console(ln.rstrip("\r"), self.cycles)
            elif kind == "prompt":
                self._prompt.set()
            elif kind == "span":
                self.spans.append(ev["span_cycles"])
                self.span_ops.append(ev.get("span_flash_ops", 0))
            elif kind in ("bye", "cut"):  # a power cut ends the process too
                self.stats = ev
                if kind == "cut":
                    self.cut_event = ev
                for k in TOTALS:
                    TOTALS[k] += ev.get(k, 0) if k != "processes" else 1
            if kind != "console":
                self._events.put(ev)
        self._events.put({"ev": "exit"})

    def _send(self, obj):
        if self.proc.poll() is not None:
            raise EmulatorError(
                "the emulator exited (%s): %s" % (self.proc.returncode, self.stderr())
            )
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise EmulatorError("the emulator is gone: %s" % e)

    def stderr(self):
        try:
            return self.proc.stderr.read()[-2000:] if self.proc.poll() is not None else ""
        except (OSError, ValueError):
            return ""

    def wait_prompt(self, timeout=60):
        """Wait for the friendly REPL (after boot, or after main.py returned)."""
        if not self._prompt.wait(timeout):
            raise EmulatorError("no REPL prompt within %d s" % timeout)

    def wait_console(self, text, timeout=60):
        """Wait until the console (outside raw-REPL jobs) shows `text`, or the
        emulator ended; True when the text came."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in "".join(self.console):
                return True
            if self.proc.poll() is not None:
                self._reader.join(5)
                return text in "".join(self.console)
            time.sleep(0.05)
        raise EmulatorError("console never showed %r within %d s" % (text, timeout))

    def exec(self, code, timeout=600, on_out=None):
        """Run `code` through the raw REPL: a Result (err holds a traceback, if any)."""
        self.wait_prompt(min(timeout, 60))
        self._id += 1
        jid = self._id
        n_spans = len(self.spans)
        self._send({"op": "exec", "id": jid, "code": code})
        out = []
        deadline = time.time() + timeout
        while True:
            try:
                ev = self._events.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                raise EmulatorError("job %d: no result within %d s" % (jid, timeout))
            kind = ev.get("ev")
            if kind == "exit":
                raise EmulatorError("the emulator exited: %s" % self.stderr())
            if ev.get("id") != jid:
                continue
            if kind == "out":
                out.append(ev["data"])
                if on_out:
                    on_out(ev["data"])
            elif kind == "result":
                text = "".join(out).replace("\r\n", "\n")
                return Result(text, ev["err"].replace("\r\n", "\n"), ev, self.spans[n_spans:])

    def run(self, code, timeout=600):
        """exec() that raises EmulatorError when the device raised."""
        return self.exec(code, timeout).check()

    def put(self, path, data):
        """Write bytes to `path` on the device's filesystem (base64 in the job's text:
        the device's lexer reads 1.33 characters a byte, not up to 4 for repr())."""
        code = ["from binascii import a2b_base64 as d", "f=open(%r,'wb')" % path, "w=f.write"]
        for i in range(0, len(data), 3072):
            code.append("w(d(%r))" % base64.b64encode(data[i : i + 3072]).decode())
        code.append("f.close()")
        self.run("\n".join(code))

    def dump(self, path, timeout=30):
        self._id += 1
        self._send({"op": "dump", "id": self._id, "path": str(path)})
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self._events.get(timeout=timeout)
            if ev.get("ev") == "dumped":
                return
        raise EmulatorError("flash dump timed out")

    def interrupt(self):
        self._send({"op": "interrupt"})

    def close(self):
        if self.proc.poll() is None:
            try:
                self._send({"op": "quit"})
                self.proc.wait(5)
            except (EmulatorError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)  # its last events (the exit figures) are in
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


_FILES = {}


def firmware_files(source=False, board="pico_w"):
    """Cached per process (the firmware does not change while tests run)."""
    key = (source, board)
    if key not in _FILES:
        _FILES[key] = _firmware_files(source, board)
    return dict(_FILES[key])


def _firmware_files(source, board):
    """{device path: bytes}: what `make deploy BOARD=pico_w` puts on a board (.mpy
    compiled for armv6m, main.py, board_config.json), or with source=True the .py
    modules instead of the .mpy."""
    from host_tools.boards.mpy import HOST_ONLY, build_mpy, firmware_modules

    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = build_mpy(board, out_root=tmp)
        out = Path(built["dir"])
        if source:
            for rel in firmware_modules():
                if rel not in HOST_ONLY:
                    files[rel.as_posix()] = (FIRMWARE / rel).read_bytes()
        else:
            for rel in built["files"]:
                files[rel.as_posix()] = (out / rel).read_bytes()
        files["main.py"] = (out / "main.py").read_bytes()
        files["board_config.json"] = (out / "board_config.json").read_bytes()
    return files


def write_files(pico, files):
    """Create the folders, then write every file (one raw-REPL job a file)."""
    dirs = {str(a) for p in files for a in Path(p).parents if str(a) not in ("/", ".")}
    dirs = sorted(dirs, key=len)  # parents first
    pico.run("import os\nfor d in %r:\n try: os.mkdir(d)\n except OSError: pass" % dirs, timeout=60)
    for path in sorted(files):
        pico.put(path, files[path])


def _snapshot(files, base=None):
    """A flash image: `base` (or an empty flash) with `files` written on it (main.py
    last: nothing starts at boot until the rest is there); cached by content hash."""
    h = hashlib.sha256(IMAGE_SHA256.encode() + str(base).encode())
    for p in sorted(files):
        h.update(p.encode() + b"\0" + hashlib.sha256(files[p]).digest())
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / ("flash-%s.bin" % h.hexdigest()[:20])
    if path.exists():
        return path
    files = dict(files)
    main = files.pop("main.py", None)
    with Pico(flash=base) as pico:
        write_files(pico, files)
        if main is not None:
            pico.put("main.py", main)
        tmp = path.with_suffix(".tmp.%d" % os.getpid())
        pico.dump(tmp)
    os.replace(tmp, path)
    return path


def deployed(source=False, extra=None, leave_out=(), board="pico_w"):
    """Path of a flash image with the firmware deployed (cached in build/pico/): the
    firmware once, then extra ({device path: bytes}: device.json, a script) and main.py
    on top of that, so a new device.json costs a boot and a few writes, not a deployment.
    leave_out: device paths not to deploy (e.g. "main.py": no auto-start at boot)."""
    files = firmware_files(source, board)
    top = {"main.py": files.pop("main.py")}
    top.update(extra or {})
    for p in leave_out:
        files.pop(p, None)
        top.pop(p, None)
    base = _snapshot(files)
    return _snapshot(top, base) if top else base
