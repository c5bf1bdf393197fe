"""`make mpy`: every firmware module compiled with mpy-cross for a board's
arch into build/<board>/ (package layout kept, main.py stays source), next to
a copy of board_config.json.  Also the figures `make bench` reports: .mpy
bytes per board and the unix port's heap after importing every module."""

import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from host_tools.boards.config import BoardError, ToolError, known_boards, load_board
from host_tools.boards.tools import tail
from host_tools.toolchain import (
    BUILD,
    FIRMWARE,
    ToolMissing,
    compile_mpy,
    micropython_binary,
    mpy_cross_binary,
)

MPY_VERSION = 6  # .mpy format written by mpy-cross >= 1.22 (byte 1 of every .mpy)
# Modules under firmware/ that never go to a device: the CPython crypto
# backend (it imports `cryptography`); skipped when present.
HOST_ONLY = (Path("atls/crypto/cpython.py"),)
# Native code (issue 17): modules named native_* hold viper code and need an
# -march (without one they are left out and the pure fallbacks serve);
# native_*_thumb modules hold inline Thumb assembly, built for these only.
THUMB_ARCHS = ("armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp")


def builds_for(rel, arch):
    """Whether firmware module `rel` (relative path) is compiled for `arch`
    (an mpy-cross -march, or None for bytecode only)."""
    name = Path(rel).name
    if not name.startswith("native_"):
        return True
    if name.endswith("_thumb.py"):
        return arch in THUMB_ARCHS
    return bool(arch)


def firmware_modules(src=FIRMWARE, arch="any"):
    """Every firmware module (relative paths), main.py and host-only modules
    excluded; with `arch` given (None included) only those built for it."""
    src = Path(src)
    skip = {Path("main.py")} | set(HOST_ONLY)
    return sorted(
        p.relative_to(src)
        for p in src.rglob("*.py")
        if "__pycache__" not in p.parts
        and p.relative_to(src) not in skip
        and (arch == "any" or builds_for(p.relative_to(src), arch))
    )


def _compile(rel, src, out, arch):
    try:
        compile_mpy(src / rel, out / rel.with_suffix(".mpy"), rel.as_posix(), arch)
    except subprocess.CalledProcessError as e:
        raise ToolError(
            "mpy-cross %s failed: %s" % (rel.as_posix(), tail((e.stderr or "") + (e.stdout or "")))
        )
    except OSError as e:
        raise ToolError("mpy-cross could not start: %s" % e)


def build_mpy(board, out_root=BUILD, src=FIRMWARE):
    """Compile the firmware for `board` (a name or loaded board) into
    out_root/<board>/: {"dir", "modules", "bytes", "files"}."""
    if isinstance(board, str):
        board = load_board(board)
    try:
        mpy_cross_binary()
    except ToolMissing as e:
        raise BoardError(str(e))
    out = Path(out_root) / board["name"]
    src = Path(src)
    mods = firmware_modules(src, board.get("mpy_arch"))
    for d in {m.parts[0] for m in mods if len(m.parts) > 1}:
        shutil.rmtree(out / d, ignore_errors=True)  # no stale modules from older builds
    for m in mods:
        (out / m).parent.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for f in [ex.submit(_compile, m, src, out, board.get("mpy_arch")) for m in mods]:
            f.result()
    shutil.copyfile(src / "main.py", out / "main.py")
    shutil.copyfile(board["dir"] / "board_config.json", out / "board_config.json")
    files = [m.with_suffix(".mpy") for m in mods]
    total = sum((out / f).stat().st_size for f in files)
    return {"dir": out, "modules": len(files), "bytes": total, "files": files}


def mpy_sizes(boards=None):
    """{board: total .mpy bytes} for every board (or those named), compiled in
    a temporary folder (build/ is left alone).  For `make bench`."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in boards or known_boards():
            res[name] = build_mpy(name, out_root=tmp)["bytes"]
    return res


_IMPORT_ALL = """import gc, json, sys
gc.collect()
base = gc.mem_alloc()
failed = []
for m in sys.argv[1:]:
    try:
        __import__(m)
    except Exception as e:
        failed.append(m + ": " + repr(e))
gc.collect()
print(json.dumps({"bytes": gc.mem_alloc() - base, "failed": failed}))
"""


def import_ram(board="unix", modules=None):
    """Heap (bytes, after gc.collect) that importing every firmware module (or
    the dotted names in `modules`, e.g. ["atls.app"]) takes in the MicroPython
    unix port, from the board's .mpy files: {"bytes", "modules", "failed"}.
    For `make bench`; a 64-bit unix port needs more than a 32-bit MCU."""
    with tempfile.TemporaryDirectory() as tmp:
        b = build_mpy(board, out_root=tmp)
        script = Path(tmp) / "import_all.py"
        script.write_text(_IMPORT_ALL)
        names = modules or [
            ".".join(f.with_suffix("").parts).replace(".__init__", "") for f in b["files"]
        ]
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(b["dir"]))
        p = subprocess.run(
            [micropython_binary(), str(script)] + names,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=120,
        )
        if p.returncode != 0:
            raise ToolError("import_ram: %s" % tail(p.stderr + p.stdout))
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res["modules"] = len(names)
        return res
