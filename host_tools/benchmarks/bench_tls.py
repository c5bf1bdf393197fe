"""Client CPU time for a whole TLS 1.3 handshake, per authentication mode.

Each handshake replays a real OpenSSL server flight recorded by
tls_fixtures.py for a deterministic client, so the client does all of its
work (key generation, ECDH, certificate chain and CertificateVerify checks,
key schedule, record protection) without a server in the timing.

Metrics (microseconds per handshake unless named otherwise):
  hs_<mode>_us                      one full client handshake
  hs_psk_x25519_over_x25519_op      PSK+ECDHE handshake / one X25519 op,
                                    measured side by side in this run
"""

import os

from benchutil import emit, per_op
from tls_replay_run import handshake, load

from atls.crypto.x25519 import x25519

FIXTURES = os.getenv("ATLS_TLS_FIXTURES") or "build/tls_fixtures"
MODES = ("psk_x25519", "psk_p256", "cert_p256_chain2", "cert_rsa2048", "cert_ed25519")

out = {}
for mode in MODES:
    spec, flight = load(FIXTURES + "/" + mode + ".json")
    out["hs_" + mode + "_us"] = per_op(
        lambda: handshake(spec, flight), min_us=1000000, max_iter=200
    )
x = per_op(lambda: x25519(bytes(range(1, 33)), bytes(range(2, 34))), min_us=500000)
out["x25519_op_us"] = x
out["hs_psk_x25519_over_x25519_op"] = out["hs_psk_x25519_us"] / x
emit(out)
