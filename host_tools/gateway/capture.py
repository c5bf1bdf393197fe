"""Capture for debugging: every byte the gateway handles, appended to a file.

Records are kind (1 byte) | length (4 bytes, big endian) | bytes, with kind
    S  from the serial port (raw API frames, as read)
    s  to the serial port (encoded API frames)
    U  a device's packet toward its service
    u  a packet from a service
The gateway holds no keys, so the file holds only what crossed it: ATLS
packets (ciphertext after the handshake) and pairing requests, which name the
device in clear by design.
"""

__all__ = ["Capture", "SERIAL_IN", "SERIAL_OUT", "UP", "DOWN"]

SERIAL_IN = b"S"
SERIAL_OUT = b"s"
UP = b"U"
DOWN = b"u"


class Capture:
    def __init__(self, path):
        self.file = open(path, "ab")

    def record(self, kind, data):
        self.file.write(kind + len(data).to_bytes(4, "big") + bytes(data))
        self.file.flush()

    def close(self):
        self.file.close()
