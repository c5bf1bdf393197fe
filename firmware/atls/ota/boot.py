"""Boot-time firmware selection: which slot runs, trial boots and rollback.

Theory of operation
-------------------
The pointer `boot.json` under the OTA root says what runs:

    {"slot": "b", "version": "1.2.0", "state": "trial", "boots": 1,
     "prev": "a", "prev_version": "1.1.0", "bad": ""}

slot "" (or no pointer) is the factory firmware deployed at the board's
root.  The pointer is only ever replaced whole: written to `boot.tmp`, then
renamed over `boot.json` (atomic on littlefs; on FAT, where rename cannot
replace, the old one is removed first, so a missing `boot.json` with a
complete `boot.tmp` means the rename was cut short and `boot.tmp` is used).

select() at every boot, before any other firmware module is imported:
  1. state "trial" (a new version not yet confirmed): boots < max_boots ->
     boots + 1 (written before the version runs); otherwise roll back;
  2. the chosen slot must be complete: every file of its signed header
     (`head`, verified before the switch) present with its size and SHA-256;
     otherwise roll back (and if the previous slot fails too, the factory);
  3. the slot goes first on sys.path and the `atls` modules already loaded
     (this one, from the factory) are forgotten, so the slot's are imported.
Roll back = pointer to `prev`, confirmed, with the failed version in `bad`
(the updater refuses it from then on: FAILED_BEFORE).
confirm() (after a handshake with the service completed) ends the trial.
After select() the pointer always names what runs; running_version() reads it.
"""

import json
import sys

from atls.ota import default_root as _default_root
from atls.ota import fs as _fs
from atls.ota import pointer as _pointer

MAX_BOOTS = 3  # trial boots before a new version is rolled back
TRIAL_MS = 600000  # a version on trial that has not confirmed after this long resets the board


def default_root():
    return _default_root()


def read_pointer(root):
    """The pointer (dict) or None (factory).  A corrupt pointer is None."""
    return _pointer(root)


def write_pointer(root, p, fs=None):
    fs = fs or _fs.FS()
    tmp = root + "/boot.tmp"
    f = fs.open(tmp, "wb")
    try:
        fs.write(f, json.dumps(p).encode())
        fs.flush(f)
    finally:
        fs.close(f)
    _fs.replace(fs, tmp, root + "/boot.json")  # FAT: see the module comment


def slot_ok(root, slot, check_hash=True, hdr=None):
    """True when every file of the slot's signed header (`hdr` when the
    caller has it parsed already) is there, whole."""
    from atls.ota.bundle import BundleError, Header

    d = root + "/" + slot
    try:
        hdr = hdr or Header(_fs.read(d + "/head"))
    except (OSError, BundleError):
        return False
    buf = bytearray(512)
    for path, size, digest in hdr.files():
        if _fs.size(d + "/" + path) != size:
            return False
        if check_hash and _fs.sha256_file(d + "/" + path, buf) != digest:
            return False
    return True


def inactive(p):
    """The slot an update goes to: the one not running (a first when none is)."""
    return "b" if (p or {}).get("slot") == "a" else "a"


def install(root, version, fs=None):
    """The switch, once `stage/` is verified: remove the inactive slot, rename
    `stage/` to it, write the pointer naming it on trial (the previous slot
    kept for the rollback).  Returns the new slot.  Cut anywhere, the pointer
    names the old slot or the new one, each complete."""
    from atls.ota import running_version

    fs = fs or _fs.FS()
    p = read_pointer(root) or {}
    new = inactive(p)
    q = {"slot": new, "version": version, "state": "trial", "boots": 0}
    q["prev"], q["prev_version"] = p.get("slot") or "", running_version(root)
    q["bad"] = p.get("bad", "")
    _fs.rmtree(fs, root + "/" + new)
    fs.rename(root + "/stage", root + "/" + new)
    write_pointer(root, q, fs)
    try:
        fs.remove(root + "/" + new + "/prog")  # tidy only: slots ignore it
    except OSError:
        pass
    return new


