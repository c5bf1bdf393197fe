"""The export-key channel (docs/PROTOCOL.md §3-§4, draft-friel-tls-atls §7).

After TLS, both ends export a 56-byte key block
  client_write_key || server_write_key || client_write_iv || server_write_iv
(RFC 8446 §7.5 exporter, label "application-layer-tls", empty context: the
label and length are atls.protocol facts, `key_block(tls)` reads it).
Each direction has its own AEAD (the negotiated suite's: AES-128-GCM, -CCM
or -CCM_8, from atls.crypto.aead.new) and IV.  Three counter spaces per
direction keep nonces unique:
  nonce = write_iv XOR (space << 56 | seq) as 12 big-endian bytes,
  space 0 = DATA and CDATA (seq), 1 = ACK (ack_seq), 2 = CLOSE (close_seq);
the AAD is the packet bytes before the ciphertext: a DATA packet carries
only the low byte of its seq (the nonce uses the full seq, which the link
expands from its next expected seq, wire.expand_seq).  The channel counts its
own ACK and CLOSE seqs (each used once, never wrapped); DATA seqs come from
the link (a retransmission re-sends the same sealed bytes).
Receiving DATA: a replay window (`top` = highest seq accepted, `bits` bit k
= seq top-k accepted, k <= `window`) is checked before the AEAD and updated
only when the link keeps the message (`accept`), so a message dropped for
lack of reorder room can come again.  Anything more than `window` below
top is a replay.  A failed open raises AuthError and returns nothing.
"""

from atls import wire
from atls.crypto import aead
from atls.errors import AuthError, UsageError
from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN, suite_tag_len

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# bytes after the header: DATA seq; ACK; CLOSE; (ERROR); CDATA seq (§1)
_FIELDS = const(b"\x01\x08\x03\x00\x01")


def key_block(tls):
    """The one glue between a finished TLS 1.3 client and the channel: the
    56-byte key block TLS-Exporter("application-layer-tls", "", 56) (§3).
    The session, the HTTP/CoAP client, the probe and the benchmarks use it."""
    return tls.exporter(EXPORTER_LABEL, b"", KEY_BLOCK_LEN)


def split_key_block(kb):
    """(client_write_key, server_write_key, client_write_iv, server_write_iv)"""
    if len(kb) != KEY_BLOCK_LEN:
        raise UsageError("key block must be 56 bytes")
    kb = bytes(kb)
    return kb[:16], kb[16:32], kb[32:44], kb[44:]


def aad(t, sid, seq, b):
    """header || seq (DATA), ack_seq || next || bitmap (ACK, b = next << 32 |
    bitmap), close_seq || reason (CLOSE, b = reason): the decoded fields back."""
    n = _FIELDS[t - wire.DATA]
    if n == 1:
        return wire.encode(t, sid, bytes((seq & 0xFF,)))
    return wire.encode(t, sid, ((seq << ((n - 2) << 3)) | b).to_bytes(n, "big"))


class Channel:
    def __init__(self, key_block, suite, role, window=64):
        ck, sk, civ, siv = split_key_block(key_block)
        if role == "server":
            ck, sk, civ, siv = sk, ck, siv, civ
        elif role != "client":
            raise UsageError("role must be client or server")
        if window < 64:
            raise UsageError("replay window must be >= 64 (§3)")
        try:
            self.tag_len = suite_tag_len(suite)
        except ValueError:
            raise UsageError("unsupported suite")
        self.overhead = 4 + self.tag_len  # §3: header + seq + tag = 12 with CCM_8
        self._w = aead.new(suite, ck)
        self._r = aead.new(suite, sk)
        self._wiv = int.from_bytes(civ, "big")
        self._riv = int.from_bytes(siv, "big")
        self.window = window
        self.top = -1
        self.bits = 0
        self.ack_seq = 0  # next ACK counter (space 1)
        self.close_seq = 0  # next CLOSE counter (space 2)

    def seal(self, t, sid, a, b=0, payload=b""):
        """The packet bytes.  DATA, CDATA: a = seq, payload.  ACK: a = next,
        b = bitmap.  CLOSE: a = reason."""
        space = t - wire.DATA
        if space == 4:
            space = 0  # CDATA: the DATA seq space
        if space == 0:
            seq = a
            if seq < 0 or seq > wire.MAX_SEQ:
                raise UsageError("DATA seq out of range")
            a = 0
        elif space == 1:
            seq = self.ack_seq
            self.ack_seq = seq + 1
            a = (a << 32) | b
        elif space == 2:
            seq = self.close_seq
            self.close_seq = seq + 1
        else:
            raise UsageError("not a sealed type")
        if seq > wire.MAX_COUNTER:
            raise UsageError("counter exhausted")
        h = aad(t, sid, seq, a)
        return h + self._w.seal((self._wiv ^ ((space << 56) | seq)).to_bytes(12, "big"), h, payload)

    def open(self, pkt, own=False):
        """Plaintext of a packet from wire.decode (b"" for ACK and CLOSE).
        DATA: the seq in pkt is the full one (wire.expand_seq); Drop("replay")
        for a seq already accepted, before any crypto.  own=True opens a DATA
        packet this side sealed (for re-sending)."""
        t, sid, seq, b, body = pkt
        space = t - wire.DATA
        if space == 4:
            space = 0  # CDATA
        if space < 0 or space > 2:
            raise UsageError("not a sealed type")
        aead, iv = self._r, self._riv
        if own:
            aead, iv = self._w, self._wiv
        elif space == 0 and not self.fresh(seq):
            raise wire.Drop("replay")
        try:
            return aead.open(
                (iv ^ ((space << 56) | seq)).to_bytes(12, "big"), aad(t, sid, seq, b), body
            )
        except (AuthError, ValueError):
            raise AuthError("channel packet failed authentication")

    def fresh(self, seq):
        d = self.top - seq
        return d < 0 or (d <= self.window and d > 0 and not (self.bits >> d) & 1)

    def accept(self, seq):
        d = seq - self.top
        w = self.window
        if d > 0:
            self.bits = ((self.bits << d) | (1 << d)) & ((2 << w) - 1) if d <= w else 0
            self.top = seq
        elif -d <= w:
            self.bits |= 1 << -d
