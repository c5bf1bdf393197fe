"""Scenario `ota` (issue 20): the fleet updates from version A to version B
through a tampering gateway while it keeps sending readings; every part is
the real one, as processes.

  * devices: MicroPython unix-port processes running firmware/main.py
    (atls.ota.boot.start), each with its own filesystem root
    (build/sim/.../devices/dev-NN/ota: slots a/ b/, stage/, boot.json),
    installed with version A (slot a, confirmed) before they start;
  * service: host_tools.service with "ota" in service.json (OtaApp around the
    recording application, bundles in <workdir>/bundles, targets from the
    JSON registry); it holds no release key, not even the public one;
  * gateway: sim.evil_gateway flipping bits in large DATA packets to the
    devices (`tamper_update`: update chunks; delay only, counted);
  * bundles: the whole firmware compiled with mpy-cross (~104 KB), signed by a release key made for the run and kept in this process only.

Phases: readings without an update (baseline), then the registry targets B
(the service re-reads it and offers within a second), then readings after
every device settled.  Roles: dev-02 loses power mid-download (killed once
its staging area passed a third of B; it resumes from its progress file),
dev-03 is targeted at 1.1.1, a bundle in the store signed by another key
(refused: bad_signature, keeps A), dev-04 at 1.2.0, a release cut from an incomplete
build whose supervisor does not import (boot rolls back to A by itself, then refuses it: failed_before).  The
fleet restarts a device that exits with atls.ota.agent.RESET_EXIT.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from atls.ota import boot
from atls.ota import bundle as dev_bundle
from host_tools.boards.config import load_board
from host_tools.boards.mpy import build_mpy
from host_tools.ota import bundle as host_bundle
from host_tools.toolchain import FIRMWARE, ROOT, compile_mpy, mpy_cross_binary
from sim.ota_scenario import preinstall

A, B, FORGED, C = "1.0.0", "1.1.0", "1.1.1", "1.2.0"
RATE = {"rate_fps": 40, "airtime_fps": 250, "window": 16, "frame_bytes": 66, "poll_ms": 20}
EVIL = {"tamper_update": 0.01}  # each costs a retransmission timeout: 5 % doubles the time
CACHE = ROOT / "build" / "sim" / "ota-mpy"  # the firmware as .mpy, by source digest
RESTARTS = ("device_reset", "device_reboot")  # sim.fleet's notes: one more boot each
MAX_GAP_S = 30.0  # longest wait between two acknowledged readings of a device
CUT_AT = 1 / 3  # dev-02's power cut: this fraction of B in its staging area
C_FILES = ("atls/__init__.mpy", "atls/supervisor.mpy")
BROKEN_SUPERVISOR = "from atls.not_in_this_version import main  # C does not come up\n"


def firmware_files(cache=CACHE):
    """[(path, bytes)] of the unix firmware as .mpy, every module: a slot
    holds a whole `atls` package (MicroPython looks for a package's modules
    in the one folder it was found in).  No native code: the unix port runs
    the pure modules, as `make mpy` for a board without an mpy_arch.  Built
    once per firmware source and mpy-cross (cache/<digest>)."""
    h = hashlib.sha256(str(os.stat(mpy_cross_binary()).st_mtime_ns).encode())
    for src in sorted(FIRMWARE.rglob("*.py")):
        h.update(src.relative_to(FIRMWARE).as_posix().encode() + b"\0" + src.read_bytes())
    out = Path(cache) / h.hexdigest()[:16]
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        build_mpy(dict(load_board("unix"), mpy_arch=None), out_root=tmp)
        try:
            tmp.rename(out)  # whole or not at all (another run may have won)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return host_bundle.from_build_dir(out / "unix")


def _compiled(source, work, name):
    src = Path(work) / (name + ".py")
    src.write_text(source)
    compile_mpy(src, Path(work) / (name + ".mpy"), name + ".py")
    return (Path(work) / (name + ".mpy")).read_bytes()


def make_bundles(store):
    """A, B, the forged 1.1.1 and the broken C into `store`/unix/; returns
    (release public key, {version: bytes}).  The release private key lives in
    this function only: nothing is written of it."""
    key = ed25519.Ed25519PrivateKey.generate()
    rogue = ed25519.Ed25519PrivateKey.generate()  # whoever altered the store
    with tempfile.TemporaryDirectory() as work:
        files = firmware_files()
        bad = _compiled(BROKEN_SUPERVISOR, work, "broken")
    altered = [(p, d + b"\0" if p == "atls/app.mpy" else d) for p, d in files]
    # C: a release cut from an incomplete build (the package and a supervisor
    # that needs a module this version does not have): small, and its slot
    # passes every hash check, but its firmware cannot import
    broken = [(p, bad if p == "atls/supervisor.mpy" else d) for p, d in files if p in C_FILES]
    out = {
        A: host_bundle.build(files, A, "0.0.0", "unix", key),
        B: host_bundle.build(files, B, A, "unix", key),
        FORGED: host_bundle.build(altered, FORGED, A, "unix", rogue),
        C: host_bundle.build(broken, C, A, "unix", key),
    }
    (Path(store) / "unix").mkdir(parents=True, exist_ok=True)
    for v in (B, FORGED, C):  # A is what the devices run already
        (Path(store) / "unix" / (v + ".atb")).write_bytes(out[v])
    return key.public_key().public_bytes_raw(), out


class Roles:
    def __init__(self, names):
        self.power_cut, self.tampered, self.broken = names[1], names[2], names[3]
        self.target = {n: B for n in names}
        self.target[self.tampered] = FORGED
        self.target[self.broken] = C


def events(fleet, name, kind=None):
    """[(wall time, event)] the device printed (sim.device_state traces them)."""
    return [(t, e) for t, e in list(fleet.devices[name].trace) if kind in (None, e.get("ev"))]


def settled(fleet, roles, name):
    """Wall time at which `name` finished with the update, or None."""
    if name == roles.tampered:
        hits = [
            t for t, e in events(fleet, name, "ota_refused") if e.get("code") == "bad_signature"
        ]
        return hits[0] if hits else None
    if name == roles.broken:
        back = [t for t, e in events(fleet, name, "ota_rollback") if e.get("bad") == C]
        again = [
            t for t, e in events(fleet, name, "ota_refused") if e.get("code") == "failed_before"
        ]
        return again[0] if back and again and again[0] > back[0] else None
    ok = [t for t, e in events(fleet, name, "ota_confirmed") if e.get("version") == B]
    return ok[0] if ok else None


def set_targets(fleet, targets):
    path = fleet.dir / "devices.json"
    reg = json.loads(path.read_text())
    for n, v in targets.items():
        reg["devices"][n].update(target_version=v, board="unix")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(reg))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def watch_power_cut(fleet, name, total, cut):
    """Kill `name` once its staging area holds CUT_AT of the bundle."""
    if cut:
        return
    try:
        bid, size, off = (fleet.device_dir(name) / "ota" / "stage" / "prog").read_text().split()
    except (OSError, ValueError):
        return
    if int(size) == total and int(off) >= total * CUT_AT:
        cut.append((time.time(), int(off)))
        fleet.reboot_device(name, down_s=0.5)


def start(fleet):
    fleet.evil = dict(EVIL, **(fleet.evil or {}))
    names = ["dev-%02d" % (i + 1) for i in range(fleet.n)]
    roles = Roles(names)
    pub, bundles = make_bundles(fleet.dir / "bundles")
    rate = dict(RATE, bundles="bundles")  # and no release key, not even the public one
    rate["rate_fps"] = getattr(fleet, "ota_rate", None) or RATE["rate_fps"]
    fleet.service_extra = {"ota": rate}
    fleet.device_extra = {"ota": {"release_key": pub.hex()}}
    fleet.start_radio()
    fleet.make_credentials()
    fleet.start_service()
    fleet.start_gateway()
    for i, n in enumerate(names):
        fleet.prepare_device(i)
        preinstall(fleet.device_dir(n) / "ota", bundles[A])
    for n in names:
        fleet.start_device(n)
    return names, roles, pub, bundles


def run(fleet, duration, live=None, update_timeout=900):
    """sim/scenarios.py's entry: (names, good, wrong, checks)."""
    if fleet.n < 4:
        raise ValueError("scenario ota needs at least 4 devices (--devices 4)")
    names, roles, pub, bundles = start(fleet)
    checks = [("all devices paired", fleet.pair_all(names, timeout=60), "")]
    up = fleet.wait(lambda: all(fleet.devices[n].handshakes_ok >= 1 for n in names), 90, live)
    checks.append(("every device completed a handshake on A", up, ""))
    t_up = time.time() + 1.0  # the baseline starts once the fleet's handshakes are over
    baseline = max(2.0, duration / 2)
    fleet.wait(lambda: False, baseline, live)  # readings, no update
    t0 = time.time()
    fleet.note("ota_targets", targets=roles.target)
    set_targets(fleet, roles.target)
    air0 = _air(fleet)
    cut = []

    def done():
        watch_power_cut(fleet, roles.power_cut, len(bundles[B]), cut)
        return all(settled(fleet, roles, n) for n in names)

    finished = fleet.wait(done, update_timeout, live)
    t1 = max([settled(fleet, roles, n) or time.time() for n in names])
    air1 = _air(fleet)
    fleet.note("ota_settled", seconds=round(t1 - t0, 1))
    fleet.wait(lambda: False, max(2.0, duration / 2), live)  # readings after the update
    fleet.settle(live)
    fleet.ota_result = result(fleet, names, roles, pub, bundles, (t_up, t0, t1), cut, (air0, air1))
    checks += verdicts(fleet.ota_result, roles, finished)
    return names, names, [], checks


