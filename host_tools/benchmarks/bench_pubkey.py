"""Public-key primitives: P-256 ECDH / keygen / ECDSA sign+verify, Ed25519
verify, RSA-2048 PSS and PKCS#1 v1.5 verify (microseconds per operation).

The RSA-2048 key and signatures were generated once with `cryptography` and
are embedded so the script runs unchanged under MicroPython.  Message: a TLS
1.3 CertificateVerify content (RFC 8446 §4.4.3, 64 spaces, context, 0, hash).
"""

from binascii import unhexlify

from benchutil import emit, per_op

from atls.crypto import ed25519, p256, rsa

MSG = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(range(32))
RSA_N = int(
    "f883975ffbafaa7bb3a91b2d6062a536d859f35dec6f31e52e15f624224adc82"
    "5265ffdc91a07b79b6be33597bf37e1d11889d890fc89e7fe442ac19107c9aff"
    "dda29b3964e3f94255b1c417f55fd329c5331feb370f286519c6b16ab9158a5d"
    "457b070a51b26f006a57e8b398c16e31b250fa478c28475d6a69da1c2ac05aa2"
    "832a77b14d95b817ddec4a908cd30c4de8f8b2b80919a1260bf348d2d989188a"
    "b7ded9e1f3825d7b7a5abe4d22487aba1b7f7584525e28a1b38eec1553652780"
    "f92a1621a5d739f764480dc3c8351a4734f222b6e3403ea19c0172dafcdea3a7"
    "fab21c71dff59006b90ed3723a13a4077420a28d19bcf1eb0cb60e6cf1605413",
    16,
)
RSA_E = 65537
RSA_PSS_SIG = unhexlify(
    "d5cebc330d43f093c7f196a4e7323e095eb3fbecfffb7466a0dd4842850a6389"
    "310b2d463ebe0533203fb78a191e32d59c7ceb1e328f9cea8eadfd0e19d6aa7c"
    "ba28d3bc917836c1304e0a8c143da091bfa7ad9a1acd63220a8284d3caae5a34"
    "c717e9b8b330df73b6a980f3f3d478fa306daefa69f128422f13fac7d1c16f10"
    "8aaa95fd7886e7de6035ddc8c3f4311f32ba0ff471cc49e20a7c104288a69adf"
    "4ae178be37d6748c5633c7a36a1e96e83b49c2a9e01b0249f1c49af54f70946d"
    "7291dfed4d026551dc873d16c679c4fcd8095cefdeb1824db46a684d3b5ad3dd"
    "2ab7d53ec8d63c055b3195e80aab567b8fdf4b0b24bd9c13498fbe6f183176eb"
)
RSA_PKCS1_SIG = unhexlify(
    "7f831a3bbd78297f2ea03e2a82e710edaa77ed9fecb8ec4ca1f895eace425636"
    "d695f3880ae058c2d20f2b9da5fa8d0a4f609e115c42d3c3509428d5f362c3c1"
    "8dc03e15c73b507dbc18c5e6e55c7c1b63f9fdaa5def50e644dbc10df06dd686"
    "003fe175a48767d032252e033dba79f5121a6ed2d1f0b66746e0244ff7268ef0"
    "58bac6bbe26ceae769de0a496601277cb60aecdaa2c96ffb145af1a7cb28a5aa"
    "6aeaacf0ebf8e554d8e3361ac5ab2c9d1538eeb5b6d0b365a7e98f55c1f07c50"
    "e052121e51c09e17d4bd0699bad0d9ce0334e3baed07eb6ac408f11c9034d1c9"
    "78ab5be79216f674d92c71ec37e847d57c0ffc5a45225946486cf275a2c11751"
)
# RFC 8032 §7.1 TEST 3 (2-byte message)
ED_PUB = unhexlify("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025")
ED_MSG = unhexlify("af82")
ED_SIG = unhexlify(
    "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
    "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
)


def main():
    priv = bytes(range(1, 33))
    pub = p256.public_key(priv)
    peer = p256.public_key(bytes(range(2, 34)))
    sig = p256.ecdsa_sign(priv, MSG)
    p256.ecdsa_verify(pub, MSG, sig)
    ed25519.verify(ED_PUB, ED_MSG, ED_SIG)
    rsa.verify_pss_sha256(RSA_N, RSA_E, MSG, RSA_PSS_SIG)
    rsa.verify_pkcs1_sha256(RSA_N, RSA_E, MSG, RSA_PKCS1_SIG)
    emit(
        {
            "p256_keygen_us": per_op(p256.generate_keypair),
            "p256_ecdh_us": per_op(lambda: p256.ecdh(priv, peer)),
            "ecdsa_p256_sign_us": per_op(lambda: p256.ecdsa_sign(priv, MSG)),
            "ecdsa_p256_verify_us": per_op(lambda: p256.ecdsa_verify(pub, MSG, sig)),
            "ed25519_verify_us": per_op(lambda: ed25519.verify(ED_PUB, ED_MSG, ED_SIG)),
            "rsa2048_pss_verify_us": per_op(
                lambda: rsa.verify_pss_sha256(RSA_N, RSA_E, MSG, RSA_PSS_SIG)
            ),
            "rsa2048_pkcs1_verify_us": per_op(
                lambda: rsa.verify_pkcs1_sha256(RSA_N, RSA_E, MSG, RSA_PKCS1_SIG)
            ),
        }
    )


main()
