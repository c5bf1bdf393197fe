"""atls.crypto.drbg: HMAC_DRBG with SHA-256 (NIST SP 800-90A Rev.1 §10.1.2).

Vectors: NIST CAVP HMAC_DRBG.rsp, [SHA-256], PredictionResistance = False,
from drbgvectors_no_reseed (Instantiate, Generate, Generate) and
drbgvectors_pr_false (Instantiate, Reseed, Generate, Generate), with and
without personalization string and additional input
(tests/vectors/hmac_drbg_sha256.txt, provenance in tests/vectors/README.md).
Every vector runs under CPython, under the MicroPython unix port compiled from
source (32 KiB heap) and from .mpy files; a differential test compares random
requests with an independent reference built on CPython's `hmac`.
"""

import hmac as std_hmac
import random
import re

import pytest

from atls.crypto.drbg import HmacDrbg
from atls.errors import UsageError

H = bytes.fromhex
FIELDS = (
    "EntropyInput",
    "Nonce",
    "PersonalizationString",
    "EntropyInputReseed",
    "AdditionalInputReseed",
    "AdditionalInput",
    "AdditionalInput",
    "ReturnedBits",
)


def parse_rsp(text):
    """CAVP .rsp text -> list of cases {file, section, COUNT, fields..., add}.
    "# FILE = x" comment lines name the .rsp file the following sections
    come from; other comments are skipped."""
    cases, section, header, fname = [], {}, False, None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"# FILE = (\S+)$", line)
        if m:
            fname = m.group(1)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"\[(.+?)(?: = (.*))?\]$", line)
        if m:
            if not header:
                section, header = {}, True
            section[m.group(1)] = m.group(2)
            continue
        header = False
        key, _, value = (s.strip() for s in line.partition("="))
        if key == "COUNT":
            cases.append({"file": fname, "section": dict(section), "COUNT": int(value), "add": []})
        elif key == "AdditionalInput":
            cases[-1]["add"].append(H(value))
        else:
            cases[-1][key] = H(value)
    return cases


def rebuild(case):
    """The .rsp text of one COUNT entry, as CAVP prints it ("Name = " with a
    trailing space when the value is empty)."""
    out = ["COUNT = %d" % case["COUNT"]]
    for name in ("EntropyInput", "Nonce", "PersonalizationString"):
        out.append("%s = %s" % (name, case[name].hex()))
    if "EntropyInputReseed" in case:
        out.append("EntropyInputReseed = %s" % case["EntropyInputReseed"].hex())
        out.append("AdditionalInputReseed = %s" % case["AdditionalInputReseed"].hex())
    out += ["AdditionalInput = %s" % a.hex() for a in case["add"]]
    out.append("ReturnedBits = %s" % case["ReturnedBits"].hex())
    return "\n".join(out)


@pytest.fixture(scope="module")
def cavp(vectors):
    text = vectors("hmac_drbg_sha256.txt")
    cases = parse_rsp(text)
    # both ways: every parsed entry prints back to the bytes of the file
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip().startswith("COUNT")]
    assert [rebuild(c) for c in cases] == blocks
    return cases


def run_case(c):
    d = HmacDrbg(c["EntropyInput"], c["Nonce"], c["PersonalizationString"])
    if "EntropyInputReseed" in c:
        d.reseed(c["EntropyInputReseed"], c["AdditionalInputReseed"])
    n = len(c["ReturnedBits"])
    d.generate(n, c["add"][0])
    return d.generate(n, c["add"][1])


def test_vector_file_covers_every_pr_false_variant(cavp):
    """Field lengths agree with their section headers, and the selection
    covers no reseed / reseed x personalization x additional input."""
    kinds = set()
    for c in cavp:
        s = c["section"]
        assert "SHA-256" in s and s["PredictionResistance"] == "False"
        assert len(c["EntropyInput"]) * 8 == int(s["EntropyInputLen"])
        assert len(c["Nonce"]) * 8 == int(s["NonceLen"])
        assert len(c["PersonalizationString"]) * 8 == int(s["PersonalizationStringLen"])
        assert [len(a) * 8 for a in c["add"]] == [int(s["AdditionalInputLen"])] * 2
        assert len(c["ReturnedBits"]) * 8 == int(s["ReturnedBitsLen"])
        reseed = "EntropyInputReseed" in c
        assert reseed == (c["file"] == "drbgvectors_pr_false/HMAC_DRBG.rsp")
        if reseed:
            assert len(c["EntropyInputReseed"]) * 8 == int(s["EntropyInputLen"])
            assert len(c["AdditionalInputReseed"]) * 8 == int(s["AdditionalInputLen"])
        kinds.add((reseed, bool(c["PersonalizationString"]), bool(c["add"][0])))
    assert len(cavp) >= 6
    assert kinds >= {(r, p, a) for r in (0, 1) for p, a in ((0, 0), (0, 1), (1, 1))}


def test_sp800_90a_10_1_2_cavp_hmac_drbg_sha256(cavp):
    for c in cavp:
        assert run_case(c) == c["ReturnedBits"], (c["file"], c["section"], c["COUNT"])


