"""`python -m host_tools.registry`: list, add, revoke and import devices;
target a firmware version and grant updates (docs/OTA.md)."""

import argparse
import json
import sys
import time

from host_tools.registry.store import RegistryError, Store

__all__ = ["main"]


def _when(t):
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.registry", description=__doc__)
    ap.add_argument("--db", required=True, help="registry database (SQLite; created if missing)")
    ap.add_argument("--key", help="master key file (default: <db>.key)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="every device (no secrets)")
    ls.add_argument("--json", action="store_true")
    add = sub.add_parser("add", help="register a device")
    add.add_argument("device")
    add.add_argument("--psk", help="hex, 16..64 bytes")
    add.add_argument("--cert-sha256", help="SHA-256 of the device certificate (DER), hex")
    add.add_argument("--spki-sha256", help="SHA-256 of its public key (SPKI DER), hex")
    add.add_argument("--force", action="store_true", help="replace (and un-revoke) a device")
    rv = sub.add_parser("revoke", help="revoke a device (the running service ends its sessions)")
    rv.add_argument("device")
    im = sub.add_parser("import", help="import a devices.json")
    im.add_argument("json_file")
    im.add_argument("--force", action="store_true", help="replace devices already registered")
    tg = sub.add_parser("target", help="the firmware version a device should run (docs/OTA.md)")
    tg.add_argument("device")
    tg.add_argument("version", nargs="?", help="x.y.z")
    tg.add_argument("--board", help="the device's board (bundles are per board)")
    tg.add_argument("--clear", action="store_true", help="no target (and no board)")
    ot = sub.add_parser("ota", help="grant (on) or refuse (off) a device firmware updates")
    ot.add_argument("device")
    ot.add_argument("state", choices=("on", "off"))
    a = ap.parse_args(argv)
    if a.cmd == "target" and (a.version is None) == (not a.clear):
        ap.error("target needs a VERSION or --clear (not both)")
    try:
        store = Store(a.db, a.key, with_key=a.cmd not in ("target", "ota"))
        if a.cmd == "list":
            devs = store.devices()
            if a.json:
                print(json.dumps(devs, indent=1))
            for d in [] if a.json else devs:
                cred = "psk" if d["psk"] else ("cert" if d["cert_sha256"] else "spki")
                state = "revoked " + _when(d["revoked"]) if d["revoked"] else "active"
                target = d["target_version"] or "-"
                if d["board"]:
                    target += " (%s)" % d["board"]
                print(
                    "%-20s %-5s %-28s last_seen %s firmware %s target %s%s"
                    % (
                        d["id"],
                        cred,
                        state,
                        _when(d["last_seen"]),
                        d["firmware"] or "-",
                        target,
                        "" if d["ota"] else " ota off",
                    )
                )
        elif a.cmd == "add":
            try:
                psk = bytes.fromhex(a.psk) if a.psk else None
            except ValueError:
                raise RegistryError("--psk must be hex")
            store.add(a.device, psk, a.cert_sha256, a.spki_sha256, a.force)
            print("added %s" % a.device)
        elif a.cmd == "revoke":
            if not store.revoke(a.device):
                raise RegistryError("no active device %r" % a.device)
            print("revoked %s" % a.device)
        elif a.cmd == "target":
            if not store.set_target(a.device, None if a.clear else a.version, a.board):
                raise RegistryError("no device %r" % a.device)
            print("%s target %s" % (a.device, "cleared" if a.clear else a.version))
        elif a.cmd == "ota":
            if not store.set_ota(a.device, a.state == "on"):
                raise RegistryError("no device %r" % a.device)
            print("%s ota %s" % (a.device, a.state))
        else:
            print("imported %d devices" % store.import_json(a.json_file, a.force))
    except RegistryError as e:
        print("registry: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
