"""atls.crypto.native_f25519: X25519 on native field arithmetic (issue 17).

The firmware is built as `make mpy BOARD=unix` builds it (mpy-cross
-march=x64, host_tools.boards.build_mpy) and run by the MicroPython unix port,
where atls.crypto.x25519 must pick the native ladder.  Sources:
  RFC 7748 §5.2   the two vectors and the iterated vector after 1 and 1,000
  RFC 7748 §6.1   Alice/Bob key pairs and shared secret
  Wycheproof      x25519_test.json, all 518 tests (twist points, non-canonical
                  and low-order u, all-zero results)
  differential    native vs pure ladder (the reference) on random scalars and
                  u-coordinates, and vs `cryptography` through the same rows
  constant time   the ladder's sequence of field operations and their operands
                  (workspace offsets) is the same for every scalar: the
                  cycle-free proxy for the emulated-Pico measurement
The field operations alone (fmul, fsqr, fadd, fmul_small) are checked against
Python ints on random and extreme limbs (the bounds of native_f25519_viper).
"""

import pytest
from test_x25519 import (
    MPY_X25519,
    RFC7748_ITER,
    RFC7748_S52,
    differential_rows,
    rfc7748_rows,
    wycheproof_rows,
)

from host_tools.boards.mpy import build_mpy
from host_tools.toolchain import ROOT, micropython_binary

H = bytes.fromhex


def native_micropython(out, board="unix"):
    """The unix port running the firmware as `make mpy BOARD=board` builds it."""
    from conftest import TESTS, MicroPython

    b = build_mpy(board, out_root=out)
    return MicroPython(micropython_binary(), [".frozen", str(b["dir"]), str(TESTS / "mpy")])


@pytest.fixture(scope="module")
def mpy_native(tmp_path_factory):
    """The unix port with the firmware built for the unix board (native x64)."""
    return native_micropython(tmp_path_factory.mktemp("native-mpy"))


SELECTED = """
from atls.crypto import x25519 as X
import atls.crypto.native_f25519 as N
import atls.crypto.native_f25519_viper as V
print(X.x25519 is X.x25519_native, X.x25519_base is X.x25519_base_native, N.run is V.run)
"""


def test_unix_port_selects_native_x25519(mpy_native):
    assert mpy_native.check(SELECTED).lines[-1] == "True True True"


def test_source_tree_falls_back_to_pure_where_native_cannot_compile(mpy):
    # from .py sources with a 32 KiB heap the viper module cannot even be
    # compiled (MemoryError): the pure ladder must serve, not an exception
    src = "from atls.crypto import x25519 as X\nprint(X.x25519 is X.x25519_pure)"
    assert mpy.check(src, heapsize="32K").lines[-1] == "True"


def check_rows(m, rows, heapsize="32K"):
    summary = m.run_rows(MPY_X25519, rows, heapsize=heapsize, timeout=300)
    assert summary == {"ok": len(rows), "failed": []}


def test_rfc7748_s5_2_s6_1_and_iterated_1000_native(mpy_native):
    rows = rfc7748_rows()
    rows += [["iter", 1, H(RFC7748_ITER[1])], ["iter", 1000, H(RFC7748_ITER[1000])]]
    check_rows(mpy_native, rows)


def test_wycheproof_x25519_all_518_native(mpy_native, vectors):
    data = vectors("x25519_test.json")
    tests = [t for g in data["testGroups"] for t in g["tests"]]
    assert len(tests) == 518
    check_rows(mpy_native, wycheproof_rows(tests))


def test_differential_vs_cryptography_native(mpy_native):
    check_rows(mpy_native, differential_rows(seed=17, n=200))


NATIVE_VS_PURE = """
import os
from atls.crypto.x25519 import x25519_native, x25519_pure, x25519_base_native, x25519_base_pure
bad = 0
for i in range(%d):
    k = os.urandom(32)
    u = os.urandom(32)
    if i %% 4 == 0:
        u = b"\\xff" * 32  # u >= p and top bit set
    if i %% 4 == 1:
        k = bytes(32) if i %% 8 == 1 else b"\\xff" * 32
    try:
        a = x25519_native(k, u)
    except Exception as e:
        a = repr(e)
    try:
        b = x25519_pure(k, u)
    except Exception as e:
        b = repr(e)
    bad += a != b or x25519_base_native(k) != x25519_base_pure(k)
print(bad)
"""


def test_differential_native_vs_pure(mpy_native):
    assert mpy_native.check(NATIVE_VS_PURE % 40, timeout=120).lines[-1] == "0"


FIELD = """
import os, struct
import atls.crypto.native_f25519_viper as N
P = 2**255 - 19
def limbs(vals):
    b = bytearray(80)
    for i, v in enumerate(vals):
        struct.pack_into("<i", b, 4 * i, v)
    return b
def val(b):
    return sum(struct.unpack_from("<i", b, 4 * i)[0] << (13 * i) for i in range(20))
def rnd():
    return int.from_bytes(os.urandom(33), "little") %% (2**260)
t = bytearray(160)
bad = 0
cases = [[8191] * 20, [-8191] * 20, [8191] * 2 + [10713] + [8191] * 17, [0] * 20, [1] + [0] * 19]
for i in range(%d):
    cases.append([(rnd() >> (13 * j)) & 8191 for j in range(20)])
for x in cases:
    for y in cases[-7:]:
        a, b, r = limbs(x), limbs(y), bytearray(80)
        va, vb = val(a), val(b)
        N.fmul(r, a, b, t); bad += val(r) %% P != va * vb %% P
        N.fsqr(r, a, a, t); bad += val(r) %% P != va * va %% P
        N.fadd(r, a, b, 0); bad += val(r) %% P != (va + vb) %% P
        N.fadd(r, a, b, 1); bad += val(r) %% P != (va - vb) %% P
        N.fmul_small(r, a, 121665); bad += val(r) %% P != va * 121665 %% P
        bad += max(abs(v) for v in struct.unpack("<20i", r)) > 10713
print(bad)
"""


