"""atls.crypto.native_ed25519: Ed25519 verification on the native Curve25519
field (issue 17), run by the unix port from the firmware as `make mpy
BOARD=unix` builds it (-march=x64), where atls.crypto.ed25519 must pick it.
The MicroPython script of tests/test_ed25519.py runs unchanged against it:
  Wycheproof      ed25519_test.json, all 151 (RFC 8032 §5.1.7, §8.4)
  RFC 8032 §7.1   TEST 1, 2, 3, 1024, SHA(abc), and each with a changed message
  differential    60 signatures by `cryptography`, and each with one bit flipped
  square root     pow22523 vs Python's pow on random field elements
"""

import pytest
from mpycross import side_files
from test_ed25519 import _MPY_ROWS, _wycheproof, rfc8032_7_1, rfc_and_differential_rows
from test_native_x25519 import native_micropython

# x25519 first: it loads the native field, which ed25519 then uses
_ROWS = _MPY_ROWS.replace(
    "from atls.crypto import ed25519", "from atls.crypto import x25519, ed25519"
)
assert _ROWS != _MPY_ROWS
HEAP = (
    "64K"  # x64 port: the native modules' 64-bit objects and the workspace (4.8 KB, kept once used)
)


@pytest.fixture(scope="module")
def mpy_native(tmp_path_factory):
    return native_micropython(tmp_path_factory.mktemp("native-ed25519"))


@pytest.fixture(scope="module")
def rfc(vectors):
    return rfc8032_7_1(vectors("rfc8032.txt"))


def test_unix_port_selects_native_ed25519(mpy_native):
    src = "from atls.crypto import ed25519\nprint(ed25519.IMPL)"
    assert mpy_native.check(src).lines[-1] == "pure"  # alone: no native field loaded
    src = "from atls.crypto import x25519, ed25519\nprint(ed25519.IMPL)"
    assert mpy_native.check(src).lines[-1] == "native"


def test_wycheproof_ed25519_all_151_native(mpy_native, vectors, tmp_path):
    rows = side_files(_wycheproof(vectors), tmp_path, 256)
    assert mpy_native.run_rows(_ROWS, rows, heapsize=HEAP) == {"ok": 151, "failed": []}


def test_rfc8032_7_1_and_differential_native(mpy_native, rfc, tmp_path):
    rows, n = rfc_and_differential_rows(rfc, tmp_path)
    assert mpy_native.run_rows(_ROWS, rows, heapsize=HEAP) == {"ok": n, "failed": []}


POW = """
import os
from atls.crypto.native_ed25519 import pow22523
P = 2**255 - 19
bad = 0
for z in [0, 1, 2, P - 1] + [int.from_bytes(os.urandom(32), "little") % P for _ in range(20)]:
    bad += pow22523(z) != pow(z, (P - 5) >> 3, P)
print(bad)
"""


def test_square_root_power_vs_python_pow(mpy_native):
    assert mpy_native.check(POW).lines[-1] == "0"
