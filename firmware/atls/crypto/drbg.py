"""HMAC_DRBG with SHA-256 (NIST SP 800-90A Rev.1 §10.1.2), no prediction
resistance, no derivation of entropy: the caller (atls.entropy) gathers and
health-tests the entropy input; this module only keeps the state (Key, V,
reseed_counter) and runs Instantiate, Reseed and Generate."""

# Theory of operation (SP 800-90A §10.1.2.1-§10.1.2.5):
#   Update(data):  K = HMAC(K, V || 0x00 || data); V = HMAC(K, V);
#                  if data: K = HMAC(K, V || 0x01 || data); V = HMAC(K, V)
#   Instantiate:   K = 0x00*32, V = 0x01*32, Update(entropy || nonce || pers)
#   Reseed:        Update(entropy || additional), reseed_counter = 1
#   Generate(n):   if additional: Update(additional); V = HMAC(K, V) until n
#                  bytes; Update(additional); reseed_counter += 1
# Security strength 256 bits: entropy input >= 32 bytes, nonce >= 16 bytes
# (§8.6.7, §10.1 Table 2).  Over reseed_interval requests Generate refuses
# (the spec's "reseed required" status) until the caller reseeds.  The state
# is 2 x 32 bytes and two ints.  Comments rather than a long docstring (see
# hkdf.py): a .py compiled on the device keeps docstrings in RAM.
from atls.crypto.hkdf import hmac_sha256
from atls.errors import UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_OUTLEN = const(32)  # SHA-256 output block (SP 800-90A Table 2: outlen = 256)
_MIN_ENTROPY = const(32)  # security_strength = 256 bits (Table 2, §8.6.3)
_MIN_NONCE = const(16)  # >= security_strength / 2 (§8.6.7)
_MAX_REQUEST = const(65536)  # max_number_of_bits_per_request = 2^19 bits (Table 2)
_MAX_INTERVAL_BITS = const(48)  # reseed_interval <= 2^48 (Table 2)


class HmacDrbg:
    """One HMAC_DRBG(SHA-256) instantiation.

    HmacDrbg(entropy, nonce, personalization=b"", reseed_interval=None (2**48))
    generate(n, additional=b"") -> n bytes; UsageError when n > 65536 or a
    reseed is due (`reseed_due`); reseed(entropy, additional=b"")."""

    def __init__(self, entropy, nonce, personalization=b"", reseed_interval=None):
        if len(entropy) < _MIN_ENTROPY or len(nonce) < _MIN_NONCE:
            raise UsageError("drbg: entropy < 32 bytes or nonce < 16 bytes")
        limit = 1 << _MAX_INTERVAL_BITS
        if reseed_interval is None:
            reseed_interval = limit
        if not 0 < reseed_interval <= limit:
            raise UsageError("drbg: reseed_interval out of range")
        self.reseed_interval = reseed_interval
        self._k = bytes(_OUTLEN)  # §10.1.2.3 step 2: Key = 0x00 00...00
        self._v = b"\x01" * _OUTLEN  # step 3: V = 0x01 01...01
        self._update(entropy, nonce, personalization or b"")  # step 1, 4
        self.reseed_counter = 1  # step 5

    @property
    def reseed_due(self):
        """True once reseed_interval requests were served since the last (re)seed."""
        return self.reseed_counter > self.reseed_interval

    def _update(self, a=b"", b=b"", c=b""):
        # HMAC_DRBG_Update (§10.1.2.2) with provided_data = a || b || c
        k = hmac_sha256(self._k, self._v + b"\x00" + a + b + c)
        v = hmac_sha256(k, self._v)
        if a or b or c:
            k = hmac_sha256(k, v + b"\x01" + a + b + c)
            v = hmac_sha256(k, v)
        self._k = k
        self._v = v

    def reseed(self, entropy, additional=b""):
        """Reseed (§10.1.2.4): fresh entropy (>= 32 bytes) and optional input."""
        if len(entropy) < _MIN_ENTROPY:
            raise UsageError("drbg: entropy < 32 bytes")
        self._update(entropy, additional or b"")
        self.reseed_counter = 1

    def generate(self, n, additional=b""):
        """Generate (§10.1.2.5): n pseudorandom bytes, 0 <= n <= 65536."""
        if n < 0 or n > _MAX_REQUEST:
            raise UsageError("drbg: request size")
        if self.reseed_counter > self.reseed_interval:
            raise UsageError("drbg: reseed required")  # step 1
        additional = additional or b""
        if additional:
            self._update(additional)  # step 2
        out = bytearray(n)
        k = self._k
        v = self._v
        pos = 0
        while pos < n:  # steps 3-4
            v = hmac_sha256(k, v)
            out[pos : pos + _OUTLEN] = v[: n - pos]
            pos += _OUTLEN
        self._v = v
        self._update(additional)  # step 6
        self.reseed_counter += 1  # step 7
        return bytes(out)
