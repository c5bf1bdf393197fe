"""atls.crypto.hkdf: HMAC-SHA-256, HKDF (RFC 5869) and the TLS 1.3 key-schedule
helpers (RFC 8446 §7.1).

Every vector set runs twice: under CPython (the pure module; hkdf has no
native switch) and under the MicroPython unix port with a 32 KiB heap, fed
row by row through tests/mpy/vecrun.py.  Sources:
  RFC 4231 §4.2-§4.8   HMAC-SHA-256 test cases 1-7 (parsed from rfc4231.txt)
  Wycheproof           hmac_sha256_test.json (174), hkdf_sha256_test.json (86)
  RFC 5869 §A.1-§A.3   HKDF-SHA-256 test cases (parsed from rfc5869.txt)
  RFC 8448 §3-§7       every HKDF-Extract / Derive-Secret / traffic-key step of
                       the traces (parsed from rfc8448.txt), plus the §3 key
                       schedule transcribed below and recomputed as a chain
  differential         random inputs vs CPython's hmac and cryptography's HKDF
"""

import hashlib
import hmac as std_hmac
import os
import random
import struct
import sys

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from atls.crypto.hkdf import (
    HASH_LEN,
    derive_secret,
    hkdf_expand,
    hkdf_expand_label,
    hkdf_extract,
    hmac_sha256,
)
from atls.errors import UsageError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "mpy"))
from rfctext import rfc4231_cases, rfc5869_cases, rfc8448_steps  # noqa: E402

H = bytes.fromhex
EMPTY_HASH = hashlib.sha256(b"").digest()
LENGTHS = (0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1025, 1200, 1500)

# --------------------------------------------------------------------------
# MicroPython side: one script evaluates every row kind.
#   mac    key msg tag valid          HMAC (memoryview input), tag prefix
#   hkdf   ikm salt info size prk okm mode   mode v: okm, h: sha256(okm), x: UsageError
#   ext    salt ikm prk               HKDF-Extract ("-" salt = empty = default)
#   label  secret label ctx len out   HKDF-Expand-Label
#   derive secret label hash out      Derive-Secret
MPY_KDF = """
import gc
BUF = (bytearray(1536), bytearray(1536))  # allocated first, while the heap is unfragmented
from vecrun import rows, unhex, Tally
from atls.crypto.hkdf import hmac_sha256, hkdf_extract, hkdf_expand
from atls.crypto.hkdf import hkdf_expand_label, derive_secret
from atls.errors import UsageError
from hashlib import sha256



def val(s, slot=0):
    # hex, or "g<len>:<seed>" = the first len bytes of SHA-256(seed || i16) for
    # i = 0, 1, ... (large inputs without long row lines; mirrors gen() in
    # pytest), built in BUF[slot] and returned as a memoryview
    if s[0] != "g":
        return unhex(s)
    n, seed = s[1:].split(":")
    n = int(n)
    seed = unhex(seed)
    out = BUF[slot]
    i = 0
    while 32 * i < n:
        b = sha256(seed + bytes((i >> 8, i & 255))).digest()
        out[32 * i:32 * i + 32] = b[:n - 32 * i]
        i += 1
    return memoryview(out)[:n]


t = Tally()
for i, f in rows():
    gc.collect()
    k = f[0]
    if k == "mac":
        key = val(f[1], 0); msg = val(f[2], 1); tag = unhex(f[3])
        m = hmac_sha256(key, msg)
        t.check(i, (m[:len(tag)] == tag) == (f[4] == "1") and hmac_sha256(key, memoryview(msg)) == m, "mac")
    elif k == "hkdf":
        ikm = val(f[1], 0); salt = val(f[2], 1); info = unhex(f[3]); size = int(f[4])
        prk = hkdf_extract(salt, ikm)
        if f[7] == "x":
            try:
                hkdf_expand(prk, info, size)
                t.check(i, False, "no UsageError")
            except UsageError:
                t.check(i, True)
        else:
            okm = hkdf_expand(prk, info, size)
            if f[7] == "h":
                okm = sha256(okm).digest()
            t.check(i, (f[5] == "-" or prk == unhex(f[5])) and okm == unhex(f[6]), "hkdf")
    elif k == "ext":
        t.check(i, hkdf_extract(unhex(f[1]), unhex(f[2])) == unhex(f[3]), "extract")
    elif k == "label":
        out = hkdf_expand_label(unhex(f[1]), unhex(f[2]), unhex(f[3]), int(f[4]))
        t.check(i, out == unhex(f[5]), "label")
    elif k == "derive":
        t.check(i, derive_secret(unhex(f[1]), unhex(f[2]), unhex(f[3])) == unhex(f[4]), "derive")
    else:
        t.check(i, False, "unknown row kind")
t.report()
"""
_GEN = {}  # generated value -> its "g<len>:<seed>" row spelling


