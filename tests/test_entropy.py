"""atls.entropy: the boot-time seeding of the device DRBG, the SP 800-90B
health tests on the raw sources, and how backend.random_bytes is served.

CPython: the health tests against SP 800-90B §4.4.1/§4.4.2 (cutoffs
recomputed here), stuck sources refused, every source mixed into the seed,
the boot counter, the RF-at-boot decision, reseeding, and host tools keeping
os.urandom.  MicroPython unix port: the real sources pass at boot, the TLS
client draws from the DRBG, and the real application (atls.app.main) with a
stuck source prints `entropy_failed` and never handshakes; the device seed
never appears in the output.
"""

import json
import math
import os
import random
import subprocess
import sys
import time

import pytest
from e2e import ROOT

from atls import entropy
from atls.crypto import backend
from atls.errors import UsageError
from atls.tls.client import ClientConfig, TLSClient
from host_tools.toolchain import free_port

SEED = "5eed" * 16  # a device seed as `make provision` writes it (32 bytes, hex)
DEV = {"device_id": "dev-1", "seed": SEED}


def stuck_bytes(n):
    return bytes(n)


class FakeSources:
    """Deterministic stand-ins for os.urandom and ticks_us (a seeded PRNG and a
    clock that advances 0-3 µs per read), counting the os.urandom calls."""

    def __init__(self, seed=1):
        self.rnd = random.Random(seed)
        self.t = 0
        self.urandom_calls = 0

    def urandom(self, n):
        self.urandom_calls += 1
        return self.rnd.randbytes(n)

    def ticks_us(self):
        self.t += self.rnd.randint(0, 3)
        return self.t


@pytest.fixture
def sources(monkeypatch, tmp_path):
    """Installs FakeSources in atls.entropy; the backend's random source and
    the installed generator are restored afterwards."""
    prev = backend.install_random(None)
    fake = FakeSources()
    monkeypatch.setattr(entropy, "urandom", fake.urandom)
    monkeypatch.setattr(entropy, "ticks_us", fake.ticks_us)
    monkeypatch.setattr(entropy, "device_rng", None)
    fake.counter = str(tmp_path / "boot_count")
    yield fake
    backend.install_random(prev)


def critbinom(n, p, alpha):
    """Smallest k with P(Binomial(n, p) <= k) >= 1 - alpha (SP 800-90B §4.4.2)."""
    total = 0.0
    for k in range(n + 1):
        total += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )
        if total >= 1 - alpha:
            return k
    return n


# --------------------------------------------------------------------------
# SP 800-90B §4.4 health tests


@pytest.mark.parametrize("make, h", [(entropy.urandom_health, 4), (entropy.jitter_health, 0.125)])
def test_sp800_90b_4_4_cutoffs_for_the_claimed_entropy(make, h):
    t = make()
    assert t.rct_cutoff == 1 + math.ceil(20 / h)  # §4.4.1, alpha = 2^-20
    assert t.window == 1024  # §4.4.2, non-binary samples
    assert t.apt_cutoff == 1 + critbinom(1024, 2**-h, 2**-20)


def test_sp800_90b_4_4_1_repetition_count_fires_at_the_cutoff():
    t = entropy.HealthTest(5, 1000)
    for x in (1, 2, 2, 2, 2, 3, 3):  # a run of 4 < 5
        assert t.feed(x)
    for _ in range(2):
        assert t.feed(3)  # 4 in a row
    assert not t.feed(3) and t.failed == "repetition_count"  # the fifth 3 in a row
    assert not t.feed(4)  # stays failed
    t = entropy.HealthTest(3, 4, window=8)
    assert [t.feed(x) for x in (1, 1, 1, 1)] == [True, True, False, False]
    assert t.failed == "repetition_count"  # the first failure is the one reported


def test_sp800_90b_4_4_2_adaptive_proportion_counts_the_windows_first_value():
    t = entropy.HealthTest(100, 4, window=8)
    for x in (7, 1, 7, 2, 7, 3, 4, 5):  # 7 three times in the window: < 4
        assert t.feed(x)
    for x in (7, 1, 7, 2, 7, 3, 4, 5):  # new window, same counts
        assert t.feed(x)
    for x in (9, 9, 1, 9, 2):
        assert t.feed(x)
    assert not t.feed(9) and t.failed == "adaptive_proportion"


def test_healthy_random_bytes_pass():
    for _ in range(50):
        t = entropy.urandom_health()
        assert all(t.feed(x) for x in os.urandom(1024))


# --------------------------------------------------------------------------
# Boot: stuck sources are refused


def test_stuck_urandom_is_refused_and_nothing_is_installed(sources, monkeypatch):
    monkeypatch.setattr(entropy, "urandom", stuck_bytes)
    failure = entropy.start({}, DEV, counter_path=sources.counter)
    assert failure == {"source": "urandom", "test": "repetition_count"}
    assert entropy.device_rng is None
    assert backend.install_random(None) is os.urandom  # random_bytes untouched


