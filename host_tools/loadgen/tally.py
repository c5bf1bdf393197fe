"""What the application received against what the devices sent and had
acknowledged, per device, exactly: `lost` = acknowledged but never received,
`duplicated` = received more than once, `rehandshakes` = handshakes beyond
the first of a device whose session was established."""

import os
from collections import Counter

__all__ = ["read_records", "tally"]


def read_records(directory):
    """Counter of (identity, n) over every record-*.txt in `directory`
    (CountingApp: one file per service process)."""
    got = Counter()
    for name in sorted(os.listdir(directory)):
        if not (name.startswith("record-") and name.endswith(".txt")):
            continue
        with open(os.path.join(directory, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and line.endswith("\n"):  # a torn last line is no delivery
                    try:
                        got[(parts[0], int(parts[1], 16))] += 1
                    except ValueError:
                        pass
    return got


def tally(fleet, directory):
    """{sent, acknowledged, received, lost, duplicated, unacknowledged,
    rehandshakes, devices_up}."""
    got = read_records(directory)
    sent = acked = lost = unacked = 0
    mine = set()
    for dev in fleet.devices:
        ident = dev.ident.decode()
        ns = fleet.acked_ns(dev)
        sent += dev.sent
        acked += len(ns)
        unacked += dev.sent - len(ns)
        lost += sum(1 for n in ns if (ident, n) not in got)
        mine.add(ident)
    dup = sum(c - 1 for (ident, _), c in got.items() if c > 1 and ident in mine)
    return {
        "sent": sent,
        "acknowledged": acked,
        "received": sum(got.values()),
        "lost": lost,
        "duplicated": dup,
        "unacknowledged": unacked,
        "rehandshakes": sum(max(0, d.ups - 1) for d in fleet.devices),
        "devices_up": fleet.up,
    }
