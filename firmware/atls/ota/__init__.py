"""Signed firmware updates (issue 20): the device side.

    bundle.py   the signed bundle format (the host builds bundles with it)
    wire.py     OFFER / CHUNK / STATUS on the update channel (shared too)
    fs.py       the few filesystem operations, one object tests can cut power in
    boot.py     boot-time slot selection, trial boots, rollback, confirm
    updater.py  the sans-I/O receiver: chunks at offsets -> staging -> switch

Layout under the OTA root (/ota on a board): `boot.json` (the pointer, always
replaced by rename), slots `a/` and `b/` (each `head` + `atls/**.mpy`),
`stage/` (a download in progress, `prog` = its progress).  Without a pointer
the board runs the firmware deployed at its root (the factory image,
FACTORY_VERSION).  docs/OTA.md describes the whole scheme.

This module stays tiny: main.py imports atls.ota.boot before anything else.
"""

import sys as _sys

FACTORY_VERSION = "0.0.0"  # what a board runs from `make deploy` (no slot)


def parse_version(s):
    """ "1.2.3" -> (1, 2, 3); each part 0..65535.  ValueError otherwise."""
    parts = str(s).split(".")
    if len(parts) != 3:
        raise ValueError("version must be major.minor.patch")
    v = tuple(int(p) for p in parts)
    for p in v:
        if not 0 <= p <= 0xFFFF:
            raise ValueError("version part out of range")
    return v


def format_version(v):
    return "%d.%d.%d" % (v[0], v[1], v[2])


def default_root():
    return "ota" if _sys.platform in ("linux", "darwin", "win32") else "/ota"


def pointer(root=None):
    """The pointer `boot.json` (dict) or None (factory; a corrupt pointer too).
    A missing boot.json with a boot.tmp: the rename was cut short on FAT
    (atls.ota.boot).  Here, not in boot, so the app reads the version without
    loading the boot code (heap)."""
    import json

    root = default_root() if root is None else root
    try:
        try:
            f = open(root + "/boot.json")
        except OSError:
            f = open(root + "/boot.tmp")
        try:
            p = json.loads(f.read())
        finally:
            f.close()
    except (OSError, ValueError):
        return None
    if isinstance(p, dict) and p.get("slot", "") in ("", "a", "b"):
        return p
    return None


def running_version(root=None):
    """The version this device runs ("major.minor.patch"): the selected
    slot's (from the pointer boot selection keeps true), else the factory's."""
    p = pointer(root)
    return p["version"] if p and p.get("slot") else FACTORY_VERSION
