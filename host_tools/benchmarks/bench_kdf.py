"""HMAC-SHA-256 / HKDF / transcript-hash costs (atls.crypto.hkdf, .transcript).

Metrics (microseconds per operation):
  hmac_sha256_64B_us            hmac_sha256(32-byte key, 64-byte message)
  hkdf_extract_us               hkdf_extract(32-byte salt, 32-byte IKM)
  hkdf_expand_label_32B_us      hkdf_expand_label(secret, b"c hs traffic", 32-byte hash, 32)
                                (= one Derive-Secret, RFC 8446 §7.1)
  transcript_update_digest_us   Transcript(forks=1), update(256 bytes), digest()
hkdf has no native switch, so cpython_pure and cpython_native measure the
same code.
"""

from benchutil import emit, per_op

from atls.crypto.hkdf import hkdf_expand_label, hkdf_extract, hmac_sha256
from atls.crypto.transcript import Transcript

KEY = bytes(range(32))
MSG = bytes(range(64))
HASH = bytes(range(100, 132))
MSG256 = bytes(256)


def transcript_op():
    t = Transcript(forks=1)
    t.update(MSG256)
    t.digest()


emit(
    {
        "hmac_sha256_64B_us": per_op(lambda: hmac_sha256(KEY, MSG)),
        "hkdf_extract_us": per_op(lambda: hkdf_extract(KEY, HASH)),
        "hkdf_expand_label_32B_us": per_op(
            lambda: hkdf_expand_label(KEY, b"c hs traffic", HASH, 32)
        ),
        "transcript_update_digest_us": per_op(transcript_op),
    }
)
