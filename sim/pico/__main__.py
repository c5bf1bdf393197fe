"""`python -m sim.pico`: run code on an emulated Pico with the firmware deployed.

    python -m sim.pico run-file FILE [--source] [--bare] [--json]
    python -m sim.pico exec 'CODE' [--source] [--bare]
    python -m sim.pico deploy [--source]          (prints the cached flash image)

FILE runs through the raw REPL after boot; the firmware (`atls`) is on the flash as
.mpy for armv6m (as `make deploy` puts it), or as .py with --source; --bare: an
empty filesystem.  Prints the output, then a line with the job's emulated cycles and
ms at 125 MHz and the cycles of each GPIO22 span (Pin(22) high..low in FILE).
Exit status 1 when FILE raised.
"""

import argparse
import json
import sys
from pathlib import Path

from sim.pico.driver import EmulatorError, Pico, deployed


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sim.pico", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run-file", "exec", "deploy"):
        p = sub.add_parser(name)
        if name == "run-file":
            p.add_argument("file")
        elif name == "exec":
            p.add_argument("code")
        p.add_argument("--source", action="store_true", help="firmware as .py, not .mpy")
        p.add_argument("--bare", action="store_true", help="no firmware on the flash")
        p.add_argument("--json", action="store_true", help="one JSON line of results")
        p.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    try:
        flash = None if getattr(a, "bare", False) else deployed(a.source, leave_out=("main.py",))
        if a.cmd == "deploy":
            print(flash)
            return 0
        code = Path(a.file).read_text() if a.cmd == "run-file" else a.code
        with Pico(flash=flash) as pico:
            r = pico.exec(code, timeout=a.timeout, on_out=None if a.json else sys.stdout.write)
    except (EmulatorError, OSError) as e:
        print("sim.pico: %s" % e, file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"out": r.out, "err": r.err, "cycles": r.cycles, "spans": r.spans}))
    else:
        sys.stdout.write(r.err)
        print(
            "[emulated: %d cycles = %.1f ms at 125 MHz; spans %s; wall %.1f s]"
            % (r.cycles, r.ms(), r.spans, r.wall_ms / 1000),
            file=sys.stderr,
        )
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
