"""What a paired device keeps from pairing: `paired.json` (K, the gateway's
key for this device) and the driver hook that believes an authenticated
NOT_PAIRED.  Apart from atls.pairing_client so that a device that is paired
already never loads the pairing exchange (heap, issue 17), and one that has
just paired can drop it: the hook holds K's tag, not the pairing code.
"""

import json

STATE_FILE = "paired.json"


class NotPaired(Exception):
    """The gateway said, authenticated, that this device is not paired."""


def load(dev):
    """paired.json when it is this device's for this service, else None."""
    try:
        with open(STATE_FILE) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    if st.get("device") == dev["device_id"] and st.get("service") == dev.get("service", "default"):
        return st
    return None


def save(dev, addr_hex, key_hex):
    with open(STATE_FILE, "w") as f:
        json.dump(
            {
                "version": 2,
                "device": dev["device_id"],
                "service": dev.get("service", "default"),
                "address64": addr_hex,
                "key": key_hex,
            },
            f,
        )


def forget():
    """Drop paired.json: the next start pairs again."""
    import os

    try:
        os.remove(STATE_FILE)
    except OSError:
        pass


def not_paired_check(key):
    """A hook for the driver: raises NotPaired (after dropping paired.json)
    on a NOT_PAIRED carrying K's tag; ignores every other pairing packet.
    The closure keeps two values, nothing of atls.pairing."""
    from atls.pairing import MARKER, NOT_PAIRED, tag

    first = MARKER | NOT_PAIRED
    expect = tag(key, b"not paired")

    def check(payload):
        if len(payload) == 17 and payload[0] == first:
            d = 0
            for i in range(16):  # no early exit (atls.pairing.same)
                d |= payload[1 + i] ^ expect[i]
            if d == 0:
                forget()
                raise NotPaired("the gateway says this device is not paired")
        return False

    return check


def hook_if_paired(drv, dev):
    """Install the NOT_PAIRED hook from paired.json: True when the device is
    paired (nothing to do), False when it must pair."""
    st = load(dev)
    if st is None or not st.get("key"):
        return False
    from binascii import unhexlify

    drv.pairing_hook = not_paired_check(unhexlify(st["key"]))
    return True
