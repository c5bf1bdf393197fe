"""Device side of pairing with the gateway (docs/PROTOCOL.md §8).

A device pairs on first boot (no `paired.json`), or when asked to (pairing
button held at boot, or `pairing_mode` in device.json).  It waits until its
XBee has joined the network, then repeats a PAIR_REQUEST every 2 s, showing
the 6-digit confirmation code on the console (and blinking it on a LED when
the board has one), until the gateway accepts or rejects.  Pairing only
opens the network path; it never touches the end-to-end keys.
"""

import json

from atls import pairing
from atls.errors import DecodeError

STATE_FILE = "paired.json"
_REPEAT_MS = 2000


class PairingError(Exception):
    pass


def _is_paired(dev):
    try:
        with open(STATE_FILE) as f:
            st = json.load(f)
        return st.get("device") == dev["device_id"] and st.get("service") == dev.get(
            "service", "default"
        )
    except (OSError, ValueError):
        return False


def _hex(b):
    from binascii import hexlify

    return hexlify(b).decode()


def _save(dev, addr_hex):
    with open(STATE_FILE, "w") as f:
        json.dump(
            {
                "device": dev["device_id"],
                "service": dev.get("service", "default"),
                "address64": addr_hex,
            },
            f,
        )


def ensure_paired(drv, dev, clock, status, force=False, timeout_ms=300000, rng=None):
    """Return once the device is paired with the gateway (or was already)."""
    if not force and _is_paired(dev):
        return False
    from atls.crypto.backend import random_bytes

    service = dev.get("service", "default")
    nonce = (rng or random_bytes)(pairing.NONCE_LEN)
    code = pairing.confirmation_code(drv.address64, nonce, dev["device_id"], service)
    request = pairing.encode_request(nonce, dev["device_id"], service)
    status("pairing", code=code, address=_hex(drv.address64), service=service)
    start = clock()
    next_send = start
    while clock() - start < timeout_ms:
        if not drv.joined:
            drv.wait_joined(1000)  # the gateway's join window is not open yet
            continue
        now = clock()
        if now >= next_send:
            drv.send(request)
            next_send = now + _REPEAT_MS
        for payload in drv.recv(50):
            try:
                msg = pairing.decode(payload)
            except DecodeError:
                continue
            if msg[0] == "request" or msg[1] != nonce:
                continue
            if msg[0] == "accept":
                _save(dev, _hex(drv.address64))
                status("paired", service=service)
                return True
            if msg[0] == "reject":
                status("pairing_rejected", reason=pairing.REASONS.get(msg[2], msg[2]))
                raise PairingError(
                    "gateway refused pairing: %s" % pairing.REASONS.get(msg[2], msg[2])
                )
    raise PairingError("pairing timed out")
