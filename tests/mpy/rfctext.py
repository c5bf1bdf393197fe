"""Parsers for the test vectors printed in RFC texts (tests/vectors/rfc*.txt).

Used by the CPython side of the tests to build rows (and to check that values
transcribed into the tests really are the RFC's); plain string operations
only, so the module is also valid MicroPython.

- rfc4231_cases(text)  RFC 4231 §4.2-§4.8: [{"Key", "Data", "HMAC-SHA-256", ...}]
- rfc5869_cases(text)  RFC 5869 §A.1-§A.7: [{"title", "Hash", "IKM", "salt",
                       "info", "L", "PRK", "OKM"}]
- rfc8448_steps(text, section)  RFC 8448 trace steps of one section as
                       [(heading, {field: bytes})], heading e.g.
                       '{server}  derive secret "tls13 c hs traffic":'
"""

from binascii import unhexlify


def _pages(text):
    """Lines without page headers/footers and form feeds."""
    out = []
    for line in text.replace("\f", "\n").split("\n"):
        s = line.strip()
        if s.startswith("RFC ") and "   " in s and s[-4:].isdigit():
            continue  # running header, e.g. "RFC 8448   TLS 1.3 Traces   January 2019"
        if s.endswith("]") and "[Page " in s:
            continue  # running footer
        out.append(line.rstrip())
    return out


def _is_hex(s):
    if not s or len(s) % 2:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def _section(lines, start, stops):
    """Lines from the one that starts with `start` to the next one starting
    with any of `stops` (table-of-contents lines are skipped: they contain
    dot leaders)."""
    out = None
    for line in lines:
        if out is None:
            if line.startswith(start) and ". ." not in line:
                out = []
            continue
        for s in stops:
            if line.startswith(s):
                return out
        out.append(line)
    return out or []


def rfc4231_cases(text):
    lines = _pages(text)
    cases = []
    for n in range(1, 8):
        body = _section(lines, "4.%d.  Test Case %d" % (n + 1, n), ("4.", "5."))
        case = {}
        name = None
        for line in body:
            if not line.startswith("   ") or not line.strip():
                name = None
                continue
            if not line.startswith("    "):  # a new field, e.g. "   Key =  0b0b.."
                words = line.split()
                name = words[0]
                rest = words[1:]
                if rest and rest[0] == "=":
                    rest = rest[1:]
                if not rest or not _is_hex(rest[0]):
                    name = None  # prose
                    continue
                case[name] = rest[0]
            elif name is not None:
                word = line.split()[0]
                if _is_hex(word):
                    case[name] += word
        cases.append(dict((k, unhexlify(v)) for k, v in case.items()))
    return cases


def rfc5869_cases(text):
    lines = _pages(text)
    cases = []
    for n in range(1, 8):
        body = _section(lines, "A.%d.  Test Case %d" % (n, n), ("A.", "B.", "Authors"))
        case = {"title": body[0].strip() if body else ""}
        name = None
        for line in body:
            s = line.strip()
            if "=" in s and s.split()[0] in ("Hash", "IKM", "salt", "info", "L", "PRK", "OKM"):
                name, val = s.split("=", 1)
                name = name.strip()
                val = val.strip()
                if name in ("Hash", "L"):
                    case[name] = val
                    name = None
                    continue
                case[name] = val[2:].split()[0] if val.startswith("0x") else ""
            elif name is not None and s and _is_hex(s.split()[0]):
                case[name] += s.split()[0]
            else:
                name = None
        for k in ("IKM", "salt", "info", "PRK", "OKM"):
            case[k] = unhexlify(case[k])
        case["L"] = int(case["L"])
        cases.append(case)
    return cases


def rfc8448_steps(text, section):
    """Trace steps of RFC 8448 section `section` ("3", "4", ...)."""
    lines = _pages(text)
    heads = {
        "3": "3.  Simple 1-RTT",
        "4": "4.  Resumed 0-RTT",
        "5": "5.  HelloRetryRequest",
        "6": "6.  Client Authentication",
        "7": "7.  Compatibility Mode",
    }
    body = _section(lines, heads[section], ("%d.  " % (int(section) + 1),))
    steps = []
    sizes = {}
    heading = None
    fields = None
    name = None
    for line in body:
        s = line.strip()
        if line.startswith("   {"):
            heading = s
            fields = {}
            steps.append((heading, fields))
            name = None
        elif fields is None or not s:
            continue
        elif line.startswith("      ") and not line.startswith("       ") and "octets):" in s:
            name, rest = s.split("(", 1)
            name = name.strip()
            count, rest = rest.split("):", 1)
            sizes[(len(steps), name)] = int(count.split()[0])
            rest = rest.strip()
            fields[name] = bytearray()
            if rest != "(empty)":
                fields[name].extend(unhexlify(rest.replace(" ", "")))
        elif name is not None and line.startswith("         ") and _is_hex(s.replace(" ", "")):
            fields[name].extend(unhexlify(s.replace(" ", "")))
        elif not fields and name is None and ":" not in s:
            # a wrapped heading such as '{client}  extract secret "handshake" (same
            # as server handshake secret)'
            steps[-1] = (steps[-1][0] + " " + s, fields)
        else:
            name = None
    for (i, name), n in sizes.items():
        if len(steps[i - 1][1][name]) != n:
            raise ValueError("RFC 8448 parse: %s %s" % (steps[i - 1][0], name))
    return [(h, dict((k, bytes(v)) for k, v in f.items())) for h, f in steps]
