"""AEAD seal+open cost: one seal then one open of the result, per message size.

Metrics (microseconds per seal+open pair):
  ccm16_seal_open_<n>B_us  AES-128-CCM, 16-byte tag (TLS_AES_128_CCM_SHA256)
  ccm8_seal_open_<n>B_us   AES-128-CCM, 8-byte tag (TLS_AES_128_CCM_8_SHA256)
  gcm_seal_open_<n>B_us    AES-128-GCM (TLS_AES_128_GCM_SHA256)
for n in 16, 64, 1024, with a 5-byte AAD (a TLS 1.3 record header) and a
12-byte nonce, plus the cost of making each object (key setup).
"""

from benchutil import emit, per_op

from atls.crypto.aead import AESCCM, AESGCM

KEY = bytes(range(16))
NONCE = bytes(range(100, 112))
AAD = b"\x17\x03\x03\x00\x20"
SIZES = (16, 64, 1024)


def pair(aead, msg):
    def run():
        aead.open(NONCE, AAD, aead.seal(NONCE, AAD, msg))

    return run


def main():
    results = {}
    algs = (("ccm16", AESCCM(KEY, 16)), ("ccm8", AESCCM(KEY, 8)), ("gcm", AESGCM(KEY)))
    for name, aead in algs:
        for n in SIZES:
            msg = bytes(i & 255 for i in range(n))
            results["%s_seal_open_%dB_us" % (name, n)] = per_op(pair(aead, msg))
    results["ccm_key_setup_us"] = per_op(lambda: AESCCM(KEY, 16))
    results["gcm_key_setup_us"] = per_op(lambda: AESGCM(KEY))
    emit(results)


main()