def gen(seed, n):
    """Deterministic filler for large fields (the MicroPython side rebuilds it
    from a short spec, so no row line exceeds a few KiB in the 32 KiB heap)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + bytes((i >> 8, i & 255))).digest()
        i += 1
    v = bytes(out[:n])
    _GEN[v] = "g%d:%s" % (n, seed.hex())
    return v


def mpy_fields(rows):
    return [[_GEN.get(v, v) if isinstance(v, bytes) else v for v in r] for r in rows]


def hkdf_label_info(label, context, length):
    """Independent HkdfLabel encoding (RFC 8446 §7.1) for cross-checks."""
    full = b"tls13 " + label
    return struct.pack(">HB", length, len(full)) + full + bytes([len(context)]) + context


def run_mpy(mpy, rows):
    summary = mpy.run_rows(MPY_KDF, mpy_fields(rows), heapsize="32K")
    assert summary == {"ok": len(rows), "failed": []}
    return summary


# --------------------------------------------------------------------------
# RFC 4231 §4 HMAC-SHA-256


@pytest.fixture(scope="module")
def rfc4231(vectors):
    cases = rfc4231_cases(vectors("rfc4231.txt"))
    assert len(cases) == 7
    # spot-check the parser against RFC 4231 §4.3 (test case 2), transcribed
    assert cases[1]["Key"] == b"Jefe"
    assert cases[1]["Data"] == b"what do ya want for nothing?"
    assert cases[1]["HMAC-SHA-256"] == H(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert [len(c["Key"]) for c in cases] == [20, 4, 20, 25, 20, 131, 131]
    assert len(cases[4]["HMAC-SHA-256"]) == 16  # §4.6: truncated to 128 bits
    return cases


def rfc4231_rows(cases):
    return [["mac", c["Key"], c["Data"], c["HMAC-SHA-256"], 1] for c in cases]


def test_rfc4231_s4_hmac_sha256_cases_1_to_7(rfc4231):
    for n, c in enumerate(rfc4231, 1):
        tag = c["HMAC-SHA-256"]
        assert hmac_sha256(c["Key"], c["Data"])[: len(tag)] == tag, "test case %d" % n


def test_rfc4231_s4_under_micropython(mpy, rfc4231):
    run_mpy(mpy, rfc4231_rows(rfc4231))


# --------------------------------------------------------------------------
# Wycheproof hmac_sha256_test.json


@pytest.fixture(scope="module")
def wp_hmac(vectors):
    data = vectors("hmac_sha256_test.json")
    tests = []
    for g in data["testGroups"]:
        for t in g["tests"]:
            assert len(t["tag"]) * 4 == g["tagSize"]
            tests.append(t)
    assert len(tests) == data["numberOfTests"] == 174
    return tests


def test_wycheproof_hmac_sha256_all(wp_hmac):
    """Valid tags equal the (possibly truncated) MAC; invalid (ModifiedTag)
    ones never match."""
    counts = {"valid": 0, "invalid": 0}
    for t in wp_hmac:
        tag = H(t["tag"])
        mac = hmac_sha256(H(t["key"]), H(t["msg"]))
        assert (mac[: len(tag)] == tag) == (t["result"] == "valid"), "tcId %d" % t["tcId"]
        counts[t["result"]] += 1
    assert counts == {"valid": 66, "invalid": 108}


def test_wycheproof_hmac_sha256_under_micropython(mpy, wp_hmac):
    rows = [
        ["mac", H(t["key"]), H(t["msg"]), H(t["tag"]), int(t["result"] == "valid")] for t in wp_hmac
    ]
    run_mpy(mpy, rows)


def test_hmac_accepts_bytearray_and_memoryview():
    key, msg = bytearray(os.urandom(70)), bytearray(os.urandom(300))
    want = std_hmac.digest(bytes(key), bytes(msg), "sha256")
    assert hmac_sha256(key, memoryview(msg)) == want
    assert hmac_sha256(memoryview(key), msg) == want


# --------------------------------------------------------------------------
# RFC 5869 Appendix A (SHA-256 cases A.1-A.3)


@pytest.fixture(scope="module")
def rfc5869(vectors):
    cases = [c for c in rfc5869_cases(vectors("rfc5869.txt")) if c["Hash"] == "SHA-256"]
    assert len(cases) == 3
    # RFC 5869 §A.1 OKM, transcribed, to check the parser
    assert cases[0]["OKM"] == H(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert cases[2]["salt"] == b"" and cases[2]["info"] == b""  # §A.3
    return cases


def test_rfc5869_appendix_a1_to_a3(rfc5869):
    for c in rfc5869:
        prk = hkdf_extract(c["salt"], c["IKM"])
        assert prk == c["PRK"], c["title"]
        assert hkdf_expand(prk, c["info"], c["L"]) == c["OKM"], c["title"]
    a3 = rfc5869[2]  # zero-length salt: None, b"" and 32 zero bytes agree (§2.2)
    assert hkdf_extract(None, a3["IKM"]) == hkdf_extract(bytes(32), a3["IKM"]) == a3["PRK"]


def test_rfc5869_appendix_a_under_micropython(mpy, rfc5869):
    rows = [
        ["hkdf", c["IKM"], c["salt"], c["info"], c["L"], c["PRK"], c["OKM"], "v"] for c in rfc5869
    ]
    run_mpy(mpy, rows)


# --------------------------------------------------------------------------
# Wycheproof hkdf_sha256_test.json


@pytest.fixture(scope="module")
def wp_hkdf(vectors):
    data = vectors("hkdf_sha256_test.json")
    tests = [t for g in data["testGroups"] for t in g["tests"]]
    assert len(tests) == data["numberOfTests"] == 86
    for t in tests:  # the only invalid results are output sizes above 255*32
        assert (t["result"] == "invalid") == ("SizeTooLarge" in t["flags"])
    return tests


def test_wycheproof_hkdf_sha256_all(wp_hkdf):
    n_invalid = 0
    for t in wp_hkdf:
        salt, ikm, info, size = H(t["salt"]), H(t["ikm"]), H(t["info"]), t["size"]
        if t["result"] == "invalid":
            assert size > 255 * HASH_LEN
            with pytest.raises(UsageError):
                hkdf_expand(hkdf_extract(salt, ikm), info, size)
            n_invalid += 1
        else:
            okm = hkdf_expand(hkdf_extract(salt, ikm), info, size)
            assert okm == H(t["okm"]), "tcId %d" % t["tcId"]
    assert n_invalid == 3


def test_wycheproof_hkdf_sha256_under_micropython(mpy, wp_hkdf):
    rows = []
    for t in wp_hkdf:
        okm = H(t["okm"])
        mode = "x" if t["result"] == "invalid" else "v"
        if mode == "v" and len(okm) > 512:  # keep row lines small for the 32K heap
            okm, mode = hashlib.sha256(okm).digest(), "h"
        rows.append(["hkdf", H(t["ikm"]), H(t["salt"]), H(t["info"]), t["size"], b"", okm, mode])
    big = [r for r in rows if r[-1] == "h"]
    assert len(big) == 3  # tcId 24, 47, 73 (MaximalOutputSize): 8160-byte outputs
    run_mpy(mpy, [r for r in rows if r[-1] != "h"])
    # An 8160-byte result cannot be allocated in the 32 KiB heap at all: after
    # the imports its largest free block is < 8 KB.  So these three run with 64K.
    summary = mpy.run_rows(MPY_KDF, big, heapsize="64K")
    assert summary == {"ok": 3, "failed": []}


def test_hkdf_expand_length_limits():
    prk = os.urandom(32)
    assert hkdf_expand(prk, b"", 0) == b""
    full = hkdf_expand(prk, b"info", 255 * 32)
    assert len(full) == 8160
    assert hkdf_expand(prk, b"info", 33) == full[:33]  # prefixes are consistent
    for bad in (-1, 8161, 10000):
        with pytest.raises(UsageError):
            hkdf_expand(prk, b"info", bad)


# --------------------------------------------------------------------------
# RFC 8448 §3 key schedule, transcribed.  Keys name the trace step
# ("{server}  <heading>") and the field read from it.
RFC8448_S3 = {
    # {server}  extract secret "early": IKM (32 zero octets), salt 0
    "early": "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a",
    # {server}  derive secret for handshake "tls13 derived": expanded
    "derived_hs": "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba",
    # {server}  extract secret "handshake": IKM (the x25519 ECDHE shared secret)
    "ecdhe": "8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d",
    # {server}  extract secret "handshake": secret
    "handshake": "1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac",
    # {server}  derive secret "tls13 c hs traffic": hash (ClientHello..ServerHello)
    "hash_ch_sh": "860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8",
    # {server}  derive secret "tls13 c hs traffic": expanded
    "c_hs": "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21",
    # {server}  derive secret "tls13 s hs traffic": expanded
    "s_hs": "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38",
    # {server}  derive secret for master "tls13 derived": expanded
    "derived_ms": "43de77e0c77713859a944db9db2590b53190a65b3ee2e4f12dd7a0bb7ce254b4",
    # {server}  extract secret "master": secret
    "master": "18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919",
    # {server}  derive write traffic keys for handshake data: key / iv expanded
    "s_hs_key": "3fce516009c21727d0f2e4e86ee403bc",
    "s_hs_iv": "5d313eb2671276ee13000b30",
    # {server}  derive read traffic keys for handshake data: key / iv expanded
    "c_hs_key": "dbfaa693d1762c5b666af5d950258d01",
    "c_hs_iv": "5bd3c71b836e0b76bb73265f",
    # {server}  calculate finished "tls13 finished": expanded (finished_key)
    "s_finished_key": "008d3b66f816ea559f96b537e885c31fc068bf492c652f01f288a1d8cdc19fc8",
    # {server}  derive secret "tls13 c ap traffic": hash (ClientHello..server Finished)
    "hash_ch_sf": "9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13",
    # {server}  derive secret "tls13 c ap traffic" / "tls13 s ap traffic" /
    # "tls13 exp master": expanded
    "c_ap": "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
    "s_ap": "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
    "exp_master": "fe22f881176eda18eb8f44529e6792c50c9a3f89452f68d8ae311b4309d3cf50",
    # {server}  derive write traffic keys for application data: key / iv expanded
    "s_ap_key": "9f02283b6c9c07efc26bb9f2ac92e356",
    "s_ap_iv": "cf782b88dd83549aadf1e984",
    # {client}  derive write traffic keys for application data: key / iv expanded
    "c_ap_key": "17422dda596ed5d9acd890e3c63f5051",
    "c_ap_iv": "5b78923dee08579033e523d9",
    # {client}  calculate finished "tls13 finished": expanded (finished_key)
    "c_finished_key": "b80ad01015fb2f0bd65ff7d4da5d6bf83f84821d1f87fdc7d3c75b5a7b42d9c4",
    # {client}  calculate finished "tls13 finished": finished (HMAC over hash_ch_sf)
    "c_finished": "a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61",
    # {client}  derive secret "tls13 res master": hash (ClientHello..client Finished)
    "hash_ch_cf": "209145a96ee8e2a122ff810047cc952684658d6049e86429426db87c54ad143d",
    # {client}  derive secret "tls13 res master": expanded
    "res_master": "7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c",
    # {server}  generate resumption secret "tls13 resumption": hash (ticket_nonce) / expanded
    "ticket_nonce": "0000",
    "resumption": "4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3",
}
V = {k: H(v) for k, v in RFC8448_S3.items()}


def rfc8448_s3_chain_rows():
    """(kind, args..., expected) rows: the §3 schedule computed step by step
    from the previous step's transcribed output."""
    return [
        ["ext", b"", bytes(32), V["early"]],
        ["derive", V["early"], b"derived", EMPTY_HASH, V["derived_hs"]],
        ["ext", V["derived_hs"], V["ecdhe"], V["handshake"]],
        ["derive", V["handshake"], b"c hs traffic", V["hash_ch_sh"], V["c_hs"]],
        ["derive", V["handshake"], b"s hs traffic", V["hash_ch_sh"], V["s_hs"]],
        ["derive", V["handshake"], b"derived", EMPTY_HASH, V["derived_ms"]],
        ["ext", V["derived_ms"], bytes(32), V["master"]],
        ["label", V["s_hs"], b"key", b"", 16, V["s_hs_key"]],
        ["label", V["s_hs"], b"iv", b"", 12, V["s_hs_iv"]],
        ["label", V["c_hs"], b"key", b"", 16, V["c_hs_key"]],
        ["label", V["c_hs"], b"iv", b"", 12, V["c_hs_iv"]],
        ["label", V["s_hs"], b"finished", b"", 32, V["s_finished_key"]],
        ["derive", V["master"], b"c ap traffic", V["hash_ch_sf"], V["c_ap"]],
        ["derive", V["master"], b"s ap traffic", V["hash_ch_sf"], V["s_ap"]],
        ["derive", V["master"], b"exp master", V["hash_ch_sf"], V["exp_master"]],
        ["label", V["s_ap"], b"key", b"", 16, V["s_ap_key"]],
        ["label", V["s_ap"], b"iv", b"", 12, V["s_ap_iv"]],
        ["label", V["c_ap"], b"key", b"", 16, V["c_ap_key"]],
        ["label", V["c_ap"], b"iv", b"", 12, V["c_ap_iv"]],
        ["label", V["c_hs"], b"finished", b"", 32, V["c_finished_key"]],
        ["mac", V["c_finished_key"], V["hash_ch_sf"], V["c_finished"], 1],
        ["derive", V["master"], b"res master", V["hash_ch_cf"], V["res_master"]],
        ["label", V["res_master"], b"resumption", V["ticket_nonce"], 32, V["resumption"]],
    ]


