"""Constant time on the device (issue 17): on the emulated Pico (RP2040 at
125 MHz, firmware as armv6m .mpy, cycle-exact), the cycle count of X25519
and of an ECDSA P-256 signature varies by at most 1 % across scalars and
nonces: X25519 with the all-zero, all-ones and 6 random scalars; ECDSA
(RFC 6979) over 8 random messages, so 8 random nonces.  Each operation is
bracketed by GPIO22 (the emulator counts the cycles of each high period).
The spreads, (max - min) / min, are printed: they are the evidence the
issue asks for (`pytest -s` shows them; `make bench`'s pico section has
the same figures from host_tools/mpy/native_bench.py).

Fails on the code before the fix: the nonce's inverse was a blinded
extended Euclid on Python ints, its length following the random blind
(11.6-13.8 ms of a 235 ms signature: spreads up to 1.4 %)."""

import pytest
import test_pico

pytestmark = pytest.mark.pico
pico = test_pico.pico  # the emulated Pico with the firmware deployed (module scope)

SPREAD = 0.01  # issue 17: <= 1 %

DEVICE = r"""
import gc, os, machine
from atls.crypto import x25519, p256
from atls.crypto.p256_sign import ecdsa_sign
pin = machine.Pin(22, machine.Pin.OUT, value=0)
def span(fn):
    gc.collect()
    pin.value(1)
    fn()
    pin.value(0)
u = x25519.x25519_base(bytes(range(1, 33)))
print("IMPL", x25519.x25519 is x25519.x25519_native, p256.IMPL)
for k in [bytes(32), b"\xff" * 32] + [os.urandom(32) for _ in range(6)]:
    span(lambda: x25519.x25519(k, u))
priv = bytes(range(1, 33))
ecdsa_sign(priv, b"warm up")  # first use: G's table, the signing module
for m in [os.urandom(16) for _ in range(8)]:
    span(lambda: ecdsa_sign(priv, m))
"""


def _spread(cycles):
    return (max(cycles) - min(cycles)) / min(cycles)


def test_x25519_and_ecdsa_sign_cycles_vary_at_most_1_percent(pico):
    r = pico.run(DEVICE, timeout=900)
    assert r.lines("IMPL") == ["True native"], r.out[-500:]
    assert len(r.spans) == 16, r.spans
    x, s = _spread(r.spans[:8]), _spread(r.spans[8:])
    ms = [c / 125e3 for c in r.spans]  # cycles at 125 MHz
    print(
        "\nemulated Pico: X25519 %.1f-%.1f ms, spread %.4f %%; ECDSA sign %.1f-%.1f ms, spread %.4f %%"
        % (min(ms[:8]), max(ms[:8]), 100 * x, min(ms[8:]), max(ms[8:]), 100 * s)
    )
    assert x <= SPREAD, r.spans[:8]
    assert s <= SPREAD, r.spans[8:]