def test_two_valued_urandom_fails_the_adaptive_proportion_test(sources, monkeypatch):
    monkeypatch.setattr(entropy, "urandom", lambda n: bytes(i & 1 for i in range(n)))
    failure = entropy.start({}, DEV, counter_path=sources.counter)
    assert failure == {"source": "urandom", "test": "adaptive_proportion"}


def test_stuck_clock_is_refused(sources, monkeypatch):
    monkeypatch.setattr(entropy, "ticks_us", lambda: 12345)
    t0 = time.monotonic()
    failure = entropy.start({}, DEV, counter_path=sources.counter)
    assert failure == {"source": "jitter", "test": "repetition_count"}
    assert time.monotonic() - t0 < 30  # bounded turns per sample, stops at the failure
    assert entropy.device_rng is None


@pytest.mark.parametrize("seed", ["zz" * 32, "00" * 15, "abc"])
def test_bad_seed_is_refused_without_showing_it(sources, seed):
    failure = entropy.start({}, {"device_id": "d", "seed": seed}, counter_path=sources.counter)
    assert failure["source"] == "seed" and "hex" in failure["error"]
    assert seed not in json.dumps(failure)


# --------------------------------------------------------------------------
# Boot: every source reaches the seed, the DRBG serves random_bytes


def boot_output(sources, dev=DEV, count=None):
    if count is not None:
        with open(sources.counter, "w") as f:
            f.write("%d\n" % count)
    fake = FakeSources()
    entropy.urandom, entropy.ticks_us = fake.urandom, fake.ticks_us
    assert entropy.start({}, dev, counter_path=sources.counter) is None
    return backend.random_bytes(32)


def test_random_bytes_come_from_the_seeded_drbg(sources):
    a = boot_output(sources, count=7)
    assert boot_output(sources, count=7) == a  # the same inputs: the same DRBG output
    assert backend.install_random(None) is entropy.device_rng
    assert boot_output(sources, count=8) != a  # boot counter in the nonce
    other = dict(DEV, seed="00" * 32)
    assert boot_output(sources, other, count=7) != a  # device seed in the personalization
    assert boot_output(sources, dict(DEV, device_id="dev-2"), count=7) != a
    no_seed = {"device_id": "dev-1"}  # devices provisioned before seeds existed still boot
    assert boot_output(sources, no_seed, count=7) not in (a, b"")


def test_tls_client_hello_and_key_share_are_drawn_from_the_drbg(sources):
    """Same sources, same boot: byte-identical ClientHello (random and key
    share); os.urandom would make them differ."""

    def hello(count):
        boot_output(sources, count=count)
        tls = TLSClient(ClientConfig(psk=bytes(32), psk_identity=b"dev-1"))
        tls.start(0)
        return tls.data_to_send()

    assert hello(3) == hello(3)
    assert hello(3) != hello(4)


def test_reseeds_every_64_requests_and_on_demand(sources):
    assert entropy.start({}, DEV, counter_path=sources.counter) is None
    calls = sources.urandom_calls
    for _ in range(64):
        backend.random_bytes(16)
    assert sources.urandom_calls == calls  # no fresh input within the interval
    backend.random_bytes(16)
    assert sources.urandom_calls == calls + 1  # the 65th request reseeded first
    entropy.reseed(b"handshake")
    assert sources.urandom_calls == calls + 2


def test_a_source_stuck_at_reseed_stops_random_bytes(sources, monkeypatch):
    assert entropy.start({}, DEV, counter_path=sources.counter) is None
    monkeypatch.setattr(entropy, "urandom", stuck_bytes)
    with pytest.raises(entropy.EntropyError, match="urandom repetition_count"):
        entropy.reseed()
    with pytest.raises(entropy.EntropyError):
        backend.random_bytes(32)  # refuses from then on
    assert entropy.device_rng.failed == "urandom repetition_count"


def test_oversized_request_is_a_usage_error(sources):
    assert entropy.start({}, DEV, counter_path=sources.counter) is None
    with pytest.raises(UsageError):
        backend.random_bytes(65537)


# --------------------------------------------------------------------------
# Boot counter, RF at boot


def test_boot_counter_one_write_per_boot(sources, tmp_path):
    for n in (1, 2, 3):
        assert entropy.start({}, DEV, counter_path=sources.counter) is None
        assert open(sources.counter).read() == "%d\n" % n
    with open(sources.counter, "w") as f:
        f.write("garbage")
    assert entropy.bump_boot_counter(sources.counter) == 1  # unreadable: starts again
    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    assert entropy.bump_boot_counter(str(unwritable)) == 1
    assert entropy.start({}, DEV, counter_path=str(unwritable)) is None  # not fatal


def test_rf_at_boot_is_the_boards_choice():
    for name in ("esp32", "pico_w", "unix"):
        board = json.loads((ROOT / "boards" / name / "board_config.json").read_text())
        assert entropy.rf_at_boot(board) is False  # default: off (the XBee boards)
    assert entropy.rf_at_boot({"entropy": {"rf_at_boot": True}}) is True
    assert entropy.rf_at_boot({"entropy": {"rf_at_boot": False}}) is False
    assert entropy.rf_at_boot({"entropy": None}) is False


