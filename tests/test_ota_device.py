"""The device's updater and boot selection (firmware/atls/ota, issue 20) under
the MicroPython unix port, on a real filesystem directory.

Bundles are built and signed in CPython (host_tools.ota.bundle) with a test
release key; each scenario runs in its own MicroPython process (DEVICE below)
and prints its findings as JSON.  Power cuts are simulated by an FS whose
k-th flash-changing operation raises: the next "boot" (a new Updater and
atls.ota.boot.select) must always choose a verified firmware, for every k.
"""

import pytest
from conftest import TESTS, MicroPython
from cryptography.hazmat.primitives.asymmetric import ed25519

from atls.ota import wire
from host_tools.ota import bundle, keys, release

BOARD = "unix"
SMALL = [("atls/_v.py", b"V = 1\n"), ("atls/x/y.py", b"#" * 300), ("atls/empty.py", b"")]
SMALL += [("atls/z.mpy", bytes(range(256)) * 3)]
SMALL += [("atls/entry.py", b"def main():\n    print('ENTRY ' + __file__)\n")]

# The device side: helpers shared by every scenario, then the scenario named
# by argv[1]; argv[2] is the folder holding the bundles, the public key and
# the OTA root.
DEVICE = r"""
import json, os, sys
from atls.ota import boot, wire, updater, fs as ofs
import atls.ota as ota

D = sys.argv[2]
ROOT = D + "/root"
PUB = bytes.fromhex(open(D + "/pub").read())
out = {}

class PowerCut(Exception):
    pass

class CutFS(ofs.FS):
    # the k-th flash-changing operation (counted from arm()) raises PowerCut
    def __init__(self):
        self.k = -1
        self.n = 0
    def arm(self, k):
        self.k, self.n = k, 0
    def _op(self):
        if self.k >= 0:
            if self.n == self.k:
                self.k = -1
                raise PowerCut()
            self.n += 1
FAT = "fat" in sys.argv[3:]  # rename cannot replace a file, as on FAT

for _m in ("mkdir", "rename", "remove", "rmdir", "write", "flush"):
    def _wrap(m):
        base = getattr(ofs.FS, m)
        def f(self, *a):
            self._op()
            if FAT and m == "rename" and ofs.exists(a[1]):
                raise OSError(17)
            return base(self, *a)
        return f
    setattr(CutFS, _m, _wrap(_m))

def load(name):
    return open(D + "/" + name, "rb").read()

def meta(data):
    from atls.ota.bundle import Header, bundle_id
    return Header(data).version, len(data), bundle_id(data)

def offer(u, data, version=None):
    v, n, bid = meta(data)
    return wire.pull(u.on_message(wire.push_offer(version or v, n, bid)))[1]

def send(u, data, start=0, step=48, stop=None):
    # chunks from `start`; the last STATUS seen
    last = None
    off = start
    stop = len(data) if stop is None else stop
    while off < stop:
        r = u.on_message(wire.push_chunk(off, data[off:min(off + step, stop)]))
        if r:
            last = wire.pull(r)[1]
            if last[0] != wire.RECEIVING:
                return last
        off += step
    return last

def new(fs=None, board="unix", key=PUB):
    return updater.Updater(ROOT, key, board, fs=fs)

def boot_(fs=None, max_boots=3):
    return boot.select(ROOT, max_boots=max_boots, fs=fs, path=[], modules={})

def rm(p):
    ofs.rmtree(ofs.FS(), p)

def installed(data, slot):
    # the slot holds exactly the bundle's verified files
    return boot.slot_ok(ROOT, slot) and open(ROOT + "/" + slot + "/head", "rb").read() == data[:len(open(ROOT + "/" + slot + "/head", "rb").read())]

S = sys.argv[1]
"""