# --------------------------------------------------------------------------
# MicroPython: the same vectors, row by row.
#   v  entropy nonce pers reseed_entropy reseed_add add1 add2 expected
#      ("-" = empty; an empty reseed_entropy means no Reseed call)
#   x  the UsageError cases (reseed due, request size, short entropy)
MPY_DRBG = """
import gc
from vecrun import rows, unhex, Tally
from atls.crypto.drbg import HmacDrbg
from atls.errors import UsageError

def refused(f):
    try:
        f()
    except UsageError:
        return True
    return False

t = Tally()
for i, f in rows():
    gc.collect()
    if f[0] == "v":
        d = HmacDrbg(unhex(f[1]), unhex(f[2]), unhex(f[3]))
        if f[4] != "-":
            d.reseed(unhex(f[4]), unhex(f[5]))
        want = unhex(f[8])
        d.generate(len(want), unhex(f[6]))
        t.check(i, d.generate(len(want), unhex(f[7])) == want, "vector")
    elif f[0] == "x":
        d = HmacDrbg(bytes(32), bytes(16), b"", 2)
        ok = len(d.generate(0)) == 0 and len(d.generate(33)) == 33 and d.reseed_due
        ok = ok and refused(lambda: d.generate(1)) and refused(lambda: d.generate(65537))
        d.reseed(bytes(32))
        ok = ok and not d.reseed_due and len(d.generate(1000)) == 1000
        ok = ok and refused(lambda: d.reseed(bytes(31)))
        ok = ok and refused(lambda: HmacDrbg(bytes(32), bytes(15)))
        t.check(i, ok, "usage")
    else:
        t.check(i, False, "unknown row kind")
t.report()
"""


def mpy_rows(cases):
    rows = []
    for c in cases:
        rows.append(
            [
                "v",
                c["EntropyInput"],
                c["Nonce"],
                c["PersonalizationString"],
                c.get("EntropyInputReseed", b""),
                c.get("AdditionalInputReseed", b""),
                c["add"][0],
                c["add"][1],
                c["ReturnedBits"],
            ]
        )
    return rows + [["x"]]


def test_cavp_vectors_under_micropython(mpy, cavp):
    # from source: the compiler needs heap of its own (the .mpy run below is the 32K one)
    rows = mpy_rows(cavp)
    assert mpy.run_rows(MPY_DRBG, rows, heapsize="48K") == {"ok": len(rows), "failed": []}


def test_cavp_vectors_under_micropython_mpy(mpyc, cavp):
    rows = mpy_rows(cavp)
    assert mpyc.run_rows(MPY_DRBG, rows, heapsize="32K") == {"ok": len(rows), "failed": []}


# --------------------------------------------------------------------------
# State machine (§9.3.1 Generate: reseed required; Table 2 limits)


def test_generate_refuses_once_reseed_interval_is_spent():
    d = HmacDrbg(bytes(32), bytes(16), reseed_interval=3)
    for _ in range(3):
        assert not d.reseed_due
        d.generate(16)
    assert d.reseed_due and d.reseed_counter == 4
    with pytest.raises(UsageError, match="reseed required"):
        d.generate(16)
    d.reseed(b"\x01" * 32)
    assert not d.reseed_due and d.reseed_counter == 1
    assert len(d.generate(16)) == 16


def test_request_and_input_limits():
    d = HmacDrbg(bytes(32), bytes(16))
    assert len(d.generate(65536)) == 65536  # 2^19 bits
    with pytest.raises(UsageError):
        d.generate(65537)
    with pytest.raises(UsageError):
        d.generate(-1)
    with pytest.raises(UsageError):
        d.reseed(bytes(31))
    with pytest.raises(UsageError):
        HmacDrbg(bytes(31), bytes(16))
    with pytest.raises(UsageError):
        HmacDrbg(bytes(32), bytes(15))
    for bad in (0, (1 << 48) + 1):
        with pytest.raises(UsageError):
            HmacDrbg(bytes(32), bytes(16), reseed_interval=bad)


class Reference:
    """SP 800-90A §10.1.2 written out again over CPython's hmac (test oracle)."""

    def __init__(self, seed):
        self.k, self.v = bytes(32), b"\x01" * 32
        self.update(seed)

    def mac(self, k, m):
        return std_hmac.new(k, m, "sha256").digest()

    def update(self, data):
        self.k = self.mac(self.k, self.v + b"\x00" + data)
        self.v = self.mac(self.k, self.v)
        if data:
            self.k = self.mac(self.k, self.v + b"\x01" + data)
            self.v = self.mac(self.k, self.v)

    def generate(self, n, add):
        if add:
            self.update(add)
        out = b""
        while len(out) < n:
            self.v = self.mac(self.k, self.v)
            out += self.v
        self.update(add)
        return out[:n]


def test_differential_against_reference_implementation():
    rnd = random.Random(800_90)
    for _ in range(40):
        e, nonce = rnd.randbytes(rnd.randint(32, 80)), rnd.randbytes(rnd.randint(16, 40))
        pers = rnd.randbytes(rnd.choice((0, 1, 32, 100)))
        d, ref = HmacDrbg(e, nonce, pers), Reference(e + nonce + pers)
        for _ in range(5):
            if rnd.random() < 0.3:
                fresh, add = rnd.randbytes(32), rnd.randbytes(rnd.choice((0, 7, 32)))
                d.reseed(fresh, add)
                ref.update(fresh + add)
            n = rnd.choice((0, 1, 16, 31, 32, 33, 64, 100, 1000))
            add = rnd.randbytes(rnd.choice((0, 0, 5, 32)))
            assert d.generate(n, add) == ref.generate(n, add)