def test_rfc8448_s3_transcription_matches_rfc_text(vectors):
    """Every transcribed value occurs in the parsed RFC 8448 §3 trace."""
    seen = set()
    for _, fields in rfc8448_steps(vectors("rfc8448.txt"), "3"):
        for v in fields.values():
            seen.add(v)
    missing = [k for k, v in V.items() if v not in seen]
    assert missing == []


def eval_row(row):
    kind = row[0]
    if kind == "ext":
        return hkdf_extract(row[1], row[2]) == row[3]
    if kind == "derive":
        return derive_secret(row[1], row[2], row[3]) == row[4]
    if kind == "label":
        return hkdf_expand_label(row[1], row[2], row[3], row[4]) == row[5]
    if kind == "mac":
        return hmac_sha256(row[1], row[2]) == row[3]
    raise AssertionError(kind)


def test_rfc8448_s3_key_schedule_chain():
    rows = rfc8448_s3_chain_rows()
    bad = [i for i, r in enumerate(rows) if not eval_row(r)]
    assert bad == []
    # §7.1: Derive-Secret is HKDF-Expand-Label with Length = Hash.length
    assert derive_secret(V["handshake"], b"c hs traffic", V["hash_ch_sh"]) == hkdf_expand_label(
        V["handshake"], b"c hs traffic", V["hash_ch_sh"], 32
    )