def test_field_operations_vs_python_ints(mpy_native):
    """Extreme limbs (all 2^13 - 1, all -(2^13 - 1), limb 2 at its carried
    maximum) and random ones: results right mod p and limbs within bounds."""
    assert mpy_native.check(FIELD % 20).lines[-1] == "0"


TRACE = """
import os
import atls.crypto.native_f25519 as N
from atls.crypto.x25519 import _scalar
log = []
run = N.run
def wrap(w, prog, n):
    log.append((n, prog))  # the program: bytes, or the address of the ladder step
    return run(w, prog, n)
N.run = wrap
seqs = set()
for k in [bytes(32), b"\\xff" * 32] + [os.urandom(32) for _ in range(3)]:
    log.clear()
    N.x25519(_scalar(k), 9)
    seqs.add(hash(tuple(log)))
print(len(seqs), len(log), sum(n for n, _ in log))
"""


def test_ladder_operation_sequence_is_independent_of_the_scalar(mpy_native):
    """Constant time by construction, checked: every scalar (all zero, all
    one bits, random) drives the same sequence of op programs (the ladder
    step's 18 field operations on the same workspace elements, 255 times,
    then the inversion's fixed chain)."""
    n, calls, ops = mpy_native.check(TRACE, heapsize="4M", timeout=120).lines[-1].split()
    assert n == "1"
    assert int(ops) == 255 * 18 + 254 + 11 + 1  # ladder, inversion, x2 / z2


def test_pure_fallback_when_native_module_is_for_another_arch(tmp_path, mpy_native):
    """A .mpy of another arch (here armv6m on an x64 port) raises on import;
    the facade must fall back to the pure ladder."""
    m = native_micropython(tmp_path, "pico_w")
    src = "from atls.crypto import x25519 as X\nprint(X.x25519 is X.x25519_pure)"
    assert m.check(src).lines[-1] == "True"
    check_rows(m, rfc7748_rows())


def _lines(path):
    return [ln.strip() for ln in (ROOT / path).read_text().splitlines()]


def test_unrolled_code_matches_its_generator():
    """The unrolled columns (viper) and rows (Thumb) are what their pattern
    says: column k of a * b is sum a[i] * b[k - i]; row j adds a[i] * b[j]
    into t[i + j] at immediate offsets."""
    viper = _lines("firmware/atls/crypto/native_f25519_viper.py")
    for k in range(39):
        terms = ["a[%d] * b[%d]" % (i, k - i) for i in range(20) if 0 <= k - i < 20]
        assert "t[%d] = %s" % (k, " + ".join(terms)) in viper, k
    thumb = _lines("firmware/atls/crypto/native_thumb.py")
    start = [n for n, ln in enumerate(thumb) if ln.startswith("label(row)")]
    assert len(start) == 1  # one row subroutine serves every field's product
    start = start[0] + 1
    for j in range(20):
        o = 4 * j
        assert thumb[start + 5 * j : start + 5 * j + 5] == [
            "ldr(r6, [r2, %d])" % o,
            "mul(r6, r4)",
            "ldr(r7, [r3, %d])" % o,
            "add(r7, r7, r6)",
            "str(r7, [r3, %d])" % o,
        ], j
    assert thumb[start + 100] == "bx(lr)"
    assert "mul(r6, r4)" not in _lines("firmware/atls/crypto/native_p256_thumb.py")


FRAGMENTED = r"""
import gc, sys
if sys.argv[1] == "early":  # what atls.supervisor.main does first (atls.buffers)
    from atls import buffers
    print(buffers.early(sys.argv[2], sys.argv[3]))
from atls.crypto import x25519 as X
holes = []
try:
    while True:
        holes.append(bytearray(512))
except MemoryError:
    pass
for i in range(0, len(holes), 2):
    holes[i] = None
gc.collect()
try:
    for _ in range(2):  # twice: the kept workspace starts clean each time
        print(X.x25519(bytes.fromhex(sys.argv[4]), bytes.fromhex(sys.argv[5])).hex())
except MemoryError as e:
    print("MemoryError", e)
"""


def test_workspace_reserved_at_boot_survives_a_fragmented_heap(mpy_native, tmp_path):
    """Issue 17: on the emulated Pico a PSK handshake failed with "MemoryError
    ... allocating 1360 bytes" (the ladder's workspace, allocated per call) in a
    heap cut into pieces by the imports.  The workspace atls.buffers.early()
    reserved before the imports is the one the ladder uses: with the heap in
    512-byte holes it still computes RFC 7748 §5.2's first vector; without it, not."""
    board, dev = tmp_path / "board_config.json", tmp_path / "device.json"
    board.write_text('{"name": "unix", "link": {"type": "udp"}}')
    dev.write_text('{"device_id": "d", "tls": {"psk": "00"}}')
    k, u, out = RFC7748_S52[0]
    args = [str(board), str(dev), k, u]
    cold = mpy_native.run(FRAGMENTED, args=["cold"] + args, heapsize="96K")
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split()[0] == "MemoryError", cold.stdout
    warm = mpy_native.run(FRAGMENTED, args=["early"] + args, heapsize="96K")
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split() == ["['x25519']", out, out], warm.stdout
