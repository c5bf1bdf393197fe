"""Host side only (CPython, pytest): run firmware modules under the MicroPython
unix port *precompiled by mpy-cross*, as they are shipped to a device.

compiled(mpy, tmpdir, modules) compiles each firmware module (a path below
firmware/, e.g. "atls/crypto/p256.py") plus the row helpers vecrun.py and
pkrows.py into tmpdir and returns a conftest.MicroPython whose path puts
tmpdir first.  side_files(rows, tmpdir) moves long bytes fields of a row set
into files named "@path" (read back by pkrows.field on the device side)."""

import subprocess
from pathlib import Path

import conftest

ROW_HELPERS = ("vecrun.py", "pkrows.py")
BASE = ["atls/__init__.py", "atls/errors.py", "atls/crypto/__init__.py", "atls/crypto/backend.py"]


def compiled(mpy, out, modules):
    out = Path(out)
    cross = Path(mpy.binary).with_name("mpy-cross")
    srcs = [(conftest.FIRMWARE / m, m) for m in BASE + list(modules)]
    srcs += [(conftest.TESTS / "mpy" / m, m) for m in ROW_HELPERS]
    for src, rel in srcs:
        dst = out / (rel[:-3] + ".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(cross), "-o", str(dst), str(src)], check=True)
    return conftest.MicroPython(mpy.binary, [".frozen", str(out), str(conftest.TESTS / "mpy")])


def side_files(rows, out, limit=512):
    """Bytes fields longer than `limit` go to files, the row holds "@path"."""
    res = []
    for i, row in enumerate(rows):
        new = []
        for j, v in enumerate(row):
            if isinstance(v, (bytes, bytearray)) and len(v) > limit:
                path = Path(out) / ("f%d_%d.bin" % (i, j))
                path.write_bytes(bytes(v))
                v = "@" + str(path)
            new.append(v)
        res.append(new)
    return res