def _air(fleet):
    try:
        m = json.loads((fleet.dir / "radio-stats.json").read_text()).get("medium") or {}
    except (OSError, ValueError):
        m = {}
    return {k: m.get(k, 0) for k in ("frames", "bytes", "airtime_ms")}


def hello_versions(fleet):
    """{device: [version, ...]} the service saw in HELLOs (service.log)."""
    out = {}
    try:
        lines = (fleet.dir / "service.log").read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("event") == "ota_connect":
            out.setdefault(e.get("device"), []).append(e.get("running"))
    return out


def on_root(root, pub):
    """(running version, signed and whole?) from a device's files."""
    p = boot.read_pointer(str(root)) or {}
    slot = p.get("slot", "")
    if not slot:
        return "0.0.0", False
    try:
        head = (Path(root) / slot / "head").read_bytes()
        h = dev_bundle.head_len(head)
        pk = ed25519.Ed25519PublicKey.from_public_bytes(pub)
        pk.verify(head[h : h + dev_bundle.SIG_LEN], head[:h])  # InvalidSignature
        whole = boot.slot_ok(str(root), slot)
    except Exception:
        whole = False
    return p.get("version"), whole and p.get("state") == "ok"


def readings(fleet, name):
    """[(tx time, ack time or None)] per reading, across the device's boots."""
    sent, out, bootid = {}, [], None
    for t, e in events(fleet, name):
        k = e.get("ev")
        if k == "boot":
            bootid = e.get("boot")
        elif k == "tx":
            sent[(bootid, e.get("n", 0) - 1)] = len(out)
            out.append([t, None])
        elif k == "ack" and (bootid, e.get("id")) in sent:
            out[sent[(bootid, e["id"])]][1] = t
    return out