def _rollback(root, p, fs):
    prev = p.get("prev", "")
    q = {"slot": prev, "version": p.get("prev_version", ""), "state": "ok", "boots": 0}
    q["prev"], q["prev_version"], q["bad"] = "", "", p.get("version", "")
    write_pointer(root, q, fs)
    print("ATLS " + json.dumps({"ev": "ota_rollback", "bad": q["bad"], "version": q["version"]}))
    return q


def select(root=None, max_boots=MAX_BOOTS, fs=None, path=None, modules=None, check_hash=True):
    """Choose the firmware for this boot (see the module comment); returns
    the pointer in force (None: factory).  Never raises for a bad pointer or
    slot: the worst case is the factory firmware."""
    root = default_root() if root is None else root
    fs = fs or _fs.FS()
    p = read_pointer(root)
    if p is None or not p.get("slot"):
        return p
    if p.get("state") == "trial":
        if p.get("boots", 0) >= max_boots:
            p = _rollback(root, p, fs)
        else:
            p["boots"] = p.get("boots", 0) + 1
            write_pointer(root, p, fs)
    while p["slot"] and not slot_ok(root, p["slot"], check_hash):
        p = _rollback(root, p, fs)  # at most twice: prev, then the factory
    if p["slot"]:
        path = sys.path if path is None else path
        path.insert(0, root + "/" + p["slot"])
        modules = sys.modules if modules is None else modules
        for name in list(modules):
            if name == "atls" or name.startswith("atls."):
                del modules[name]
    return p


def confirm(root=None, fs=None):
    """The running version completed a handshake with the service: keep it.
    True when a trial ended now."""
    root = default_root() if root is None else root
    p = read_pointer(root)
    if not p or p.get("state") != "trial":
        return False
    p["state"], p["boots"] = "ok", 0
    write_pointer(root, p, fs)
    return True


def on_trial(root=None):
    """True while the running version awaits its confirmation: the app resets
    the board when that lasts TRIAL_MS (a version that runs but never reaches
    the service must not stay), and the boot count rolls it back."""
    p = read_pointer(default_root() if root is None else root)
    return bool(p and p.get("state") == "trial")


def start(root=None, entry="atls.supervisor", reset=None):
    """main.py's whole job: select(), then import `entry` and run its main().
    A selected slot whose firmware does not even import is rolled back at
    once and the board reset (`reset`, default machine.reset; on the unix
    port exit status RESET_EXIT, which the simulator answers with a restart,
    as for atls.ota.agent.reset)."""
    root = default_root() if root is None else root
    p = None
    try:
        p = select(root)
    except Exception as e:  # never keep a board from booting: the factory runs
        print("ATLS " + json.dumps({"ev": "ota_boot_error", "error": repr(e)}))
    try:
        mod = __import__(entry, None, None, ["main"])
    except Exception as e:
        if not (p and p.get("slot")):
            raise
        print("ATLS " + json.dumps({"ev": "ota_boot_error", "error": repr(e)}))
        _rollback(root, p, _fs.FS())
        if reset is None:
            if sys.platform in ("linux", "darwin", "win32"):
                raise SystemExit(75)  # atls.ota.agent.RESET_EXIT: the runner restarts us
            import machine

            reset = machine.reset
        reset()
        raise
    run = mod.main
    del mod, p
    if sys.implementation.name == "micropython":  # CPython callers keep their modules
        _forget(sys.modules)
    run()


def _forget(modules):
    """Leave the heap to the application (about 9 KiB): the boot code and the
    OTA package are unloaded once the firmware is chosen; whatever needs them
    later imports them again.  This module's names go too (start() keeps
    running on its locals only)."""
    for name in ("atls.ota.boot", "atls.ota.fs", "atls.ota"):
        if name in modules:
            del modules[name]
    pkg = modules.get("atls")
    if pkg is not None and "ota" in dir(pkg):
        delattr(pkg, "ota")
    globals().clear()
