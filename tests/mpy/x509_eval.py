"""Dialect-neutral helpers for tests/test_x509.py: the same functions run
under CPython (imported by pytest) and under MicroPython (row scripts), so
both interpreters are held to one expected output.

summary(cert)   every parsed field of an x509.Certificate on one line
                ("|"-separated, big values as SHA-256 hex, no spaces).
digest(cert)    SHA-256 hex of summary(cert), computed field by field so a
                32K heap never holds the whole line.
fuzz(data, ...) truncations and byte mutations of a DER certificate;
                returns (parsed, rejected, escaped): escaped lists anything
                raised that is not an atls.errors.AlertError, and every
                mutant that chain_fn accepted (a certificate that differs
                from the genuine one by even a byte must never verify).
"""

from binascii import hexlify
from hashlib import sha256

from atls import x509
from atls.errors import AlertError


def _sha(b):
    return hexlify(sha256(b).digest()).decode()  # memoryviews hashed in place


def fields(c):
    yield str(c.version)
    yield str(c.serial)
    yield c.sig_alg
    yield c.key_type
    if c.key_type == "rsa":
        n, e = c.public_key
        yield _sha(n.to_bytes(c.rsa_len, "big")) + ":" + str(e)
    else:
        yield _sha(c.public_key)
    for v in (c.not_before, c.not_after, int(c.is_ca), c.path_len, c.key_usage, c.ext_key_usage):
        yield str(v)
    yield ",".join(c.san_dns) or "-"
    yield _sha(c.tbs)
    yield _sha(c.signature)
    yield _sha(c.issuer_raw)
    yield _sha(c.subject_raw)
    yield _sha(c.spki)


def summary(c):
    return "|".join([f for f in fields(c)])


def digest(c):
    h = sha256()
    sep = b""
    for f in fields(c):
        h.update(sep)
        h.update(f.encode())
        sep = b"|"
    return hexlify(h.digest()).decode()


def _try(fn, data, esc, where):
    try:
        fn(data)
        return 1
    except AlertError:
        return 0
    except Exception as exc:  # noqa: BLE001 - this is what the fuzz looks for
        esc.append((where, repr(exc)))
        return 0


def fuzz(data, step=1, xors=(0x01, 0x80, 0xFF), chain_fn=None, chain_step=0):
    """Every truncation and xor mutation at offsets 0, step, 2*step, ...
    Certificate(...) is run on each; chain_fn(bytes) too every chain_step."""
    data = bytes(data)
    esc = []
    parsed = tried = 0
    for i in range(0, len(data), step):
        tried += 1
        parsed += _try(x509.Certificate, data[:i], esc, ("cut", i))
        for x in xors:
            m = bytearray(data)
            m[i] ^= x
            m = bytes(m)
            tried += 1
            parsed += _try(x509.Certificate, m, esc, ("xor", i, x))
            if chain_fn is not None and chain_step and i % chain_step == 0:
                if _try(chain_fn, m, esc, ("chain", i, x)):
                    esc.append((("accepted", i, x), "a modified certificate verified"))
        if chain_fn is not None and chain_step and i % chain_step == 0:
            if _try(chain_fn, data[:i], esc, ("chain-cut", i)):
                esc.append((("accepted-cut", i), "a truncated certificate verified"))
    return parsed, tried - parsed, esc
