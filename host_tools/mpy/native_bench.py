"""Device-side benchmark of the public-key operations (issue 17), run on the
(emulated) Pico by host_tools.bench.native_crypto; also runs on the unix port.

    micropython native_bench.py [reps] [fixture.json ...]

Prints one JSON line: milliseconds per operation (time.ticks_us: emulated
time in the rp2040js emulator, i.e. cycles / 125 MHz), which implementation
served (native or pure), and the spread of X25519 and ECDSA-sign times over
random scalars and nonces (the constant-time evidence: (max - min) / min).
Each fixture (host_tools.benchmarks.tls_fixtures) is replayed as one full
client handshake: "<name>_handshake_ms" (CPU only, no radio).
"""

import gc
import json
import os
import sys
import time


def _ms(fn, reps=1):
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(reps):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / 1000 / reps


def _spread(times):
    return (max(times) - min(times)) / min(times)


def x25519_figures(res, n):
    from atls.crypto import x25519 as X

    res["x25519_impl"] = "native" if X.x25519 is X.x25519_native else "pure"
    u = X.x25519_base(bytes(range(1, 33)))
    res["x25519_ms"] = _ms(lambda: X.x25519(bytes(range(32)), u))
    ks = [bytes(32), b"\xff" * 32] + [os.urandom(32) for _ in range(n)]
    t = [_ms(lambda k=k: X.x25519(k, u)) for k in ks]
    res["x25519_spread"] = _spread(t)
    res["x25519_pure_ms"] = _ms(lambda: X.x25519_pure(bytes(range(32)), u))


def p256_figures(res, n):
    from atls.crypto import p256

    res["p256_impl"] = getattr(p256, "IMPL", "pure")
    priv = bytes(range(1, 33))
    pub = p256.public_key(priv)
    sig = p256.ecdsa_sign(priv, b"bench")
    res["ecdsa_p256_sign_ms"] = _ms(lambda: p256.ecdsa_sign(priv, b"bench"))
    res["ecdsa_p256_verify_ms"] = _ms(lambda: p256.ecdsa_verify(pub, b"bench", sig))
    res["ecdh_p256_ms"] = _ms(lambda: p256.ecdh(priv, pub))
    # RFC 6979: the nonce follows the message, so random messages give random nonces
    msgs = [os.urandom(16) for _ in range(n)]
    t = [_ms(lambda m=m: p256.ecdsa_sign(priv, m)) for m in msgs]
    res["ecdsa_p256_sign_spread"] = _spread(t)


def ed25519_figures(res):
    from atls.crypto import ed25519

    # RFC 8032 §7.1 TEST 2
    pub = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
    sig = bytes.fromhex(
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    )
    res["ed25519_impl"] = getattr(ed25519, "IMPL", "pure")
    res["ed25519_verify_ms"] = _ms(lambda: ed25519.verify(pub, b"\x72", sig))


def handshake_figures(res, paths):
    import tls_replay_run as R

    for path in paths:
        spec, flight = R.load(path)
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        res[name + "_handshake_ms"] = _ms(lambda s=spec, f=flight: R.handshake(s, f))


def main(argv):
    n = int(argv[1]) if len(argv) > 1 else 4
    res = {}
    for part in (lambda: x25519_figures(res, n), lambda: p256_figures(res, n)):
        part()
    ed25519_figures(res)
    handshake_figures(res, argv[2:])
    gc.collect()
    res["mem_free"] = gc.mem_free()
    print(json.dumps(res))


main(sys.argv)
