"""Service and device state machines of firmware updates wired directly
(host_tools.ota.service and atls.ota.updater, both sans-I/O), in CPython over
a simulated update channel that loses, duplicates and reorders messages in
both directions; the device "reboots" and the service restarts mid-transfer,
and the transfer resumes from the device's last persisted offset."""

import random
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from atls.ota import boot, wire
from atls.ota.updater import Updater
from host_tools.ota import bundle, service
from host_tools.ota.store import BundleStore

FILES = [("atls/__init__.py", b""), ("atls/a.mpy", bytes(range(256)) * 40)]
FILES += [("atls/sub/b.mpy", b"b" * 3000), ("atls/c.mpy", b"c" * 777)]


@pytest.fixture
def setup(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    store = BundleStore(tmp_path / "store")
    b = store.add(bundle.build(FILES, "1.1.0", "0.0.0", "unix", key))
    return tmp_path, key.public_key().public_bytes_raw(), store, b


class Link:
    """One direction of the update channel: each message may be lost,
    duplicated or delayed (so reordered), seeded."""

    def __init__(self, rng, loss=0.0, dup=0.0, delay_ms=(5, 5)):
        self.rng, self.loss, self.dup, self.delay = rng, loss, dup, delay_ms
        self.q = []  # (due_ms, n, msg)
        self.n = 0
        self.sent = 0

    def send(self, msgs, now):
        for m in msgs:
            self.sent += 1
            if self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.dup else 1):
                self.n += 1
                self.q.append((now + self.rng.randint(*self.delay), self.n, m))

    def due(self, now):
        self.q.sort()
        out = [m for t, _, m in self.q if t <= now]
        self.q = [x for x in self.q if x[0] > now]
        return out

    def clear(self):
        self.q = []


def run(svc, dev, down, up, now, until_ms, device="d1", stop=None):
    """Pump both sides every 10 ms until `stop(now)` or `until_ms`."""
    while now < until_ms:
        down.send(svc.poll(device, now), now)
        for m in down.due(now):
            r = dev.on_message(m)
            if r:
                up.send([r], now)
        for m in up.due(now):
            down.send(svc.on_message(device, m, now), now)
        if stop and stop(now):
            break
        now += 10
    return now


def test_transfer_over_a_lossy_reordering_duplicating_channel(setup):
    d, pub, store, b = setup
    rng = random.Random(20)
    svc = service.OtaService(store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=200)
    dev = Updater(str(d / "root"), pub, "unix")
    down = Link(rng, loss=0.1, dup=0.05, delay_ms=(5, 60))
    up = Link(rng, loss=0.1, dup=0.05, delay_ms=(5, 60))
    down.send(svc.on_connect("d1", "0.0.0", 0), 0)
    run(svc, dev, down, up, 0, 600_000, stop=lambda now: svc.status("d1")["state"] == "SWITCHED")
    assert dev.state == "SWITCHED"
    assert svc.status("d1")["state"] == "SWITCHED"
    assert boot.read_pointer(str(d / "root"))["version"] == "1.1.0"
    assert boot.slot_ok(str(d / "root"), "a")
    # after the reboot, the device says it runs 1.1.0: done, nothing offered
    assert svc.on_connect("d1", "1.1.0", 0) == []
    assert svc.status("d1")["state"] == "DONE"
    assert svc.counters["resent_bytes"] > 0  # losses were repaired


