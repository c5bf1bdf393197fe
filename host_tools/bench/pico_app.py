"""The whole application on an emulated Pico, for section `pico` (issue 16, 17):
firmware/main.py's text (atls.app under the supervisor, the XBee driver on UART0,
pairing, session, link, TLS client) against the simulator's emulated XBee, the real
gateway and the real service.

`AppRig(mode)` starts one fleet (radio, gateway, service) with one Pico device and keeps
it up for every run of that mode:
  first()        the application with a heap sampler (APP_SAMPLER) and no ballast:
                 pairing, a handshake, `count` messages each way; it leaves the
                 "provisioned" flash (firmware, device.json, paired.json)
  trial(ballast) the plain text of main.py after a ballast (bytearray) allocated
                 first, from a copy of the provisioned flash: True when the device
                 prints "done" (handshake and `count` messages each way delivered)
                 without any error, restart or crash
  min_free()     bisects the ballast: the smallest free heap (KiB) at which trial()
                 passes, in 4 KiB steps, then 2 KiB
The heap does not depend on the baud rate (the UART buffers are the board's
txbuf/rxbuf), so runs use UART0 and the emulated module at `baud` (921600 unless
told; device.json's link.xbee.baudrate overrides the board's 9600): a trial costs
seconds, not minutes.  The end-to-end handshake time is measured separately at
the board's own baud.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

from host_tools.toolchain import FIRMWARE

FAST_BAUD = 921600

# Wraps the application: raw gc.mem_alloc() high-water and live heap high-water (after
# gc.collect(), run only when the raw figure exceeds the live peak so far: live <= raw,
# so the peak is the same as collecting every time) around every event-loop turn,
# watchdog feed (between the long steps of a handshake) and status line; the live heap
# at the first of each status event (phases).
APP_SAMPLER = r"""
import gc
import atls.app as A
import atls.supervisor as S
_peak = [0, 0]
_phase = {}
def _sample(phase=False):
    m = gc.mem_alloc()
    if m > _peak[0]:
        _peak[0] = m
    if m > _peak[1] or phase:  # live <= raw: no collect can raise the live peak otherwise
        gc.collect()
        m = gc.mem_alloc()
        if m > _peak[1]:
            _peak[1] = m
    return m
_step = A.step
def _stepped(*a, **k):
    _sample()
    r = _step(*a, **k)
    _sample()
    return r
A.step = _stepped
_feed = S.Watchdog.feed
def _fed(self):
    _sample()
    _feed(self)
S.Watchdog.feed = _fed
_status = A.status
def _st(ev, **f):
    m = _sample(ev not in _phase)
    if ev not in _phase:
        _phase[ev] = m
    if ev == "done":
        f["peak_alloc"] = _peak[0]
        f["peak_live"] = _peak[1]
        f["phases"] = _phase
    _status(ev, **f)
