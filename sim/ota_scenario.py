"""The one-process model of an update campaign (issue 20), in simulated time:
a fleet updates from version A to version B through an untrusted gateway
while it keeps sending readings.  Scenario `ota` (sim/ota_run.py) is the real
multi-process run; this model stays as the fast unit check of the update
logic (tests/test_ota_scenario.py) and for `make bench` section `ota`, where
ten devices update in simulated seconds.

It runs in one process, with the product's real update code on
both ends and the radio modelled: the service side is host_tools.ota.app
(OtaApp around OtaService, the bundle store, the registry's targets), each
device is atls.ota.agent.Agent (atls.ota.updater.Updater writing real files
under its own OTA root, atls.ota.boot selecting, counting trial boots and
rolling back), bundles are built and signed with a release key
(host_tools.ota.bundle).  Every channel message is one 66-byte-class ZigBee
frame sealed with the session's AEAD (atls.crypto.aead, CCM_8); the network
carries ~326 frames/s shared by everyone; readings (channel 0) and update
frames (channel 2) queue for the same air.  The gateway is malicious: it
flips a byte in some update frames, which the receiver's AEAD rejects (no
effect but delay).

Roles (dev-01 .. dev-NN, N >= 4): dev-02 loses power mid-download (resumes
where its staging area says), dev-03 receives a tampered bundle (a
corrupted store: refuses, keeps A), dev-04 is targeted at a version C that
never reaches the service (trial boots, then rolls back to A, and refuses C
from then on); the others are plain.

    run_model(devices=6, seed=1, files_kb=20, tamper=0.05, ...) -> dict
    checks(result) -> [(name, passed, detail)]
"""

import hashlib
import random
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from atls import protocol
from atls.crypto.aead import new as new_aead
from atls.ota import boot, running_version
from atls.ota import bundle as dev_bundle
from atls.ota.agent import Agent
from host_tools.ota import bundle as host_bundle
from host_tools.ota.app import OtaApp
from host_tools.ota.service import OtaService, StaticTargets
from host_tools.ota.store import BundleStore

A, B, C = "1.0.0", "1.1.0", "1.2.0"
STEP_MS = 10
NETWORK_FPS = 326.0
TRIAL_MS = 3000  # the model's boot.TRIAL_MS (10 min on a board)
BROKEN = "atls/broken.mpy"  # a version C file: the model's "does not reach the service"