SCENARIOS = {
    # good update: offer, transfer, verify, switch, trial boot, confirm
    "good": r"""
good = load("good.atb")
u = new()
out["offer"] = offer(u, good)
out["end"] = send(u, good)
out["state"] = u.state
out["stage_gone"] = not ofs.exists(ROOT + "/stage")
out["pointer"] = boot.read_pointer(ROOT)
out["installed"] = installed(good, "a")
p = boot_()
out["boot"] = [p["slot"], p["state"], p["boots"]]
out["running"] = ota.running_version(ROOT)
out["offer_busy"] = offer(new(), good)  # unconfirmed: no new update now
out["confirm"] = boot.confirm(ROOT)
out["after"] = boot.read_pointer(ROOT)["state"]
out["offer_again"] = offer(new(), good)  # runs it already
""",
    # boot selection for real: the slot's modules are the ones imported
    "import": r"""
good = load("fw.atb")
u = new()
offer(u, good)
out["end"] = send(u, good)
p = boot.select(ROOT)
import atls.ota as o2
import atls.supervisor as sup
out["slot_path"] = sys.path[0]
out["from_slot"] = [m.__file__.startswith(ROOT + "/a/atls/") for m in (o2, sup)]
out["version"] = o2.running_version(ROOT)
""",
    "tampered": r"""
good = bytearray(load("good.atb"))
good[-5] ^= 1  # a byte of the last file, after the signed header
u = new()
offer(u, good)
out["end"] = send(u, bytes(good))
out["pointer"] = boot.read_pointer(ROOT)
out["stage_gone"] = not ofs.exists(ROOT + "/stage")
""",
    "badsig": r"""
data = load("otherkey.atb")
u = new()
offer(u, data)
out["end"] = send(u, data)
out["pointer"] = boot.read_pointer(ROOT)
out["nokey"] = offer(new(key=b""), load("good.atb"))
""",
    "versions": r"""
good = load("good.atb")
u = new()
offer(u, good)
send(u, good)
boot_()
boot.confirm(ROOT)  # runs 1.1.0 now
older = load("older.atb")
out["older_offer"] = offer(new(), older)
# an offer that lies about the version: the signed header decides
u = new()
offer(u, older, version=(9, 9, 9))
out["older_lying"] = send(u, older)
u = new(board="esp32")
offer(u, load("newer.atb"))
out["wrong_board"] = send(u, load("newer.atb"))
u = new()
offer(u, load("minver.atb"))
out["min_version"] = send(u, load("minver.atb"))
out["running"] = ota.running_version(ROOT)
class Full(ofs.FS):
    def free(self, path):
        return 1000
out["no_space"] = offer(new(fs=Full()), load("newer.atb"))
u = new()
offer(u, load("newer.atb"))
out["newer"] = send(u, load("newer.atb"))
out["pointer"] = boot.read_pointer(ROOT)
""",
    # a new version that never confirms: rolled back after max_boots boots
    "rollback": r"""
good = load("good.atb")
u = new()
offer(u, good)
send(u, good)
slots = [boot_()["slot"] for i in range(5)]
out["slots"] = slots
out["pointer"] = boot.read_pointer(ROOT)
out["running"] = ota.running_version(ROOT)
out["again"] = offer(new(), good)
""",
    # main.py's start(): the selected slot's entry runs; one that does not import
    # is rolled back at once and the board reset
    "start": r"""
good = load("good.atb")
u = new()
offer(u, good)
send(u, good)
boot.start(ROOT, entry="atls.entry")
sys.path.remove(ROOT + "/a")  # back to this test's firmware (the slot has no atls.ota)
for n in list(sys.modules):
    if n == "atls" or n.startswith("atls."):
        del sys.modules[n]
from atls.ota import boot, updater
boot.confirm(ROOT)
u = new()
offer(u, load("newer.atb"))
send(u, load("newer.atb"))
resets = []
try:
    boot.start(ROOT, entry="atls.nosuch", reset=lambda: resets.append(1))
except ImportError:
    out["raised"] = True
out["resets"] = len(resets)
out["pointer"] = boot.read_pointer(ROOT)
""",
    # a damaged slot is never booted
    "damaged": r"""
good = load("good.atb")
u = new()
offer(u, good)
send(u, good)
f = open(ROOT + "/a/atls/z.mpy", "r+b")
f.write(b"X")
f.close()
p = boot_()
out["slot"] = p["slot"]
out["bad"] = p["bad"]
""",
    "halfstage": r"""
good = load("good.atb")
os.mkdir(ROOT)
os.mkdir(ROOT + "/stage")
open(ROOT + "/stage/head", "wb").write(good[:40])  # no progress file: a cut mid-setup
u = new()
out["no_prog"] = ofs.exists(ROOT + "/stage")
os.mkdir(ROOT + "/stage")
open(ROOT + "/stage/head", "wb").write(good[:40])
open(ROOT + "/stage/prog", "w").write("00112233 100 90")  # id of a wrong length
new()
out["bad_prog"] = ofs.exists(ROOT + "/stage")
u = new()
offer(u, good)
send(u, good, stop=700)
del u  # the power goes: what counts is the persisted progress
os.remove(ROOT + "/stage/head")  # ...and the header with it
u = new()
out["head_lost"] = ofs.exists(ROOT + "/stage")
out["restart"] = offer(u, good)
""",
    # power cut at every flash operation of a whole transfer and switch; after
    # each cut: reboot (boot selection, a new Updater), offer again, resume
    "powercut": r"""
good = load("good.atb")
fs = CutFS()
k = 0
resumed = []
while True:
    rm(ROOT)
    fs.arm(k)
    cut = False
    try:
        u = new(fs=fs)
        st = offer(u, good)
        out["uncut"] = send(u, good, start=st[1])  # the run that no cut reached: all of it
    except PowerCut:
        cut = True
    p = boot_(fs=None)
    sel = p["slot"] if p else ""
    assert sel in ("", "a"), sel
    assert sel == "" or boot.slot_ok(ROOT, sel)
    u = new()
    st = offer(u, good)
    if st[0] == wire.RECEIVING:
        resumed.append(st[1])
        st = send(u, good, start=st[1])
    ok = st[0] in (wire.SWITCHED, wire.CURRENT, wire.UNCONFIRMED)
    if not ok:
        out["failed_at"] = [k, st]
        break
    p = boot_()
    assert p["slot"] == "a" and boot.slot_ok(ROOT, "a"), (k, p)
    if not cut:
        break
    k += 1
out["cuts"] = k
out["resumed_max"] = max(resumed)
""",
    # power cut at every step of boot selection, rollback and confirm
    "bootcut": r"""
good = load("good.atb")
fs = CutFS()
res = []
for phase in ("trial", "rollback", "confirm"):
    k = 0
    while True:
        rm(ROOT)
        u = new()
        offer(u, good)
        send(u, good)
        if phase == "rollback":
            for i in range(3):
                boot_()
        fs.arm(k)
        cut = False
        try:
            if phase == "confirm":
                boot_()
                boot.confirm(ROOT, fs=fs)
            else:
                boot_(fs=fs)
        except PowerCut:
            cut = True
        p = boot_()
        assert p is not None and p["slot"] in ("", "a"), p
        assert p["slot"] == "" or boot.slot_ok(ROOT, p["slot"])
        if not cut:
            break
        k += 1
    res.append(k)
out["cuts"] = res
""",
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota-device")
    # the firmware bundle exactly as `make release` makes it (its .mpy build kept in d/build)
    kp = d / "key" / "release.key"
    keys.generate(kp)
    path, _ = release.release("1.1.0", BOARD, key_path=kp, out=d / "rel", build_root=d / "build")
    (d / "fw.atb").write_bytes(path.read_bytes())
    key = keys.load_private(kp)
    other = ed25519.Ed25519PrivateKey.generate()
    (d / "pub").write_text(key.public_key().public_bytes_raw().hex())

    def put(name, files=SMALL, version="1.1.0", min_version="0.0.0", board=BOARD, k=key):
        (d / name).write_bytes(bundle.build(files, version, min_version, board, k))

    put("good.atb")
    put("otherkey.atb", k=other)
    put("older.atb", version="1.0.5")
    put("newer.atb", version="1.2.0")
    put("minver.atb", version="1.3.0", min_version="1.2.0")
    return d


def run(mpy, bundles, scenario, tmp_path, *extra):
    d = tmp_path / "dev"
    d.mkdir()
    for p in bundles.iterdir():
        if p.is_file():
            (d / p.name).write_bytes(p.read_bytes())
    res = mpy.check(
        DEVICE + SCENARIOS[scenario] + "\nprint(json.dumps(out))\n", args=[scenario, d, *extra]
    )
    out = res.json()
    out["_stdout"] = res.stdout
    return out


def st(code, offset=None):
    return [code] if offset is None else [code, offset]


def test_good_update_switches_and_confirms(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "good", tmp_path)
    good = (bundles / "good.atb").read_bytes()
    assert r["offer"] == [wire.RECEIVING, 0]
    assert r["end"] == [wire.SWITCHED, len(good)]
    assert r["state"] == "SWITCHED" and r["stage_gone"] and r["installed"]
    assert r["pointer"]["slot"] == "a" and r["pointer"]["state"] == "trial"
    assert r["pointer"]["prev"] == "" and r["pointer"]["prev_version"] == "0.0.0"
    assert r["boot"] == ["a", "trial", 1]
    assert r["running"] == "1.1.0"
    assert r["offer_busy"] == [wire.UNCONFIRMED, 0]
    assert r["confirm"] is True and r["after"] == "ok"
    assert r["offer_again"] == [wire.CURRENT, 0]


def test_boot_selection_imports_the_slot(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "import", tmp_path)
    assert r["end"][0] == wire.SWITCHED
    assert r["slot_path"].endswith("/root/a") and r["from_slot"] == [True, True]
    assert r["version"] == "1.1.0"


def test_release_bundle_is_the_boards_mpy_build(bundles):
    kp = bundles / "key" / "release.key"
    data = (bundles / "fw.atb").read_bytes()
    b = bundle.Bundle(data, keys.load_public(keys.public_path(kp)))
    assert (b.board, b.version, b.min_version) == (BOARD, "1.1.0", "0.0.0")
    paths = [p for p, _, _ in b.header.files()]
    assert "atls/ota/updater.mpy" in paths and "atls/crypto/cpython.mpy" not in paths
    assert all(p.startswith("atls/") and p.endswith(".mpy") for p in paths)
    assert sorted(paths) == sorted(
        p.relative_to(bundles / "build" / BOARD).as_posix()
        for p in (bundles / "build" / BOARD / "atls").rglob("*.mpy")
    )
    start = b.header.head + 64
    assert data[start : start + 2] == b"M\x06"  # .mpy version 6 (BOARDS.md)
    assert release.main(["verify", str(bundles / "fw.atb"), "--pub", str(kp) + ".pub"]) == 0


def test_tampered_chunk_is_refused(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "tampered", tmp_path)
    assert r["end"] == [wire.BAD_HASH, 0]
    assert r["pointer"] is None and r["stage_gone"]


def test_bad_signature_is_refused_before_the_files(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "badsig", tmp_path)
    assert r["end"] == [wire.BAD_SIGNATURE, 0]
    assert r["pointer"] is None
    assert r["nokey"] == [wire.NO_KEY, 0]


def test_rollback_attack_wrong_board_min_version_no_space(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "versions", tmp_path)
    assert r["older_offer"] == [wire.ROLLBACK, 0]
    assert r["older_lying"] == [wire.BAD_BUNDLE, 0]  # offered 9.9.9, signed 1.0.5
    assert r["wrong_board"] == [wire.WRONG_BOARD, 0]
    assert r["min_version"] == [wire.MIN_VERSION, 0]
    assert r["no_space"] == [wire.NO_SPACE, 0]
    assert r["running"] == "1.1.0"
    assert r["newer"][0] == wire.SWITCHED
    p = r["pointer"]
    assert (p["slot"], p["version"], p["prev"], p["prev_version"]) == ("b", "1.2.0", "a", "1.1.0")


def test_unconfirmed_version_rolls_back_after_max_boots(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "rollback", tmp_path)
    assert r["slots"] == ["a", "a", "a", "", ""]
    assert r["pointer"]["bad"] == "1.1.0" and r["running"] == "0.0.0"
    assert r["again"] == [wire.FAILED_BEFORE, 0]


def test_damaged_slot_is_not_booted(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "damaged", tmp_path)
    assert r["slot"] == "" and r["bad"] == "1.1.0"


def test_half_written_staging_is_discarded(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "halfstage", tmp_path)
    assert r["no_prog"] is False and r["bad_prog"] is False
    assert r["head_lost"] is False
    assert r["restart"] == [wire.RECEIVING, 0]


@pytest.mark.parametrize("fat", [False, True], ids=["littlefs", "fat"])
def test_power_cut_at_every_flash_operation(mpy, bundles, tmp_path, fat):
    # on FAT the pointer's rename cannot replace: the old one is removed first,
    # and a cut between the two leaves boot.tmp alone, which boot then uses
    r = run(mpy, bundles, "powercut", tmp_path, *(["fat"] if fat else []))
    assert "failed_at" not in r, r
    assert r["cuts"] > 20  # every operation of staging, progress and the switch was cut once
    assert r["uncut"][0] == wire.SWITCHED
    assert r["resumed_max"] > 0  # some reboots resumed mid-bundle


@pytest.mark.parametrize("fat", [False, True], ids=["littlefs", "fat"])
def test_power_cut_during_boot_selection_rollback_confirm(mpy, bundles, tmp_path, fat):
    r = run(mpy, bundles, "bootcut", tmp_path, *(["fat"] if fat else []))
    assert all(k >= 2 for k in r["cuts"]), r


# The updater streams a real firmware bundle (58 .mpy modules) chunk by chunk
# from a file, as a device receives it, with the firmware imported from .mpy.
HEAP = r"""
import gc, json, os, struct, sys
from atls.ota import updater, wire
from atls.ota.bundle import SIG_LEN, bundle_id, head_len
D = sys.argv[1]
pub = bytes.fromhex(open(D + "/pub").read())
total = os.stat(D + "/fw.atb")[6]
f = open(D + "/fw.atb", "rb")
h = head_len(f.read(8))
f.seek(0)
bid = bundle_id(f.read(h + SIG_LEN))
u = updater.Updater(D + "/root", pub, "unix")
u.on_message(wire.push_offer((1, 1, 0), total, bid))
buf = bytearray(5 + 48)
f.seek(0)
off = 0
last = None
while off < total:
    n = f.readinto(memoryview(buf)[5:])
    struct.pack_into(">BI", buf, 0, wire.CHUNK, off)
    r = u.on_message(memoryview(buf)[: 5 + n])
    if r:
        last = wire.pull(r)[1]
    off += n
gc.collect()
print(json.dumps({"end": last, "heap": gc.mem_alloc()}))
"""


def test_firmware_bundle_in_a_64k_heap(mpy, bundles, tmp_path):
    # 64 KiB of a 64-bit unix port (a 32-bit board needs about 60% of it),
    # the firmware imported from the release's own .mpy build
    d = tmp_path / "dev"
    d.mkdir()
    for name in ("fw.atb", "pub"):
        (d / name).write_bytes((bundles / name).read_bytes())
    mpyc = MicroPython(mpy.binary, [".frozen", str(bundles / "build" / BOARD), str(TESTS / "mpy")])
    r = mpyc.check(HEAP, args=[d], heapsize="64k").json()
    assert r["end"] == [wire.SWITCHED, (d / "fw.atb").stat().st_size]


def test_start_runs_the_slot_and_rolls_back_one_that_does_not_import(mpy, bundles, tmp_path):
    r = run(mpy, bundles, "start", tmp_path)
    assert "ENTRY " in r["_stdout"] and "/root/a/atls/entry.py" in r["_stdout"]
    assert r["raised"] and r["resets"] == 1
    p = r["pointer"]
    assert (p["slot"], p["version"], p["bad"], p["state"]) == ("a", "1.1.0", "1.2.0", "ok")
