"""Reader for the RFC 8448 trace text (tests/vectors/rfc8448.txt).

`Trace(section)` exposes `value(step, label, nth=0)`: the bytes printed under
the nth "{actor}  step" heading of that section whose text contains `step`,
in the field called `label` ("complete record", "private key", ...).
"""

import re
from pathlib import Path

TEXT = (Path(__file__).parent / "vectors" / "rfc8448.txt").read_text()
_SECTIONS = {
    3: ("3.  Simple 1-RTT Handshake", "4.  Resumed 0-RTT Handshake"),
    4: ("4.  Resumed 0-RTT Handshake", "5.  HelloRetryRequest"),
    5: ("5.  HelloRetryRequest", "6.  Client Authentication"),
    6: ("6.  Client Authentication", "7.  Compatibility Mode"),
}
_FIELD = re.compile(r"^\s{6}(\S[^()]*?) \((\d+) octets?\):\s*(.*)$")


def _clean(text):
    # drop page footers/headers (form feeds and the RFC running lines)
    lines = []
    for line in text.splitlines():
        if line.startswith("\f") or line.startswith("RFC 8448") or line.startswith("Thomson"):
            continue
        lines.append(line)
    return lines


class Trace:
    def __init__(self, section):
        start, end = _SECTIONS[section]
        body = TEXT[TEXT.index("\n" + start) + 1 :]
        body = body[: body.index("\n" + end)]
        self.steps = []  # (heading, {label: bytes})
        current = None
        lines = _clean(body)
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("   {"):
                heading = line.strip()
                while not heading.endswith(":") and i + 1 < len(lines) and lines[i + 1].strip():
                    i += 1
                    heading += " " + lines[i].strip()
                current = {}
                self.steps.append((heading, current))
            else:
                mt = _FIELD.match(line)
                if mt and current is not None:
                    label, n, first = mt.group(1), int(mt.group(2)), mt.group(3)
                    hexs = first.split()
                    while len(hexs) < n:
                        i += 1
                        hexs += lines[i].split()
                    current[label] = bytes.fromhex("".join(hexs[:n]))
            i += 1

    def value(self, step, label, nth=0):
        hits = [fields for heading, fields in self.steps if step in heading and label in fields]
        if len(hits) <= nth:
            raise KeyError("%s / %s" % (step, label))
        return hits[nth][label]
