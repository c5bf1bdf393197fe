"""Simulator devices on emulated Picos: `python -m sim --pico N` (`make sim PICO=N`).

attach(fleet, n) makes the fleet start its first n devices on emulated Raspberry Pi Picos
instead of unix-port processes: each is its own emulator process (sim/pico/emu.mjs) running
the stock RPI_PICO image with the firmware deployed as .mpy (as `make deploy` does), the
boards/pico_w configuration (XBee on UART0 at its baud rate) and the device.json the fleet
prepared, whose XBee is the simulator's emulated module: UART0 is bridged to that module's
TCP serial end.  The same radio, gateway, service, pairing and verdicts apply; the console
("ATLS {json}" lines) feeds the same DeviceState.  Each device keeps its own flash file
(devices/<name>/flash.bin): paired.json and the boot counter survive a reboot, as on a board.
Emulated time is capped at wall time (max_speed=1): the firmware's timeouts see the host's
answers in time, and the device runs at most at real speed (slower when the host is busy:
44-52 M emulated cycles per wall second on 2 cores, the RP2040 runs 125 M).
"""

import json
import shutil
import threading
import time

from sim.pico.driver import Pico, deployed

PAIR_WINDOW_S = 300  # the join window for a fleet with Picos (see attach)
REFUSE_AFTER_S = 15  # a code no device shows is refused after this long
SERVICE_LINK = {"rto_ms": 4000, "rto_max_ms": 16000, "handshake_timeout_ms": 180000}


def pico_device_json(dev, baud=None):
    """The fleet's device.json for an emulated Pico: the XBee is the board's UART0
    (boards/pico_w), not a TCP socket; the rest is unchanged.  baud: UART0 and the
    module at this rate instead of the board's 9600 (device.json's link.xbee.baudrate
    overrides board_config.json, as on a board whose XBee was set with ATBD)."""
    dev = json.loads(json.dumps(dev))
    x = dev.get("link", {}).get("xbee", {})
    x.pop("tcp", None)
    if baud:
        x["baudrate"] = int(baud)
    return dev


def start_pico_device(fleet, name, run_code=None, source=False):
    """Boot `name` on an emulated Pico: main.py starts the application at boot, or,
    with run_code, main.py is left off the flash and run_code runs through the raw REPL
    once the prompt is up (e.g. a heap ballast, then `import main`)."""
    d = fleet.device_dir(name)
    flash = d / "flash.bin"
    if not flash.exists():  # first boot: the deployed firmware and this device's files
        dev = json.loads((d / "device.json").read_text())
        dev = pico_device_json(dev, getattr(fleet, "pico_baud", None))
        dev.get("app", {}).update(getattr(fleet, "pico_app", {}))
        image = deployed(
            source=source,
            extra={"device.json": json.dumps(dev).encode()},
            leave_out=("main.py",) if run_code else (),
        )
        shutil.copyfile(image, flash)
    i = int(name.split("-")[-1]) - 1
    port = fleet.radio_state["devices"][i]["port"]
    log = open(fleet.dir / (name + ".log"), "a")
    fleet.logs[name] = log
    st = fleet.devices[name]

    def on_console(line, cycles=0):
        log.write("%s\n" % line)
        log.flush()
        if not line.startswith("ATLS "):
            return
        try:
            ev = json.loads(line[5:])
        except ValueError:
            return
        st.feed(ev)
        for trig in list(fleet.triggers):
            if trig[0] == name and trig[1] == ev.get("ev"):
                fleet.triggers.remove(trig)
                trig[2]()

    pico = Pico(
        flash=flash, persist=flash, uart0="127.0.0.1:%d" % port, max_speed=1, on_console=on_console
    )
    fleet.procs[name] = pico.proc
    fleet.device_procs[name] = pico.proc
    fleet.picos[name] = pico

    def watch():
        code = pico.proc.wait()
        if code not in (0, -15, -9):
            st.feed({"ev": "crash", "error": "emulator exit %s" % code})

    threading.Thread(target=watch, daemon=True).start()
    if run_code:
        partial = [""]

        def on_out(data):
            text = partial[0] + data.replace("\r\n", "\n")
            *done, partial[0] = text.split("\n")
            for ln in done:
                on_console(ln, pico.cycles)

        def runner():
            try:
                r = pico.exec(run_code, timeout=3600, on_out=on_out)
                pico.result = r
                if r.err:
                    log.write(r.err)
                    log.flush()
                    st.feed({"ev": "crash", "error": r.err.strip().splitlines()[-1]})
            except Exception as e:  # the emulator was stopped
                pico.result = e

        threading.Thread(target=runner, daemon=True).start()
    return pico.proc


def attach(fleet, n, baud=None):
    """Run the first n of the fleet's devices on emulated Picos (fleet.pico_names);
    baud: their UART0 rate (default: the board's, 9600)."""
    fleet.pico_names = {"dev-%02d" % (i + 1) for i in range(min(n, fleet.n))}
    fleet.pico_baud = baud
    # the service's retransmission timers run on wall time, an emulated Pico on emulated
    # time (2.5-3x slower than wall on 2 idle cores, more under load): longer service
    # timers keep it from burying a busy device under flights it is still working on
    fleet.service_link = dict(SERVICE_LINK)
    fleet.picos = {}
    unix_start = fleet.start_device

    def start_device(name):
        if name in fleet.pico_names:
            return start_pico_device(fleet, name)
        return unix_start(name)

    fleet.start_device = start_device
    pair_all, gateway = getattr(fleet, "pair_all", None), getattr(fleet, "gateway", None)

    def pair_all_slowly(names, timeout=60):
        # a Pico under load runs at a tenth of real time or less: boot, XBee set-up and
        # the pairing exchange can take minutes of wall time, not the join window's 60 s
        return pair_all(names, timeout=max(timeout, PAIR_WINDOW_S))

    first_seen = {}

    def gateway_patiently(req):
        # the device sends its REVEAL before its console shows the code (50 ms of
        # emulated time, seconds of wall time under load): the person waits a little
        # for a code to appear before refusing it, rather than refusing at once
        if req.get("cmd") == "confirm" and not req.get("accept"):
            t = first_seen.setdefault(req.get("code"), time.time())
            if time.time() - t < REFUSE_AFTER_S:
                return {}
        return gateway(req)

    if pair_all is not None:
        fleet.pair_all, fleet.gateway = pair_all_slowly, gateway_patiently
    return fleet
