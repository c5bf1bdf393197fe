"""XBee API frame codec (atls.xbee): one 84-byte Transmit Request (the XBee 3
Zigbee unicast payload limit), encoded and decoded, in API mode 1 and 2.

Metrics (microseconds per frame):
  ap<m>_encode_84B_us          tx_request() + encode_frame()
  ap<m>_decode_84B_us          FrameDecoder.feed(whole frame) + parse()
  ap<m>_encode_decode_84B_us   both
  ap<m>_decode_16B_chunks_us   decode when the UART hands over 16 bytes at a time
The payload is pseudo-random (like ciphertext) with 2 bytes that AP=2 escapes.
"""

from benchutil import emit, per_op

from atls import xbee as X

DEST = b"\x00\x13\xa2\x00\x41\x00\x00\x01"
PAYLOAD = bytes((i * 167 + 13) & 0xFF for i in range(82)) + b"\x7e\x11"


def main():
    res = {}
    for mode in (1, 2):
        esc = mode == 2
        dec = X.FrameDecoder(esc)
        raw = X.encode_frame(X.tx_request(1, DEST, PAYLOAD), esc)
        chunks = [raw[i : i + 16] for i in range(0, len(raw), 16)]

        def enc():
            return X.encode_frame(X.tx_request(1, DEST, PAYLOAD), esc)

        def decode():
            return X.parse(dec.feed(raw)[0])

        def both():
            return X.parse(dec.feed(enc())[0])

        def chunked():
            for c in chunks:
                for f in dec.feed(c):
                    X.parse(f)

        if decode()[6] != PAYLOAD:
            raise RuntimeError("round trip failed")
        p = "ap%d_" % mode
        res[p + "encode_84B_us"] = per_op(enc)
        res[p + "decode_84B_us"] = per_op(decode)
        res[p + "encode_decode_84B_us"] = per_op(both)
        res[p + "decode_16B_chunks_us"] = per_op(chunked)
        res[p + "frame_bytes"] = len(raw)
    emit(res)


main()