def test_rfc8448_s3_key_schedule_under_micropython(mpy):
    run_mpy(mpy, rfc8448_s3_chain_rows())


def rfc8448_all_rows(text):
    """Rows for every key-schedule step printed in RFC 8448 §3-§7: HKDF-Extract
    ("extract secret"), Derive-Secret / HKDF-Expand-Label ("derive secret",
    "calculate finished", "generate resumption secret", PSK binder) and the
    traffic key/iv expansions.  The HkdfLabel "info" printed in the trace is
    also checked against an independent encoding."""
    rows = []
    for section in "34567":
        for heading, f in rfc8448_steps(text, section):
            if "secret" in f and "IKM" in f:
                rows.append(["ext", f.get("salt", b""), f["IKM"], f["secret"]])
            if "info" in f and "expanded" in f:
                if '"tls13 ' in heading:
                    label = heading.split('"tls13 ')[1].split('"')[0].encode()
                else:
                    assert "PSK binder" in heading, heading
                    label = b"finished"  # §4.2.11.2: binder = finished MAC
                n = len(f["expanded"])
                assert hkdf_label_info(label, f["hash"], n) == f["info"], heading
                if n == 32 and len(f["hash"]) == 32:
                    rows.append(["derive", f["PRK"], label, f["hash"], f["expanded"]])
                else:
                    rows.append(["label", f["PRK"], label, f["hash"], n, f["expanded"]])
                if "binder hash" in f:  # §4 PSK binder: HMAC(finished_key, binder hash)
                    rows.append(["mac", f["expanded"], f["binder hash"], f["finished"], 1])
            for part in ("key", "iv"):
                if part + " info" in f:
                    n = len(f[part + " expanded"])
                    assert hkdf_label_info(part.encode(), b"", n) == f[part + " info"], heading
                    rows.append(["label", f["PRK"], part.encode(), b"", n, f[part + " expanded"]])
    return rows