A.status = _st
"""

BALLAST = "import gc\ngc.collect()\n_ballast = bytearray(%d) if %d else None\n"
FAIL = ("error", "reset", "crash", "failed", "config_error", "down", "entropy_failed")


class AppRig:
    """One fleet and one emulated Pico device (dev-01) for a mode."""

    def __init__(self, mode, count=100, period_ms=100, baud=FAST_BAUD, workdir=None):
        from sim.fleet import Fleet
        from sim.pico import fleet as pico_fleet

        self.mode = mode
        self.count = count
        self.baud = baud
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="atls-bench-pico-%s-" % mode))
        self.fleet = Fleet(
            devices=1, seed=16, mode=mode, period_ms=period_ms, count=count, workdir=self.dir
        )
        pico_fleet.attach(self.fleet, 1)
        self.fleet.pico_app = {"exit_when_done": True}
        prepare = self.fleet.prepare_device

        def prepared(i):  # the board's UART at `baud` (device.json overrides board_config)
            name = prepare(i)
            if self.baud:
                p = self.fleet.device_dir(name) / "device.json"
                dev = json.loads(p.read_text())
                dev["link"]["xbee"]["baudrate"] = self.baud
                p.write_text(json.dumps(dev))
            return name

        self.fleet.prepare_device = prepared
        self.provisioned = {}  # source: flash image with paired.json
        self.first_ok = False
        self.trials = []

    # -- runs --------------------------------------------------------------------------
    def _start(self, code, source=False):
        from sim.device_state import DeviceState
        from sim.pico import fleet as pico_fleet

        self.fleet.devices["dev-01"] = DeviceState("dev-01")
        log = self.dir / "dev-01.log"
        if log.exists():  # each run's console on its own: the previous ones are kept
            with open(self.dir / "dev-01.runs.log", "a") as f:
                f.write(log.read_text())
            log.write_text("")
        code = code + (FIRMWARE / "main.py").read_text()
        pico_fleet.start_pico_device(self.fleet, "dev-01", run_code=code, source=source)
        return self.fleet.devices["dev-01"]

    def _stop(self):
        pico = self.fleet.picos.pop("dev-01", None)
        self.fleet.device_procs.pop("dev-01", None)
        self.fleet.procs.pop("dev-01", None)
        log = self.fleet.logs.pop("dev-01", None)
        if pico is not None:
            pico.close()  # quit: the emulator saves the flash (--persist)
        if log is not None:
            log.close()

    def _wait(self, st, timeout):
        """'done', a failure kind, or 'timeout'."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "done" in self._log():
                return "done"
            if st.status in FAIL:
                return st.status
            pico = self.fleet.picos.get("dev-01")
            if pico is not None and getattr(pico, "result", None) is not None:
                return "done" if "done" in self._log() else "ended"
            time.sleep(0.2)
        return "timeout"

    def _log(self):
        try:
            return (self.dir / "dev-01.log").read_text()
        except OSError:
            return ""

    def first(self, setup_timeout=300, timeout=900):
        """The sampled run (pairing included): figures of the application."""
        from sim.scenarios import all_up

        fleet = self.fleet
        unix_start = fleet.start_device

        def start(name):
            if name in fleet.pico_names:
                return self._start(APP_SAMPLER)
            return unix_start(name)

        fleet.start_device = start
        names = fleet.start()
        self._pair(timeout=min(120, setup_timeout))
        fleet.wait(lambda: all_up(fleet, names), setup_timeout)
        st = fleet.devices["dev-01"]
        verdict = self._wait(st, timeout)
        self.first_ok = verdict == "done"
        self._stop()
        shutil.copyfile(fleet.device_dir("dev-01") / "flash.bin", self.dir / "provisioned.bin")
        self.provisioned[False] = self.dir / "provisioned.bin"
        done = {}
        for line in self._log().splitlines():
            if '"ev": "done"' in line:
                done = json.loads(line.split("ATLS ", 1)[1])
        kib = lambda v: round(v / 1024, 1) if v else None  # noqa: E731
        return {
            "verdict": verdict,
            "handshake_ms": st.handshake_ms[0] if st.handshake_ms else None,
            "peak_live_kib": kib(done.get("peak_live")),
            "peak_raw_kib": kib(done.get("peak_alloc")),
            "phases_kib": {k: kib(v) for k, v in (done.get("phases") or {}).items()},
            "messages": [st.acked, st.received],
        }

    def _pair(self, timeout):
        """The person at the gateway: confirm the request once the device has shown
        the same code.  (Fleet.pair_all refuses a request whose code the device has
        not printed yet; an emulated Pico on a loaded machine prints it late.)"""
        fleet = self.fleet
        fleet.gateway({"cmd": "open_join", "seconds": timeout})
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                st = fleet.devices["dev-01"]
                if st.paired or st.status in ("handshaking", "up"):
                    return True
                for p in fleet.gateway({"cmd": "pending"})["pending"]:
                    if not p["confirmed"] and p["device"] == "dev-01" and p["code"] == st.code:
                        fleet.gateway({"cmd": "confirm", "addr64": p["addr64"], "code": p["code"]})
                time.sleep(0.2)
            return False
        finally:
            fleet.gateway({"cmd": "close_join"})

    def _provision_source(self):
        """The firmware as .py with this device's device.json and paired.json."""
        from sim.pico.driver import Pico, deployed

        with Pico(flash=self.provisioned[False]) as p:
            r = p.run("import sys\nsys.stdout.write(open('paired.json').read())")
            paired = r.out.strip().encode()
        dev = json.loads((self.fleet.device_dir("dev-01") / "device.json").read_text())
        dev = self._device_json(dev)
        image = deployed(
            source=True,
            extra={"device.json": json.dumps(dev).encode(), "paired.json": paired},
            leave_out=("main.py",),
        )
        self.provisioned[True] = image

    def trial(self, ballast, source=False, timeout=600):
        if source and source not in self.provisioned:
            self._provision_source()
        flash = self.fleet.device_dir("dev-01") / "flash.bin"
        shutil.copyfile(self.provisioned[source], flash)
        t0 = time.time()
        st = self._start(BALLAST % (ballast, ballast), source=source)
        verdict = self._wait(st, timeout)
        self._stop()
        why = None if verdict == "done" else self._why()
        self.trials.append((source, ballast, verdict, round(time.time() - t0, 1), why))
        return verdict == "done"

    def _why(self):
        """What stopped a failing trial: the first error status's text, else the
        last line of a traceback, from the console."""
        tb = None
        for line in self._log().splitlines():
            if line.startswith("ATLS ") and '"ev": "' in line:
                try:
                    ev = json.loads(line[5:])
                except ValueError:
                    continue
                if ev.get("ev") in FAIL:
                    return "%s: %s" % (ev["ev"], ev.get("error") or ev.get("reason"))
            elif "Error" in line and ":" in line:
                tb = line.strip()
        return tb

    def timed_handshake(self, count=3, timeout=600):
        """The device's own handshake_ms (its "up" line) with UART0 and the module at
        the board's baud (boards/pico_w: 9600), already paired."""
        from sim.pico.driver import Pico

        dev = json.loads((self.fleet.device_dir("dev-01") / "device.json").read_text())
        dev = self._device_json(dev)
        dev["link"]["xbee"].pop("baudrate", None)
        dev["app"]["count"] = count
        image = self.dir / "provisioned-board-baud.bin"
        shutil.copyfile(self.provisioned[False], image)
        with Pico(flash=image, persist=image) as p:
            p.put("device.json", json.dumps(dev).encode())
        shutil.copyfile(image, self.fleet.device_dir("dev-01") / "flash.bin")
        st = self._start("")
        verdict = self._wait(st, timeout)
        self._stop()
        self.trials.append(("board_baud", 0, verdict, None))
        return st.handshake_ms[0] if st.handshake_ms else None

    def _device_json(self, dev):
        from sim.pico.fleet import pico_device_json

        dev = pico_device_json(dev)
        dev.get("app", {}).update(self.fleet.pico_app)
        return dev

    def free_at_boot(self, source=False):
        """gc.mem_free() at the raw REPL after boot (what the ballast is taken from)."""
        from sim.pico.driver import Pico

        with Pico(flash=self.provisioned[source]) as p:
            r = p.run("import gc\ngc.collect()\nprint(gc.mem_free())")
            return int(r.out.split()[-1])

    def min_free(self, source=False, guess_kib=None, step=4096, fine=2048):
        """Smallest free heap (KiB) at which trial() passes; None if it fails with no
        ballast.  Free heap = free_at_boot - ballast.  Bisected over free heap in
        `step` units (a `guess_kib` narrows the first bracket), then one `fine` step."""
        if not (source is False and self.first_ok) and not self.trial(0, source):
            return None  # (first() passing at no ballast, pairing included, is trial(0))
        if source and source not in self.provisioned:
            self._provision_source()
        free0 = self.free_at_boot(source)
        ok, bad = free0, 0  # free heaps that pass / fail
        if guess_kib:  # probe just above and below the guess, widening until bracketed
            g = int(guess_kib * 1024) // step * step
            hi = g + 2 * step
            while hi < ok:
                if self.trial(free0 - hi, source):
                    ok = hi
                    break
                bad, hi = hi, hi + 4 * step
            lo = g - 2 * step
            while bad < lo < ok:
                if not self.trial(free0 - lo, source):
                    bad = lo
                    break
                ok, lo = lo, lo - 4 * step
        while ok - bad > step:
            mid = bad + max(1, (ok - bad) // 2 // step) * step
            if self.trial(free0 - mid, source):
                ok = mid
            else:
                bad = mid
        if fine and ok - bad > fine and self.trial(free0 - (ok - fine), source):
            ok -= fine
        return round(ok / 1024, 1)

    def close(self):
        self._stop()
        self.fleet.shutdown()


def main(argv=None):
    """python -m host_tools.bench.pico_app [--mode psk|cert] [--guess KIB] [--source]:
    one mode's whole-application heap figures as section `pico` measures them
    (first(), then min_free() from the live peak + 8 KiB; --source: the
    firmware as .py, the `_py` figure), with every trial and what stopped it."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.pico_app")
    ap.add_argument("--mode", choices=("psk", "cert"), default="psk")
    ap.add_argument("--guess", type=float, help="KiB to start the bisection at")
    ap.add_argument("--source", action="store_true", help="the firmware as .py source")
    a = ap.parse_args(argv)
    rig = AppRig(a.mode)
    try:
        r = rig.first()
        guess = a.guess or (r["peak_live_kib"] and r["peak_live_kib"] + 8)
        ok = r["verdict"] == "done"
        r["min_free_heap_kib"] = rig.min_free(a.source, guess_kib=guess) if ok else None
        r["source"] = a.source
        r["free_at_boot_kib"] = round(rig.free_at_boot(a.source) / 1024, 1)
        r["trials"] = rig.trials  # (source, ballast, verdict, wall s, why)
    finally:
        rig.close()
    print(json.dumps(r))


if __name__ == "__main__":
    main()
