"""The fuzz sample under the MicroPython unix port.

    micropython tests/fuzz/mpy_main.py corpus.json SEED name=N [name=N ...]
(MICROPYPATH: firmware/ and tests/).  Prints one JSON line per target:
{"target", "inputs", "ok", "errors", "failures", "seconds"}; failure inputs
as hex.
"""

import json
import sys
from binascii import hexlify

from fuzz.runner import build_targets, dec, fuzz


def main(argv):
    with open(argv[1]) as f:
        corpus = dec(json.load(f))
    seed = int(argv[2])
    plan = []
    for a in argv[3:]:
        name, n = a.split("=")
        plan.append((name, int(n)))
    targets = build_targets(corpus, [p[0] for p in plan])
    for name, n in plan:
        st = fuzz(targets[name], n, seed)
        for fl in st["failures"]:
            fl["input"] = hexlify(fl["input"]).decode()
        st["target"] = name
        print(json.dumps(st))


main(sys.argv)
