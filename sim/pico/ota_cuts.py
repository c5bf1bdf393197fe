"""Power cuts during a firmware update on the emulated Pico (issue 20): the real
firmware (atls.ota.*, deployed as armv6m .mpy with main.py) on the board's littlefs2
flash, a real bundle signed by host_tools.ota, and the power cut by the emulator.

    staged()   a flash image: the firmware (A, the factory 0.0.0) and `/ota/stage/`
               holding a signed bundle of the whole firmware (B, 1.0.0) but its last
               CHUNK, as atls.ota.updater.Updater leaves it (written through the raw
               REPL; via="updater": received CHUNK by CHUNK, 10x the cycles); cached
               in build/pico/
    reference() the uncut run: how many flash operations the switch makes
    trial(k)   one power cut before flash operation k (torn: that operation half done)

The span cut: from "staging complete" (the last CHUNK arrives: GPIO22 goes high, the
updater hashes every file, atls.ota.boot.install renames stage/ to a slot and writes
the pointer) through the reboot (main.py: atls.ota.boot.start -> select, the trial
boot count written) to the confirmation (atls.ota.boot.confirm, what the application
calls after its first handshake).  Only flash survives a cut, and it changes only in
the bootrom's erase/program calls, so a cut before operation k stands for every cut
between operations k-1 and k; torn=T does the first T of operation k's bytes (a
half-programmed page, a half-erased sector).  After the cut the board boots again from
the same flash (main.py, no device.json: the firmware stops at its configuration
error, then Ctrl-C) and inspect() reads what runs: the pointer, sys.path, the file of
every atls module loaded, the SHA-256 of every firmware file.  verified() checks that
against the two versions: all of A (the deployed files, modules from the root) or all
of B (the signed file table, modules from the pointer's slot), nothing else.
"""

import base64
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from sim.pico.driver import CACHE, EmulatorError, Pico, deployed, firmware_files

VERSION = "1.0.0"
BOARD = "pico_w"
ROOT = "/ota"
TAIL = 4096  # the bundle bytes each trial carries: what prog may lag behind, and more
LAST = 48  # the last CHUNK (one ZigBee frame's worth)
# the test release key: fixed, so the staged image is cached across runs
TEST_SEED = hashlib.sha256(b"atls-mcu pico ota power-cut test release key").digest()

BOOTED = '"config_error"'  # the firmware came up (device.json missing) and waits

FEED = r"""
from binascii import a2b_base64 as _d
from atls.ota import wire as _w
def feed(u, start, data, upto, n=1024):
    # CHUNKs of n bytes (wire.MAX_CHUNK) from `start` up to `upto`; the last STATUS
    st = None
    off = start
    while off < upto:
        r = u.on_message(_w.push_chunk(off, data[off - start:min(off + n, upto) - start]))
        if r:
            st = _w.pull(r)[1]
        off = min(off + n, upto)
    return st
"""

SWITCH = (
    FEED
    + r"""
import machine
from atls.ota.updater import Updater
u = Updater(%(root)r, bytes.fromhex(%(pub)r), %(board)r)
st = _w.pull(u.on_message(_w.push_offer(%(ver)r, %(total)d, bytes.fromhex(%(bid)r))))[1]
off = st[1]
assert st[0] == _w.RECEIVING and %(tail_at)d <= off <= %(last_at)d, st
TAIL = _d(%(tail)r)
feed(u, off, TAIL[off - %(tail_at)d:], %(last_at)d)
pin = machine.Pin(22, machine.Pin.OUT, value=0)
pin.value(1)  # staging complete: the last CHUNK goes in (a --cut-from mark counts from here)
st = feed(u, %(last_at)d, TAIL[%(last_at)d - %(tail_at)d:], %(total)d)
pin.value(0)
print("SWITCH", st[0] == _w.SWITCHED, u.state)
"""
)

