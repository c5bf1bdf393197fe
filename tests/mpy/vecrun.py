"""MicroPython side of vector tests: stream test rows from a file so that even
large vector sets run inside a 32 KiB heap.

Each row is one line of space-separated fields; hex fields are decoded by the
caller with `unhex`.  A script reports with `report(ok, failures)`, whose last
line of output is JSON read back by pytest.
"""

import sys
from binascii import unhexlify


def unhex(s):
    return b"" if s == "-" else unhexlify(s)


def rows(path=None):
    """Yield (index, fields) for each line of the row file (argv[1])."""
    path = path or sys.argv[1]
    i = 0
    with open(path) as f:
        while True:
            line = f.readline()
            if not line:
                break
            line = line.strip()
            if line:
                yield i, line.split(" ")
                i += 1


class Tally:
    def __init__(self):
        self.ok = 0
        self.failed = []

    def check(self, index, cond, why=""):
        if cond:
            self.ok += 1
        else:
            self.failed.append(index)
            print("FAIL", index, why)

    def report(self):
        print('{"ok": %d, "failed": %s}' % (self.ok, self.failed[:50]))
