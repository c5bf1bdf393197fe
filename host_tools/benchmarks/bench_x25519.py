"""X25519 scalar multiplication (atls.crypto.x25519, RFC 7748 §5).

Metric (microseconds per operation):
  x25519_op_us   x25519(scalar, u): one shared-secret computation (255-step
                 Montgomery ladder + one inversion in the pure code; the
                 `cryptography` backend in the cpython_native column)
"""

from benchutil import emit, per_op

from atls.crypto.x25519 import x25519

SCALAR = bytes(range(1, 33))
# u-coordinate of the first RFC 7748 §5.2 vector
U = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")

emit({"x25519_op_us": per_op(lambda: x25519(SCALAR, U), min_us=1000000)})