@pytest.fixture(scope="module")
def rfc8448_rows(vectors):
    rows = rfc8448_all_rows(vectors("rfc8448.txt"))
    kinds = {}
    for r in rows:
        kinds[r[0]] = kinds.get(r[0], 0) + 1
    # counted from the step headings of RFC 8448 §3-§7: 15 "extract secret";
    # 47 "derive secret ..." with a 32-byte hash; 12 other expansions
    # ("calculate finished" x10, resumption, binder) + 21 traffic key/iv pairs
    assert kinds == {"ext": 15, "derive": 47, "label": 54, "mac": 1}, kinds
    return rows


def test_rfc8448_s3_to_s7_every_key_schedule_step(rfc8448_rows):
    bad = [r for r in rfc8448_rows if not eval_row(r)]
    assert bad == []


def test_rfc8448_s3_to_s7_under_micropython(mpy, rfc8448_rows):
    run_mpy(mpy, rfc8448_rows)


# --------------------------------------------------------------------------
# HKDF-Expand-Label argument checks (RFC 8446 §7.1 HkdfLabel bounds)


def test_hkdf_expand_label_bounds():
    s = os.urandom(32)
    for label, ctx in ((b"x" * 249, b""), (b"k", b"c" * 255)):  # largest legal sizes
        want = HKDFExpand(hashes.SHA256(), 40, hkdf_label_info(label, ctx, 40)).derive(s)
        assert hkdf_expand_label(s, label, ctx, 40) == want
    for label, ctx in ((b"", b""), (b"x" * 250, b""), (b"k", b"c" * 256)):
        with pytest.raises(UsageError):
            hkdf_expand_label(s, label, ctx, 32)
    for bad in (-1, 8161):
        with pytest.raises(UsageError):
            hkdf_expand_label(s, b"key", b"", bad)
    assert hkdf_expand_label(s, b"key", b"", 0) == b""


