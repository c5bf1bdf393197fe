"""64-bit module addresses: the emulator's numbering and two helpers.

Modules are numbered 0013A20040000000 + n (coordinators) and
0013A20041000000 + n (devices), n from 1.
"""

COORDINATOR_BASE = 0x0013A20040000000
DEVICE_BASE = 0x0013A20041000000


def hex64(addr):
    return bytes(addr).hex().upper()


def addr64(value):
    """bytes(8) from bytes, an int or a 16-digit hex string."""
    if isinstance(value, int):
        return value.to_bytes(8, "big")
    if isinstance(value, str):
        value = bytes.fromhex(value)
    if len(value) != 8:
        raise ValueError("64-bit address must be 8 bytes")
    return bytes(value)