def test_radio_is_on_only_while_sampling_when_the_board_allows(sources):
    log = []

    def radio():
        log.append(("on", sources.urandom_calls))
        return lambda: log.append(("off", sources.urandom_calls))

    assert entropy.start({"link": {"type": "xbee"}}, DEV, sources.counter, radio) is None
    assert log == []
    board = {"link": {"type": "xbee"}, "entropy": {"rf_at_boot": True}}
    calls = sources.urandom_calls
    assert entropy.start(board, DEV, sources.counter, radio) is None
    assert log[0] == ("on", calls) and log[1][0] == "off" and log[1][1] > calls + 1
    assert len(log) == 2


def test_radio_is_switched_off_when_a_source_fails(sources, monkeypatch):
    log = []
    monkeypatch.setattr(entropy, "urandom", stuck_bytes)
    board = {"entropy": {"rf_at_boot": True}}
    failure = entropy.start(board, DEV, sources.counter, lambda: lambda: log.append("off"))
    assert failure["source"] == "urandom" and log == ["off"]


def test_host_tools_keep_os_urandom():
    code = (
        "import os\n"
        "import host_tools.service, host_tools.gateway, atls.app\n"
        "from atls.crypto import backend\n"
        "assert backend.install_random(None) is os.urandom\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# --------------------------------------------------------------------------
# MicroPython unix port

MPY_BOOT = """
import json
from atls import entropy
from atls.crypto import backend
from atls.tls.client import ClientConfig, TLSClient

res = [entropy.start({}, {"device_id": "d", "seed": "%s"}, counter_path="boot_count") for i in range(3)]
ok = res == [None, None, None] and backend.install_random(None) is entropy.device_rng
backend.install_random(entropy.device_rng)

class Fake:  # deterministic sources: the ClientHello must repeat byte for byte
    def __init__(self):
        self.x = 1
        self.t = 0
    def urandom(self, n):
        out = bytearray(n)
        for i in range(n):
            self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
            out[i] = self.x >> 16 & 255
        return bytes(out)
    def ticks(self):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        self.t += self.x >> 16 & 3
        return self.t

def hello():
    f = Fake()
    entropy.urandom, entropy.ticks_us = f.urandom, f.ticks
    with open("boot_count", "w") as c:
        c.write("5")
    assert entropy.start({}, {"device_id": "d"}, counter_path="boot_count") is None
    tls = TLSClient(ClientConfig(psk=bytes(32), psk_identity=b"d"))
    tls.start(0)
    return tls.data_to_send()

h = hello()
print(json.dumps({"ok": ok, "count": open("boot_count").read(), "same": h == hello()}))
"""


def test_real_sources_pass_at_boot_and_the_tls_client_uses_the_drbg(mpy, tmp_path):
    res = mpy.check(MPY_BOOT % SEED, cwd=tmp_path)
    assert res.json() == {"ok": True, "count": "6\n", "same": True}
    assert SEED not in res.stdout + res.stderr


def device_files(tmp_path):
    board = {"name": "unix", "link": {"type": "udp"}, "led": None, "button": None, "wifi": None}
    dev = dict(DEV, service="default", tls={"psk": "11" * 32, "psk_identity": "dev-1"})
    dev["link"] = {"host": "127.0.0.1", "port": free_port()}  # nobody listens: never connects
    (tmp_path / "board_config.json").write_text(json.dumps(board))
    (tmp_path / "device.json").write_text(json.dumps(dev))


STUCK = """
from atls import entropy
entropy.%s
from atls.app import main
main()
print("main returned")
"""


@pytest.mark.parametrize(
    "stub, test",
    [
        ("urandom = lambda n: bytes(n)", {"source": "urandom", "test": "repetition_count"}),
        ("ticks_us = lambda: 0", {"source": "jitter", "test": "repetition_count"}),
    ],
)
def test_app_with_a_stuck_source_refuses_to_handshake(mpyc, tmp_path, stub, test):
    """The real application entry (as firmware/main.py runs it), .mpy files."""
    device_files(tmp_path)
    res = mpyc.run(STUCK % stub, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    events = [json.loads(line[5:]) for line in res.lines if line.startswith("ATLS ")]
    assert [e["ev"] for e in events] == ["boot", "entropy_failed"]
    assert events[1] == dict(test, ev="entropy_failed")
    assert res.lines[-1] == "main returned"  # no handshake, no link opened
    assert SEED not in res.stdout + res.stderr


def test_firmware_main_boots_with_the_real_sources_and_never_prints_the_seed(mpy, tmp_path):
    device_files(tmp_path)
    out = []
    for boot in (1, 2):
        p = mpy.popen(
            ROOT / "firmware" / "main.py",
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                line = p.stdout.readline()
                out.append(line)
                if not line or '"ev": "handshaking"' in line:
                    break
        finally:
            p.kill()
            out.append(p.communicate(timeout=10)[0])
        assert '"ev": "handshaking"' in "".join(out)
        assert (tmp_path / "boot_count").read_text() == "%d\n" % boot
    text = "".join(out)
    assert "entropy_failed" not in text
    assert SEED not in text and SEED.upper() not in text
