"""`make deploy`: `make mpy`, then mpremote creates the package folders on the
device, copies every .mpy, main.py and board_config.json.  mpremote always
runs with `resume` (no soft reset: a soft reset would end a unix port standing
in for a board; on a board, mpremote still interrupts the running program)."""

import json
from pathlib import Path

from host_tools.boards.config import load_board
from host_tools.boards.mpy import MPY_VERSION, build_mpy
from host_tools.boards.tools import check_port, rel, run_all, tool


def mpremote(port, dry_run=False):
    """The mpremote command prefix for `port` (connect, resume)."""
    return [tool("mpremote", required=not dry_run) or "mpremote", "connect", port, "resume"]


def _prepare_code(dirs):
    """Device-side: check the .mpy version, create the package folders, drop
    stale .py sources in them (a .py shadows the .mpy of the same module)."""
    code = (
        "import os, sys\n"
        'if getattr(sys.implementation, "_mpy", 0) & 255 != %d:\n'
        ' raise RuntimeError("this MicroPython cannot load .mpy version %d: flash '
        'MicroPython 1.22 or newer")\n'
        "for d in %s:\n"
        " try: os.mkdir(d)\n"
        " except OSError as e:\n"
        "  if e.args[0] != 17: raise\n"
        " for n in os.listdir(d):\n"
        '  if n.endswith(".py"): os.remove(d + "/" + n)\n'
        % (MPY_VERSION, MPY_VERSION, json.dumps(list(dirs)))
    )
    # json.dumps: a Python string literal with no single quotes (shell-quotes cleanly)
    return "exec(%s)" % json.dumps(code)


def deploy_commands(built, port, dry_run=False):
    """The mpremote commands that put a build_mpy() result on the device."""
    out = Path(built["dir"])
    dirs = sorted({p.parent.as_posix() for p in built["files"] if p.parent != Path(".")})
    mp = mpremote(port, dry_run)
    cmds = [mp + ["exec", _prepare_code(dirs)]]
    by_dir = {}
    for f in built["files"]:
        by_dir.setdefault(f.parent.as_posix(), []).append(rel(out / f))
    for d in sorted(by_dir):
        dest = ":" if d == "." else ":%s/" % d
        cmds.append(mp + ["fs", "cp"] + by_dir[d] + [dest])
    cmds.append(
        mp
        + ["fs", "cp", rel(out / "main.py"), ":main.py"]
        + ["+", "fs", "cp", rel(out / "board_config.json"), ":board_config.json"]
    )
    return cmds


def deploy(board_name, port, dry_run=False):
    board = load_board(board_name)
    check_port(port, dry_run)
    mpremote(port, dry_run)  # fail early when mpremote is missing
    built = build_mpy(board)
    run_all(deploy_commands(built, port, dry_run), dry_run)
    if not dry_run:
        print(
            "deployed %d modules (%d bytes of .mpy), main.py and board_config.json to %s"
            % (built["modules"], built["bytes"], port)
        )