def _pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000) if xs else None


def result(fleet, names, roles, pub, bundles, window, cut, air):
    t_up, t0, t1 = window
    hellos = hello_versions(fleet)
    devs, during, outside = {}, [], []
    for n in names:
        rs = readings(fleet, n)
        acks = sorted(a for _, a in rs if a is not None)
        gaps = [b - a for a, b in zip(acks, acks[1:]) if b > t0 and a < t1]
        for tx, ack in rs:
            if ack is not None and t0 <= tx <= t1:
                during.append(ack - tx)
            elif ack is not None and tx >= t_up:
                outside.append(ack - tx)
        version, signed = on_root(fleet.device_dir(n) / "ota", pub)
        resumed = [
            e.get("offset", 0)
            for t, e in events(fleet, n, "ota_receiving")
            if cut and n == roles.power_cut and t > cut[0][0]
        ]
        first = events(fleet, n, "ota_receiving")
        end = settled(fleet, roles, n)
        devs[n] = {
            "update_s": round(end - first[0][0], 1) if first and end else None,
            "version": version,
            "signed": signed,
            "hello": hellos.get(n, []),
            "boots": 1
            + len([e for e in fleet.events if e.get("device") == n and e["event"] in RESTARTS]),
            "refused": [e.get("code") for _, e in events(fleet, n, "ota_refused")],
            "rollback": [e.get("bad") for _, e in events(fleet, n, "ota_rollback")],
            "acked_during": len([a for a in acks if t0 <= a <= t1]),
            "max_gap_s": round(max(gaps), 1) if gaps else None,
            "resumed_at": resumed[0] if resumed else None,
        }
    resets = len([e for e in fleet.events if e["event"] == "device_reset"])
    try:
        gw = json.loads((fleet.dir / "gateway-state" / "stats.json").read_text())
    except (OSError, ValueError):
        gw = {}
    return {
        "devices": devs,
        "update_s": round(t1 - t0, 1),
        "cut_at": cut[0][1] if cut else None,
        "bundle_bytes": len(bundles[B]),
        "resets": resets,
        "tamper_update": ((gw.get("evil") or {}).get("tamper_update", 0)),
        "air_during": {k: round(air[1][k] - air[0][k], 1) for k in air[0]},
        "ack_ms_during": {"p50": _pct(during, 0.5), "p95": _pct(during, 0.95), "n": len(during)},
        "ack_ms_outside": {
            "p50": _pct(outside, 0.5),
            "p95": _pct(outside, 0.95),
            "n": len(outside),
        },
    }