def _files(version, kb, rng, broken=False):
    out = [("atls/__init__.mpy", b"M\x06" + version.encode())]
    for i in range(max(1, kb // 4)):
        out.append(("atls/m%02d.mpy" % i, bytes(rng.getrandbits(8) for _ in range(4096))))
    if broken:
        out.append((BROKEN, b"raise ImportError"))
    return out


def preinstall(root, data):
    """A device as `make deploy` + an earlier update left it: `data` (a signed
    bundle) installed and confirmed in a slot."""
    hdr = dev_bundle.Header(data)
    stage = Path(root) / "stage"
    stage.mkdir(parents=True)
    (stage / "head").write_bytes(data[: hdr.head + dev_bundle.SIG_LEN])
    pos = hdr.head + dev_bundle.SIG_LEN
    for path, size, _ in hdr.files():
        (stage / path).parent.mkdir(parents=True, exist_ok=True)
        (stage / path).write_bytes(data[pos : pos + size])
        pos += size
    boot.install(str(root), "%d.%d.%d" % hdr.version)
    boot.confirm(str(root))


class Air:
    """The shared radio: a FIFO of sealed frames, NETWORK_FPS frames/s."""

    def __init__(self):
        self.q = []
        self.credit = 0.0
        self.frames = self.bytes = 0

    def push(self, frame):
        self.q.append(frame)

    def step(self):
        self.credit = min(self.credit + NETWORK_FPS * STEP_MS / 1000.0, 8.0)
        out = []
        while self.q and self.credit >= 1.0:
            f = self.q.pop(0)
            self.credit -= 1.0
            self.frames += 1
            self.bytes += len(f[3][2]) + 5  # header 3, seq 1, channel 1; ct has the tag
            out.append(f)
        return out


class Device:
    def __init__(self, name, root, pub, clock, key, trial_ms):
        self.name, self.root, self.pub, self.key = name, root, pub, key
        self.trial_ms = trial_ms
        self.boots = 0
        self.up = False
        self.off_until = 0
        self.readings = []  # (sent_ms, delivered_ms or None)
        self.next_reading = 0
        self.seq = 0
        self.sess = None
        self.reboot(clock)

    def reboot(self, now):
        self.boots += 1
        boot.select(self.root, path=[], modules={})
        self.version = running_version(self.root)
        self.agent = Agent(self.pub.hex(), "unix", None, now, self.root, self.trial_ms)
        self.up = False
        slot = (boot.read_pointer(self.root) or {}).get("slot", "")
        self.broken = bool(slot) and (Path(self.root) / slot / BROKEN).exists()


class Model:
    def __init__(
        self, devices, seed, files_kb, tamper, period_ms, trial_ms, workdir, faults=True, rate=None
    ):
        self.rng = random.Random(seed)
        self.now = 0
        self.tamper = tamper
        self.period_ms = period_ms
        self.dir = Path(workdir)
        key = ed25519.Ed25519PrivateKey.generate()
        self.pub = key.public_key().public_bytes_raw()
        self.store = BundleStore(self.dir / "store", self.pub)
        self.a = self.store.add(host_bundle.build(_files(A, files_kb, self.rng), A, A, "unix", key))
        self.b = self.store.add(host_bundle.build(_files(B, files_kb, self.rng), B, A, "unix", key))
        c = _files(C, files_kb, self.rng, broken=True)
        self.c = self.store.add(host_bundle.build(c, C, A, "unix", key))
        names = ["dev-%02d" % (i + 1) for i in range(devices)]
        targets = {n: B for n in names}
        self.roles = {}
        if faults:
            self.roles = {"power_cut": names[1], "tampered": names[2], "broken": names[3]}
            targets[self.roles["broken"]] = C
        rate_fps, airtime_fps = rate or (20, 200)
        self.ota = OtaService(
            self.store, StaticTargets(targets), rate_fps=rate_fps, airtime_fps=airtime_fps
        )
        self.app = OtaApp(_Quiet(), self.ota, self.ota.registry)
        self.air = Air()
        self.stats = {"tampered": 0, "rejected": 0, "cut_at": None}
        self.devices = {}
        for n in names:
            root = self.dir / n
            preinstall(root, self.a.data)
            k = hashlib.sha256(n.encode()).digest()[:16]
            self.devices[n] = Device(n, str(root), self.pub, 0, k, trial_ms)

    def now_ms(self):
        return self.now

    # -- frames: (device, direction "down"|"up", channel, sealed, t_enqueued) ------
    def seal(self, dev, channel, payload, down):
        dev.seq += 1
        nonce = dev.seq.to_bytes(12, "big")
        aad = bytes((protocol.MARKER, channel, down))
        aead = new_aead(protocol.TLS_AES_128_CCM_8_SHA256, dev.key)
        return (nonce, aad, aead.seal(nonce, aad, bytes(payload)))

    def send(self, dev, channel, payload, down):
        if channel == 2 and down and dev.name == self.roles.get("tampered") and payload[0] == 2:
            payload = _corrupt_store(payload, self.b)  # a corrupted bundle store
        frame = (dev.name, down, channel, self.seal(dev, channel, payload, down), self.now)
        self.air.push(frame)

    def deliver(self, frame):
        name, down, channel, (nonce, aad, ct), t0 = frame
        dev = self.devices[name]
        if channel == 2 and self.rng.random() < self.tamper:  # the malicious gateway
            ct = bytearray(ct)
            ct[self.rng.randrange(len(ct))] ^= 0x40
            self.stats["tampered"] += 1
        try:
            pt = new_aead(protocol.TLS_AES_128_CCM_8_SHA256, dev.key).open(nonce, aad, bytes(ct))
        except Exception:  # AuthError: the receiver drops it
            self.stats["rejected"] += 1
            return
        if dev.sess is None or self.now < dev.off_until:
            return  # the device is off: the frame is lost
        if not down:
            if channel == 0:
                i = int(pt)
                dev.readings[i] = (dev.readings[i][0], self.now)
            else:
                self.app.on_channel_message(dev.sess, channel, pt)
            return
        reply = dev.agent.on_message(pt)
        if reply is not None:
            self.send(dev, 2, reply, False)

    def connect(self, dev):
        dev.sess = _Sess(self, dev)
        dev.up = True
        dev.agent.on_up()  # the handshake completed: confirms a version on trial
        self.app.on_connect(dev.sess)

    def disconnect(self, dev, reason):
        if dev.sess is not None:
            self.app.on_close(dev.sess, reason)
        dev.sess, dev.up = None, False

    def tick(self):
        self.now += STEP_MS
        for dev in self.devices.values():
            if dev.sess is None and self.now >= dev.off_until and not dev.broken:
                self.connect(dev)
            if dev.up and self.now >= dev.next_reading:
                dev.next_reading = self.now + self.period_ms
                dev.readings.append((self.now, None))
                self.send(dev, 0, b"%d" % (len(dev.readings) - 1), False)
            cut = self.roles.get("power_cut")
            t = self.ota.status(dev.name)
            if dev.name == cut and self.stats["cut_at"] is None and t and t["acked"] > 4000:
                self.stats["cut_at"] = t["acked"]
                self.disconnect(dev, "power cut")
                dev.off_until = self.now + 1500
                dev.reboot(self.now)  # nothing switched: the staging area stays
            if dev.agent.reset_due(self.now, idle=True):
                self.disconnect(dev, "reset")
                dev.off_until = self.now + 300
                dev.reboot(self.now)
        self.app.poll(self.now)
        for f in self.air.step():
            self.deliver(f)

    def updating(self):
        return any(
            (self.ota.status(n) or {}).get("state") in ("OFFERED", "SENDING", "SWITCHED")
            for n in self.devices
        )


class _Sess:
    """What OtaApp uses of a service Session."""

    def __init__(self, model, dev):
        self.model, self.dev = model, dev
        self.service = model
        self.identity = dev.name
        self.device_hello = dev.version.encode()

    def send(self, payload, channel=0):
        self.model.send(self.dev, channel, payload, True)


class _Quiet:
    def on_connect(self, s):
        pass

    def on_message(self, s, p):
        pass

    def on_close(self, s, r):
        pass


def _corrupt_store(chunk, b):
    """CHUNK from a store whose copy of B has one file byte flipped (after
    the signed header: the signature still verifies, the file hash does not)."""
    off = int.from_bytes(chunk[1:5], "big")
    flip = b.header.head + dev_bundle.SIG_LEN + 100
    if off <= flip < off + len(chunk) - 5:
        chunk = bytearray(chunk)
        chunk[5 + flip - off] ^= 1
        return bytes(chunk)
    return chunk


def run_model(
    devices=6,
    seed=1,
    files_kb=20,
    tamper=0.05,
    period_ms=1000,
    trial_ms=TRIAL_MS,
    limit_s=600,
    faults=True,
    rate=None,
):
    """Run until every transfer ended (and devices rebooted) or `limit_s`
    simulated seconds; returns the figures checks() judges.  faults=False:
    no special roles (every device is plain; for `make bench`); rate:
    (rate_fps per device, airtime_fps for the network) of the OtaService."""
    if faults and devices < 4:
        raise ValueError("the ota scenario needs at least 4 devices")
    work = tempfile.mkdtemp(prefix="atls-ota-")
    try:
        m = Model(devices, seed, files_kb, tamper, period_ms, trial_ms, work, faults, rate)
        t_start = None
        t_end = None
        while m.now < limit_s * 1000:
            m.tick()
            if t_start is None and m.updating():
                t_start = m.now
            if t_start is not None and t_end is None and not m.updating():
                quiet = all(d.up or d.broken is False for d in m.devices.values())
                if quiet and all(_settled(m, n) for n in m.devices):
                    t_end = m.now
            if t_end is not None and m.now > t_end + 3 * period_ms:
                break
        return _result(m, t_start, t_end)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _settled(m, name):
    st = (m.ota.status(name) or {}).get("state")
    d = m.devices[name]
    return st in ("DONE", "REFUSED") and d.up and not boot.on_trial(d.root)


def _result(m, t_start, t_end):
    devs = {}
    for n, d in m.devices.items():
        p = boot.read_pointer(d.root) or {}
        slot = p.get("slot", "")
        signed = False
        if slot:
            head = (Path(d.root) / slot / "head").read_bytes()
            try:
                dev_bundle.verify(head, m.pub)
                signed = boot.slot_ok(d.root, slot)
            except Exception:
                signed = False
        during = [r for r in d.readings if t_start is not None and r[0] >= t_start]
        if t_end is not None:
            during = [r for r in during if r[0] <= t_end]
        lat = [r[1] - r[0] for r in d.readings if r[1] is not None]
        devs[n] = {
            "version": running_version(d.root),
            "signed": signed,
            "boots": d.boots,
            "bad": p.get("bad", ""),
            "ota": m.ota.status(n),
            "readings": len(d.readings),
            "delivered": len([r for r in d.readings if r[1] is not None]),
            "delivered_during_update": len([r for r in during if r[1] is not None]),
            "latency_ms_max": max(lat) if lat else None,
            "latency_ms_mean": sum(lat) / len(lat) if lat else None,
            "latency_during": [r[1] - r[0] for r in during if r[1] is not None],
            "latency_outside": [
                r[1] - r[0] for r in d.readings if r[1] is not None and r not in during
            ],
        }
    return {
        "roles": m.roles,
        "devices": devs,
        "counters": dict(m.ota.counters, **m.app.counters),
        "gateway": dict(m.stats),
        "air": {"frames": m.air.frames, "bytes": m.air.bytes},
        "bundle_bytes": len(m.b.data),
        "update_s": None if t_end is None else (t_end - t_start) / 1000.0,
        "sim_s": m.now / 1000.0,
    }


def checks(r):
    roles, devs = r["roles"], r["devices"]
    special = set(roles.values())
    good = [n for n in devs if n not in special or n == roles["power_cut"]]
    out = []
    out.append(("every good device runs B", all(devs[n]["version"] == B for n in good), ""))
    out.append(
        (
            "%s lost power mid-download and resumed" % roles["power_cut"],
            r["gateway"]["cut_at"] is not None and r["counters"]["resumed"] >= 1,
            "cut at %s" % r["gateway"]["cut_at"],
        )
    )
    t = devs[roles["tampered"]]
    out.append(
        (
            "%s refused the tampered bundle and runs A" % roles["tampered"],
            t["version"] == A and (t["ota"] or {}).get("code") == "bad_hash",
            str(t["ota"]),
        )
    )
    c = devs[roles["broken"]]
    out.append(
        (
            "%s rolled back from C to A and refuses C again" % roles["broken"],
            c["version"] == A and c["bad"] == C and (c["ota"] or {}).get("code") == "failed_before",
            "%s, %d boots" % (c["ota"], c["boots"]),
        )
    )
    out.append(("no device runs anything unsigned", all(d["signed"] for d in devs.values()), ""))
    g = r["gateway"]
    out.append(
        (
            "the gateway's tampering was rejected (delay only)",
            g["tampered"] == g["rejected"] and g["tampered"] > 0,
            "%d frames tampered" % g["tampered"],
        )
    )
    out.append(
        (
            "readings kept flowing during the update",
            r["update_s"] is not None
            and all(devs[n]["delivered_during_update"] > 0 for n in devs if n != roles["broken"]),
            "update took %s s" % r["update_s"],
        )
    )
    return out