def test_resume_after_device_reboot_and_service_restart(setup):
    d, pub, store, b = setup
    rng = random.Random(7)
    root = str(d / "root")
    targets = service.StaticTargets({"d1": "1.1.0"})
    svc = service.OtaService(store, targets, rate_fps=100)
    dev = Updater(root, pub, "unix", persist_bytes=1024)
    down, up = Link(rng), Link(rng)
    down.send(svc.on_connect("d1", "0.0.0", 0), 0)
    total = len(b.data)
    now = run(svc, dev, down, up, 0, 60_000, stop=lambda now: dev.offset > total // 3)
    # the device loses power: its RAM and every message in flight are gone
    del dev
    down.clear(), up.clear()
    svc.on_disconnect("d1")
    dev = Updater(root, pub, "unix", persist_bytes=1024)
    assert 0 < dev.offset <= total // 3 + 48  # the persisted progress
    resumed_at = dev.offset
    down.send(svc.on_connect("d1", "0.0.0", now), now)
    now = run(svc, dev, down, up, now, now + 60_000, stop=lambda now: dev.offset > 2 * total // 3)
    # the service restarts (no state kept): the device still knows where it is
    svc = service.OtaService(store, targets, rate_fps=100)
    down.clear(), up.clear()
    down.send(svc.on_connect("d1", "0.0.0", now), now)
    now = run(
        svc,
        dev,
        down,
        up,
        now,
        now + 60_000,
        stop=lambda now: svc.status("d1")["state"] == "SWITCHED",
    )
    assert dev.state == "SWITCHED" and svc.status("d1")["state"] == "SWITCHED"
    assert svc.counters["resumed"] == 1 and resumed_at > 0
    assert svc.counters["bytes"] < total  # the restarted service sent only the rest


def test_refusal_is_not_offered_again(setup):
    d, pub, store, b = setup
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    svc = service.OtaService(store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=1000)
    dev = Updater(str(d / "root"), other, "unix")  # provisioned with another release key
    down, up = Link(random.Random(1)), Link(random.Random(2))
    down.send(svc.on_connect("d1", "0.0.0", 0), 0)
    run(svc, dev, down, up, 0, 20_000, stop=lambda now: svc.status("d1")["state"] == "REFUSED")
    assert svc.status("d1")["code"] == "bad_signature"
    assert dev.state == "REFUSED" and boot.read_pointer(str(d / "root")) is None
    assert svc.on_connect("d1", "0.0.0", 30_000) == []  # never again for this bundle
    assert svc.counters["bytes"] <= b.header.head + 64 + 16 * 48  # stopped at the header


def test_no_offer_without_a_newer_target(setup):
    d, pub, store, b = setup
    targets = service.StaticTargets({"d1": "1.1.0", "d2": None, "d3": "2.0.0"})
    svc = service.OtaService(store, targets)
    assert svc.on_connect("d1", "1.1.0", 0) == []  # runs it
    assert svc.on_connect("d1", "1.2.0", 0) == []  # runs newer
    assert svc.on_connect("d2", "0.0.0", 0) == []  # no target
    assert svc.on_connect("d3", "0.0.0", 0) == []  # no bundle for the target
    (offer,) = svc.on_connect("d1", "1.0.0", 0)
    assert wire.pull(offer) == (wire.OFFER, ((1, 1, 0), len(b.data), b.id))


def test_pacing_and_chunk_size_for_zigbee():
    # 66-byte frames, 13 bytes of CDATA overhead, 5 of CHUNK: 48 bytes of bundle
    assert service.chunk_size() == 48
    assert service.chunk_size(frame_bytes=100, overhead=13) == 82
    with pytest.raises(ValueError):
        service.chunk_size(frame_bytes=18)


def test_rate_limits_chunks_per_second(setup):
    d, pub, store, b = setup
    svc = service.OtaService(
        store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=10, window=1000
    )
    svc.on_connect("d1", "0.0.0", 0)
    sent = len(svc.on_message("d1", wire.push_status(wire.RECEIVING, 0), 0))
    sent += sum(len(svc.poll("d1", t)) for t in range(0, 10_000, 100))
    # a burst of 4 at the start, then 10 per second
    assert 100 <= sent <= 104
    svc2 = service.OtaService(store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=10, window=4)
    svc2.on_connect("d1", "0.0.0", 0)
    n = len(svc2.on_message("d1", wire.push_status(wire.RECEIVING, 0), 0))
    n += sum(len(svc2.poll("d1", t)) for t in range(0, 2_900, 100))
    assert n == 4  # never more than the window without acknowledgements (and no timeout yet)


def test_memory_error_in_verification_is_no_verdict(setup, monkeypatch):
    # a MemoryError while the signature is checked must not become "bad_signature"
    # (which discards the download and makes the service give up on this bundle)
    from atls.crypto import ed25519 as ed

    d, pub, store, b = setup
    dev = Updater(str(d / "root"), pub, "unix")
    dev.on_message(wire.push_offer((1, 1, 0), len(b.data), b.id))
    h = b.header.head + 64

    def oom(*a):
        raise MemoryError()

    monkeypatch.setattr(ed, "verify", oom)
    with pytest.raises(MemoryError):
        for off in range(0, h, 48):
            dev.on_message(wire.push_chunk(off, b.data[off : min(off + 48, h)]))
    assert dev.state == "RECEIVING"


def test_device_fuzz_only_decode_error_escapes(setup):
    # random and mutated messages at a receiving device: a STATUS reply, None,
    # or DecodeError (the channel counts it); never another exception
    from atls.errors import DecodeError

    d, pub, store, b = setup
    rng = random.Random(5)
    dev = Updater(str(d / "root"), pub, "unix")
    offer = wire.push_offer((1, 1, 0), len(b.data), b.id)
    codes = set()
    for i in range(3000):
        if i % 300 == 0 or dev.state == "REFUSED":
            dev.on_message(offer)
        off = dev.offset if rng.random() < 0.7 else rng.randrange(0, len(b.data))
        m = bytearray(wire.push_chunk(off, b.data[off : off + rng.randint(1, 60)]))
        if rng.random() < 0.05:
            m[rng.randrange(len(m))] = rng.randrange(256)
        if rng.random() < 0.1:
            m = bytearray(rng.randbytes(rng.randint(0, 30)))
        try:
            r = dev.on_message(bytes(m))
        except DecodeError:
            continue
        assert r is None or wire.pull(r)[0] == wire.STATUS
        codes.add(dev.status()["code"])
    assert {"bad_signature", "receiving"} <= codes, codes
    assert boot.read_pointer(str(d / "root")) is None or boot.slot_ok(str(d / "root"), "a")


def test_airtime_estimate_matches_a_transfer(setup):
    d, pub, store, b = setup
    est = service.airtime(len(b.data))
    svc = service.OtaService(store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=1000)
    dev = Updater(str(d / "root"), pub, "unix")
    down, up = Link(random.Random(1)), Link(random.Random(2))
    down.send(svc.on_connect("d1", "0.0.0", 0), 0)
    run(svc, dev, down, up, 0, 60_000, stop=lambda now: svc.status("d1")["state"] == "SWITCHED")
    assert down.sent == est["frames_down"]  # no loss: every chunk once, plus the OFFER
    assert abs(up.sent - est["frames_up"]) <= 2


# The device side as the MicroPython unix port runs it, one process per
# "boot", fed over a pipe: a line "<hex>" in, a line "<hex>" or "-" out.
DEVICE_PUMP = r"""
import sys
from atls.ota.updater import Updater
u = Updater(sys.argv[1], bytes.fromhex(sys.argv[2]), "unix")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    try:
        r = u.on_message(bytes.fromhex(line.strip()))
    except Exception as e:
        print("E " + repr(e))
        break
    print(r.hex() if r else "-")
"""


class UnixPortDevice:
    def __init__(self, mpy, script, root, pub):
        self.p = mpy.popen(
            script, args=[root, pub.hex()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def on_message(self, m):
        self.p.stdin.write(m.hex() + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline().strip()
        assert line and not line.startswith("E "), line
        return None if line == "-" else bytes.fromhex(line)

    def power_off(self):
        self.p.kill()
        self.p.wait()


def test_unix_port_device_against_the_service(setup, mpy, tmp_path):
    d, pub, store, b = setup
    script = tmp_path / "pump.py"
    script.write_text(DEVICE_PUMP)
    root = str(d / "root")
    rng = random.Random(3)
    svc = service.OtaService(store, service.StaticTargets({"d1": "1.1.0"}), rate_fps=400)
    down = Link(rng, loss=0.05, dup=0.05, delay_ms=(5, 40))
    up = Link(rng, loss=0.05, dup=0.05, delay_ms=(5, 40))
    dev = UnixPortDevice(mpy, script, root, pub)
    try:
        down.send(svc.on_connect("d1", "0.0.0", 0), 0)
        now = run(svc, dev, down, up, 0, 30_000, stop=lambda now: svc.status("d1")["acked"] > 6000)
        dev.power_off()  # mid-download
        down.clear(), up.clear()
        svc.on_disconnect("d1")
        dev = UnixPortDevice(mpy, script, root, pub)
        down.send(svc.on_connect("d1", "0.0.0", now), now)
        run(
            svc,
            dev,
            down,
            up,
            now,
            now + 60_000,
            stop=lambda now: svc.status("d1")["state"] == "SWITCHED",
        )
    finally:
        dev.power_off()
    assert svc.status("d1")["state"] == "SWITCHED", (svc.status("d1"), svc.counters)
    assert svc.counters["resumed"] == 1
    assert boot.read_pointer(root)["version"] == "1.1.0" and boot.slot_ok(root, "a")


def test_device_repeats_itself_for_a_service_that_did_not_hear(setup):
    # its answers may be lost: duplicates keep getting one (every 8th), and a
    # chunk after the end gets the final STATUS again (else both sides wait forever)
    d, pub, store, b = setup
    dev = Updater(str(d / "root"), pub, "unix")
    dev.on_message(wire.push_offer((1, 1, 0), len(b.data), b.id))
    dev.on_message(wire.push_chunk(0, b.data[:48]))
    dup = wire.push_chunk(0, b.data[:48])
    answers = [dev.on_message(dup) for _ in range(17)]
    assert [i for i, a in enumerate(answers) if a] == [0, 8, 16]
    assert answers[8] == wire.push_status(wire.RECEIVING, 48)
    for off in range(48, len(b.data), 48):
        r = dev.on_message(wire.push_chunk(off, b.data[off : off + 48]))
    assert r == wire.push_status(wire.SWITCHED, len(b.data))
    last = wire.push_chunk(len(b.data) - 48, b.data[-48:])
    assert dev.on_message(last) == wire.push_status(wire.SWITCHED, len(b.data))
    # a refusal, said again
    other = Updater(str(d / "root2"), bytes(32), "unix")
    other.on_message(wire.push_offer((1, 1, 0), len(b.data), b.id))
    for off in range(0, b.header.head + 64, 48):
        r = other.on_message(wire.push_chunk(off, b.data[off : off + 48]))
    assert wire.pull(r)[1][0] in (wire.BAD_SIGNATURE, wire.BAD_BUNDLE)
    assert other.on_message(wire.push_chunk(off + 48, b.data[off + 48 : off + 96])) == r


def test_early_chunks_are_held_until_the_gap_fills(setup):
    d, pub, store, b = setup
    dev = Updater(str(d / "root"), pub, "unix")
    dev.on_message(wire.push_offer((1, 1, 0), len(b.data), b.id))
    for off in (48, 96, 144):  # 0 is late
        dev.on_message(wire.push_chunk(off, b.data[off : off + 48]))
    assert dev.offset == 0
    dev.on_message(wire.push_chunk(0, b.data[:48]))
    assert dev.offset == 192  # the held ones were written too