def verdicts(r, roles, finished):
    devs, out = r["devices"], []
    good = [n for n in devs if n not in (roles.tampered, roles.broken)]
    out.append(("every device finished with the update", finished, "%s s" % r["update_s"]))
    out.append(
        (
            "every good device runs B, verified on its root, and said so in its next HELLO",
            all(devs[n]["version"] == B and devs[n]["signed"] for n in good)
            and all(devs[n]["hello"][-1:] == [B] for n in good),
            "; ".join(
                "%s %s hello %s" % (n, devs[n]["version"], devs[n]["hello"][-1:]) for n in good
            ),
        )
    )
    out.append(
        (
            "no device runs anything unsigned (every root's slot verifies with the release key)",
            all(d["signed"] and d["version"] in (A, B) for d in devs.values()),
            "",
        )
    )
    pc = devs[roles.power_cut]
    out.append(
        (
            "%s lost power mid-download and resumed from its staging area" % roles.power_cut,
            r["cut_at"] is not None and (pc["resumed_at"] or 0) > 0,
            "cut at %s of %d bytes, resumed at %s"
            % (r["cut_at"], r["bundle_bytes"], pc["resumed_at"]),
        )
    )
    t = devs[roles.tampered]
    out.append(
        (
            "%s refused the bundle signed by another key (bad_signature) and runs A"
            % roles.tampered,
            "bad_signature" in t["refused"] and t["version"] == A and t["hello"][-1:] == [A],
            "refused %s" % t["refused"],
        )
    )
    b = devs[roles.broken]
    out.append(
        (
            "%s rolled back from C to A by itself and refuses C again" % roles.broken,
            b["rollback"] == [C]
            and b["version"] == A
            and "failed_before" in b["refused"]
            and b["boots"] <= 2 + boot.MAX_BOOTS,
            "%d boots, refused %s" % (b["boots"], b["refused"]),
        )
    )
    out.append(
        (
            "the fleet restarted every device that asked for a reboot (exit 75)",
            r["resets"] >= len(good) + 1,  # each switch, and the broken version's rollback
            "%d restarts" % r["resets"],
        )
    )
    out.append(
        (
            "the gateway tampered with update chunks (delay only)",
            r["tamper_update"] > 0,
            "%d packets" % r["tamper_update"],
        )
    )
    gaps = {n: d["max_gap_s"] for n, d in devs.items()}
    out.append(
        (
            "readings kept flowing during the update (every device, gaps <= %g s)" % MAX_GAP_S,
            all(d["acked_during"] > 0 for d in devs.values())
            and all(g is not None and g <= MAX_GAP_S for g in gaps.values()),
            "max gap s %s; ack ms during p50 %s p95 %s, outside p50 %s p95 %s"
            % (
                gaps,
                r["ack_ms_during"]["p50"],
                r["ack_ms_during"]["p95"],
                r["ack_ms_outside"]["p50"],
                r["ack_ms_outside"]["p95"],
            ),
        )
    )
    return out
