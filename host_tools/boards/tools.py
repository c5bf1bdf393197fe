"""The command-line tools the board commands drive (esptool, mpremote, cp,
picotool): where they are, running them with their output echoed, and the
commands of a dry run printed instead."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from host_tools.boards.config import BoardError, ToolError


def rel(path):
    """A path relative to the working directory when it lies below it."""
    path = os.path.abspath(str(path))
    cwd = os.getcwd()
    if path.startswith(cwd + os.sep):
        return os.path.relpath(path, cwd)
    return path


def tool(name, required=True):
    """Path of a command-line tool: next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return rel(here)
    found = shutil.which(name)
    if found:
        return found
    if required:
        raise BoardError("%s not found: `make setup` installs it (pip install %s)" % (name, name))
    return None


def tail(text, n=6):
    """The last n non-empty lines of a tool's output, on one line."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def run(cmd, what=None, echo=True):
    """Run one command, echoing its output; ToolError with the tool's last
    lines when it fails."""
    what = what or os.path.basename(cmd[0])
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise ToolError("%s could not start: %s" % (what, e))
    out = bytearray()
    while True:
        chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read()
        if not chunk:
            break
        out += chunk
        if len(out) > 65536:
            del out[:-32768]
        if echo:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
    rc = proc.wait()
    text = out.decode("utf-8", "replace")
    if rc != 0:
        raise ToolError("%s failed (exit %d): %s" % (what, rc, tail(text)))
    return text


def run_all(cmds, dry_run):
    """Run each command, or with dry_run print it (shell-quoted) instead; a
    string is a comment line, printed on a dry run only."""
    for cmd in cmds:
        if isinstance(cmd, str):
            if dry_run:
                print(cmd)
            continue
        if dry_run:
            print(shlex.join(cmd))
        else:
            run(cmd)


def check_port(port, dry_run):
    if not port:
        raise BoardError(
            "PORT is required: the board's serial port, e.g. PORT=/dev/ttyUSB0 "
            "(ESP32) or PORT=/dev/ttyACM0 (Pico W)"
        )
    if not dry_run and port.startswith("/") and not os.path.exists(port):
        raise BoardError(
            "PORT %s is not present: is the board plugged in? (serial ports: "
            "`mpremote devs`)" % port
        )