INSPECT = r"""
import sys, json, os, hashlib
mods = {}
for n in list(sys.modules):
    if n == "atls" or n.startswith("atls."):
        mods[n] = getattr(sys.modules[n], "__file__", "")
path0 = sys.path[0] if sys.path else ""
from atls.ota import pointer
p = pointer(%(root)r)
slot = (p or {}).get("slot") or ""
base = (%(root)r + "/" + slot) if slot else ""
files = {}
def walk(d, rel):
    for e in os.ilistdir(d):
        if e[1] & 0x4000:
            walk(d + "/" + e[0], rel + e[0] + "/")
        else:
            h = hashlib.sha256()
            with open(d + "/" + e[0], "rb") as f:
                while True:
                    b = f.read(512)
                    if not b:
                        break
                    h.update(b)
            files[rel + e[0]] = h.digest().hex()
walk(base + "/atls", "atls/")
print("INSPECT " + json.dumps({"pointer": p, "path0": path0, "mods": mods, "files": files}))
"""


def release_key(path):
    """The fixed test release key as host_tools.ota writes one (PEM, 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(TEST_SEED)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    return path


def bundle(workdir):
    """`make release VERSION=1.0.0 BOARD=pico_w` in Python (host_tools.ota.release):
    (bundle bytes, public key, Bundle)."""
    from host_tools.ota import keys, release

    key = release_key(Path(workdir) / "release.key")
    path, b = release.release(VERSION, BOARD, key_path=key, out=Path(workdir) / "out")
    return path.read_bytes(), keys.public_bytes(keys.load_private(key)), b


def boot(pico, timeout=600):
    """Power on: main.py selects and starts the firmware, which stops at its missing
    device.json; Ctrl-C then leaves it at the prompt.  False when the emulator ended
    first (a power cut at boot)."""
    pico.wait_console(BOOTED, timeout)
    if pico.proc.poll() is not None:
        return False
    pico.interrupt()
    pico.wait_prompt(timeout)
    return True


def stage_files(data):
    """{device path: bytes}: the staging area atls.ota.updater leaves once every byte
    of `data` but the last LAST has arrived and its progress is written (docs/OTA.md:
    `stage/head`, the files so far, `stage/prog` = id, total, offset)."""
    from atls.ota.bundle import SIG_LEN, Header, bundle_id

    hdr = Header(data)
    total, upto = len(data), len(data) - LAST
    at = hdr.head + SIG_LEN
    out = {"head": data[:at]}
    for name, size, _digest in hdr.files():
        if at < upto:
            out[name] = data[at : min(at + size, upto)]
        at += size
    out["prog"] = ("%s %d %d" % (bundle_id(data).hex(), total, upto)).encode()
    return {ROOT + "/stage/" + k: v for k, v in out.items()}


def staged(data, pub, via="files"):
    """The flash image at "staging complete but the last CHUNK", cached by content.
    via="files": the staging area written as the updater leaves it (stage_files(),
    through the raw REPL like a deployment: ~0.4 G emulated cycles); via="updater":
    received by atls.ota.updater.Updater CHUNK by CHUNK (~5 G cycles: littlefs
    lookups and syncs per chunk on an M0+).  Either way the switch trial's Updater
    checks the signature and every hash again before it switches."""
    from atls.ota.bundle import Header, bundle_id

    base = deployed()  # the firmware as `make deploy` puts it, main.py included
    h = hashlib.sha256(Path(base).name.encode() + via.encode() + data).hexdigest()[:20]
    path = CACHE / ("ota-staged-%s.bin" % h)
    if path.exists():
        return path
    hdr = Header(data)
    total, bid = len(data), bundle_id(data).hex()
    if via == "files":
        from sim.pico.driver import write_files

        with Pico(flash=base) as pico:
            boot(pico)
            write_files(pico, stage_files(data))
            tmp = path.with_suffix(".tmp.%d" % os.getpid())
            pico.dump(tmp)
        os.replace(tmp, path)
        return path
    with Pico(flash=base) as pico:
        boot(pico)
        pico.run(
            FEED
            + "from atls.ota.updater import Updater\n"
            # progress at each file's end only, one STATUS a file: the staging is
            # set-up here, the switch after it is what the trials cut
            + "u = Updater(%r, bytes.fromhex(%r), %r, ack_bytes=1 << 20, persist_bytes=1 << 20)\n"
            % (ROOT, pub.hex(), BOARD)
            + "print(_w.pull(u.on_message(_w.push_offer(%r, %d, bytes.fromhex(%r)))))"
            % (hdr.version, total, bid)
        )
        step = 12288
        for off in range(0, total - LAST, step):
            end = min(off + step, total - LAST)
            pico.run(  # raises EmulatorError when the updater refused the bundle
                "st = feed(u, %d, _d(%r), %d)\nassert st is None or st[0] == _w.RECEIVING, st"
                % (off, base64.b64encode(data[off:end]).decode(), end)
            )
        tmp = path.with_suffix(".tmp.%d" % os.getpid())
        pico.dump(tmp)
    os.replace(tmp, path)
    return path


class Run:
    """One update on the emulated Pico, cut or not (trial())."""

    def __init__(self, workdir, data, pub):
        from atls.ota.bundle import Header, bundle_id

        self.dir = Path(workdir)
        self.data, self.pub = data, pub
        hdr = Header(data)
        self.version = "%d.%d.%d" % hdr.version
        self.b_files = {p: d.hex() for p, _n, d in hdr.files()}
        self.a_files = {
            p: hashlib.sha256(v).hexdigest()
            for p, v in firmware_files().items()
            if p.startswith("atls/")
        }
        total = len(data)
        self.switch = SWITCH % {
            "root": ROOT,
            "pub": pub.hex(),
            "board": BOARD,
            "ver": hdr.version,
            "total": total,
            "bid": bundle_id(data).hex(),
            "tail_at": total - TAIL,
            "last_at": total - LAST,
            "tail": base64.b64encode(data[total - TAIL :]).decode(),
        }
        self.image = staged(data, pub)
        self.n_switch = self.n_boot = None  # flash operations in each phase (reference())

    def trial(self, cut=None, name="trial"):
        """Run the update from the staged image; cut: (k, torn) or None.  Returns
        {"cut": where it hit or None, "phase", "inspect": what the next boot runs}."""
        flash = self.dir / (name + ".bin")
        shutil.copyfile(self.image, flash)
        out = {"cut": None, "phase": "done"}
        k = None if cut is None else cut[0]
        c1 = None if k is None else (k, cut[1])
        with Pico(flash=flash, persist=flash, cut=c1, cut_from="mark") as pico:
            try:
                boot(pico)
                r = pico.exec(self.switch, timeout=900)
                if pico.cut_event is None:
                    r.check()
                    out["switch"] = r.lines("SWITCH")
                    out["switch_ops"] = pico.span_ops[-1] if pico.span_ops else None
            except EmulatorError:
                if pico.cut_event is None:
                    raise
            if pico.cut_event is not None:
                out.update(cut=pico.cut_event, phase="switch")
                return self._after(flash, out)
        c2 = None if k is None else (k - self.n_switch, cut[1])
        with Pico(flash=flash, persist=flash, cut=c2, cut_from="boot") as pico:
            try:
                if boot(pico):
                    r = pico.run("from atls.ota import boot\nprint('CONFIRM', boot.confirm())")
                    out["confirm"] = r.lines("CONFIRM")
            except EmulatorError:
                if pico.cut_event is None:
                    raise
            if pico.cut_event is not None:
                out.update(cut=pico.cut_event, phase="boot")
        if pico.stats:
            out["boot_ops"] = pico.stats.get("flash_ops")
        return self._after(flash, out)

    def _after(self, flash, out):
        with Pico(flash=flash, persist=flash) as pico:
            if not boot(pico):
                raise EmulatorError("the board did not come up after the cut")
            r = pico.run(INSPECT % {"root": ROOT})
        out["inspect"] = json.loads(r.lines("INSPECT")[0])
        return out

    def reference(self):
        """The uncut update: it must end on B, confirmed; sets the flash operation
        counts the cut points are drawn from."""
        r = self.trial(None, "reference")
        if r.get("switch") != ["True SWITCHED"] or r.get("confirm") != ["True"]:
            raise AssertionError("the uncut update did not switch and confirm: %r" % r)
        self.n_switch, self.n_boot = r["switch_ops"], r["boot_ops"]
        return r

    def verified(self, insp):
        """'A' or 'B' when the board runs all of one verified version, else a reason."""
        p = insp["pointer"]
        slot = (p or {}).get("slot") or ""
        mods = insp["mods"]
        if not slot:
            if insp["files"] != self.a_files:
                return "factory files differ from the deployed firmware"
            if any(f.startswith(ROOT) for f in mods.values()):
                return "factory boot with modules from %s" % ROOT
            return "A"
        where = "%s/%s/" % (ROOT, slot)
        if p.get("version") != self.version:
            return "slot %s names version %r" % (slot, p.get("version"))
        if insp["files"] != self.b_files:
            return "slot %s files differ from the signed bundle" % slot
        if insp["path0"] != where.rstrip("/"):
            return "sys.path[0] is %r" % insp["path0"]
        stray = [n for n, f in mods.items() if not f.startswith(where)]
        if stray or "atls.supervisor" not in mods:
            return "modules not from the slot: %s" % stray
        return "B"

    def cut_points(self, n, seed):
        """n seeded random cut points (k, torn), one in each n-th of the span (so a few
        reach both sides of the pointer's rename and the boot), torn half the time."""
        rng = random.Random(seed)
        total = self.n_switch + self.n_boot
        pts = []
        for i in range(n):
            k = rng.randrange(i * total // n, max(i * total // n + 1, (i + 1) * total // n))
            pts.append((k, round(rng.random(), 3) if rng.random() < 0.5 else 0.0))
        return pts


def sweep(torn=8, seed=1, every=True, workdir=None):
    """`make bench` section pico, pico_ota_*: a cut before every flash operation of
    the span (every=True), plus `torn` seeded random torn cuts; after each, a boot
    that must run a verified version."""
    import tempfile
    import time

    t0 = time.time()
    wd = Path(workdir or tempfile.mkdtemp(prefix="atls-pico-ota-"))
    data, pub, _ = bundle(wd)
    run = Run(wd, data, pub)
    run.reference()
    total = run.n_switch + run.n_boot
    rng = random.Random(seed)
    pts = [(k, 0.0) for k in range(total)] if every else []
    pts += [(rng.randrange(total), round(rng.uniform(0.05, 0.95), 3)) for _ in range(torn)]
    verdicts = []
    for k, t in pts:
        r = run.trial((k, t), "cut")
        verdicts.append(run.verified(r["inspect"]) if r["cut"] else "no cut")
    return {
        "pico_ota_bundle_bytes": len(data),
        "pico_ota_flash_ops_switch": run.n_switch,
        "pico_ota_flash_ops_boot": run.n_boot,
        "pico_ota_cut_seed": seed,
        "pico_ota_cuts_tried": len(verdicts),
        "pico_ota_cuts_torn": sum(1 for _k, t in pts if t),
        "pico_ota_boots_verified": sum(v in ("A", "B") for v in verdicts),
        "pico_ota_boots_a": verdicts.count("A"),
        "pico_ota_boots_b": verdicts.count("B"),
        "pico_ota_failures": [v for v in verdicts if v not in ("A", "B")],
        "pico_ota_wall_s": round(time.time() - t0, 1),
    }
