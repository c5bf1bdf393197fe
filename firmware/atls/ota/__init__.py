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


def running_version(root=None):
    """The version this device runs ("major.minor.patch"): the selected
    slot's (from the pointer boot selection keeps true), else the factory's."""
    from atls.ota import boot

    p = boot.read_pointer(boot.default_root() if root is None else root)
    return p["version"] if p and p.get("slot") else FACTORY_VERSION