# --------------------------------------------------------------------------
# Differential: random inputs vs CPython hmac / cryptography HKDF


def differential_rows(seed=4231, n=300):
    rnd = random.Random(seed)

    def blob(choices=LENGTHS):
        n = rnd.choice(choices) if rnd.random() < 0.7 else rnd.randrange(0, 200)
        if n > 256:  # at most 1536: the device side builds it in a fixed buffer
            return gen(rnd.randbytes(8), n)
        return rnd.randbytes(n)

    rows = []
    for _ in range(n):  # HMAC (key hashed when > 64 bytes)
        key = blob()
        msg = blob()
        rows.append(["mac", key, msg, std_hmac.digest(key, msg, "sha256"), 1])
    for _ in range(n):  # HKDF extract + expand
        ikm = blob()
        salt = blob()
        info = blob((0, 1, 15, 16, 17, 64, 65, 200))
        size = rnd.choice((1, 16, 31, 32, 33, 42, 64, 65, 100, 255, 256, 500))
        okm = HKDF(hashes.SHA256(), size, salt or None, info).derive(ikm)
        prk = std_hmac.digest(salt or bytes(32), ikm, "sha256")
        if size > 128:  # long outputs travel as SHA-256(okm): short row lines
            rows.append(["hkdf", ikm, salt, info, size, prk, hashlib.sha256(okm).digest(), "h"])
        else:
            rows.append(["hkdf", ikm, salt, info, size, prk, okm, "v"])
    for _ in range(n // 3):  # HKDF-Expand-Label via an independent HkdfLabel
        secret = rnd.randbytes(32)
        label = rnd.randbytes(rnd.choice((1, 2, 5, 12, 100, 249)))
        ctx = rnd.randbytes(rnd.choice((0, 1, 32, 48, 255)))
        size = rnd.choice((0, 1, 12, 16, 32, 33, 100))
        want = (
            HKDFExpand(hashes.SHA256(), size, hkdf_label_info(label, ctx, size)).derive(secret)
            if size
            else b""
        )
        rows.append(["label", secret, label, ctx, size, want])
    return rows


@pytest.fixture(scope="module")
def diff_rows():
    return differential_rows()


def test_differential_vs_cpython_hmac_and_cryptography_hkdf(diff_rows):
    bad = []
    for i, r in enumerate(diff_rows):
        if r[0] == "hkdf":
            prk = hkdf_extract(r[2], r[1])
            okm = hkdf_expand(prk, r[3], r[4])
            if r[7] == "h":
                okm = hashlib.sha256(okm).digest()
            ok = prk == r[5] and okm == r[6]
        else:
            ok = eval_row(r)
        if not ok:
            bad.append(i)
    assert bad == []
    assert len(diff_rows) == 700
    # the length classes the differential must cover, for HMAC key and message
    macs = [r for r in diff_rows if r[0] == "mac"]
    for field in (1, 2):
        lens = {len(r[field]) for r in macs}
        assert lens >= {0, 1, 15, 16, 17, 64, 65}, field
        assert max(lens) > 1024, field


def test_differential_under_micropython(mpy, diff_rows):
    # fields > 256 bytes travel as "g<len>:<seed>" and are rebuilt on the device
    assert sum(isinstance(v, str) and v[0] == "g" for r in mpy_fields(diff_rows) for v in r) > 50
    run_mpy(mpy, diff_rows)
