"""TLS 1.3 record protection (RFC 8446 §5.2-§5.3) for one direction.

Invariants: the key and IV come from one traffic secret (§7.3); the nonce is
the static IV XOR the 64-bit record sequence number (§5.3), which never
wraps (the connection fails with internal_error first); the AEAD is the
suite's, from atls.crypto.aead.new.  An opened record's inner plaintext is
stripped of its zero padding and must name a content type.  Record framing
(headers, reassembly, content types) is the client's (atls.tls.client).
"""

from atls.crypto.hkdf import hkdf_expand_label
from atls.errors import AlertError, CryptoError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_KEY_LEN = const(16)
_IV_LEN = const(12)
_CT_APPLICATION_DATA = const(23)
_MAX_CIPHERTEXT = const(16640)  # 2^14 + 256 (§5.2)
_SEQ_LIMIT = const(0xFFFFFFFF)  # far below 2^64; records per connection are few


class RecordProtection:
    """AEAD protection of records in one direction under one traffic secret.
    The key, IV and AEAD object are derived on the first record: a direction
    that never carries one (often the case after an ATLS handshake) costs
    no AES state in RAM."""

    def __init__(self, suite, secret):
        self.suite = suite
        self.secret = secret
        self.aead = None
        self.seq = 0

    def _nonce(self):
        if self.aead is None:
            from atls.crypto.aead import new

            s = self.secret
            self.aead = new(self.suite, hkdf_expand_label(s, b"key", b"", _KEY_LEN))
            self.iv = int.from_bytes(hkdf_expand_label(s, b"iv", b"", _IV_LEN), "big")
        if self.seq >= _SEQ_LIMIT:
            raise AlertError(80)  # internal_error: record sequence exhausted
        n = (self.iv ^ self.seq).to_bytes(_IV_LEN, "big")
        self.seq += 1
        return n

    def seal(self, content_type, data, tag_len):
        """One TLSCiphertext record carrying `data` of `content_type`;
        `tag_len` is the suite's (atls.protocol.suite_tag_len)."""
        n = len(data) + 1 + tag_len
        header = bytes((_CT_APPLICATION_DATA, 3, 3, n >> 8, n & 0xFF))
        inner = bytearray(data)
        inner.append(content_type)
        nonce = self._nonce()
        return header + self.aead.seal(nonce, header, inner)

    def open(self, header, body):
        """(content_type, plaintext) of a protected record; bad_record_mac on
        any failure, unexpected_message when the inner plaintext is all zero."""
        if len(body) > _MAX_CIPHERTEXT:
            raise AlertError(22)  # record_overflow
        nonce = self._nonce()
        try:
            inner = self.aead.open(nonce, header, body)
        except (CryptoError, ValueError):
            raise AlertError(20)  # bad_record_mac
        i = len(inner) - 1
        while i >= 0 and inner[i] == 0:
            i -= 1
        if i < 0:
            raise AlertError(10)  # unexpected_message: record without content type
        if i > 16384:
            raise AlertError(22)  # record_overflow: inner plaintext
        return inner[i], memoryview(inner)[:i]
