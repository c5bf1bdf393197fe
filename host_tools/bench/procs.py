"""Helper processes of the system sections: start-up, shutdown and what
/proc says about them (CPU time, resident memory)."""

import os
import signal
import subprocess
import time
from pathlib import Path

# asyncio's datagram transport calls recvfrom(256 KiB) for every datagram.  With
# glibc's default (dynamic) mmap threshold, a process either mmaps, faults in and
# unmaps that buffer per datagram (~3x the cost) or takes it from its heap,
# depending on its allocation history: pinning the threshold puts the gateway
# and the relay in the same regime (docs/BENCHMARKS.md).
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def proc_cpu_s(pid):
    """utime + stime of a process, seconds (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """{'VmHWM': kB, 'VmRSS': kB} of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            out = {}
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
            return out
    except (OSError, ValueError):
        return None


def wait_path(path, proc, what, timeout=20, poll=None):
    """The stripped text of a ready file once `proc` has written it; calls
    `poll()` while waiting; RuntimeError if proc exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if poll:
            poll()
        if Path(path).exists() and Path(path).read_text().strip():
            return Path(path).read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError("%s exited early (code %s)" % (what, proc.returncode))
        time.sleep(0.02)
    raise RuntimeError("%s did not start" % what)


def stop(proc):
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
