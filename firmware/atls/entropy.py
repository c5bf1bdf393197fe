"""Entropy at boot and the device's random generator.

start(board, dev) runs once per boot (atls.app.main, before the first
handshake): it health-tests the raw noise sources, seeds an HMAC_DRBG
(atls.crypto.drbg) from several sources and installs it behind
atls.crypto.backend.random_bytes, which every ECDHE key, ClientHello random
and pairing nonce comes from.  It returns None, or the fields of the
`entropy_failed` status line: the device then does not handshake.
"""

# Theory of operation.
# Why: os.urandom alone is weak on the boards (ESP32: esp_random() is only
# pseudo-random while RF is off, and the XBee boards never start WiFi; RP2040:
# a ring-oscillator bit through an LFSR, or pico_rand's 128-bit PRNG).
# Sources, mixed into one SP 800-90A instantiation:
#   entropy input   SHA-256(1024 os.urandom bytes) || SHA-256(1024 jitter samples)
#   nonce           boot counter (8 bytes, big endian) || 8 more os.urandom bytes
#   personalization "atls-drbg" || device seed || device_id
# - os.urandom: on ESP32 with `"entropy": {"rf_at_boot": true}` in
#   board_config.json the WLAN interface is switched on while sampling (RF
#   noise feeds esp_random()), and off again unless it was on before.
# - jitter: ticks_us() racing the CPU: one sample is the low 8 bits of the
#   number of busy-loop turns until ticks_us() moved by _WINDOW_US.  (A fixed
#   loop's tick delta was measured too: on the unix port 80-98% of those
#   deltas had the same value; the turn count varies far more.)
# - device seed: 32 secret bytes per device written by `make provision`
#   (device.json "seed", hex).  An attacker who can predict os.urandom and the
#   jitter still has to know it.  Never printed, never in a status line.
# - boot counter: a decimal number in the file COUNTER_FILE (flash, or the
#   working directory on the unix port), rewritten once per boot: no two
#   boots share a nonce.
# Health tests (SP 800-90B §4.4), on every raw sample, at boot and at every
# reseed, with alpha = 2^-20 (the false-alarm rate per sample 90B suggests):
#   repetition count (§4.4.1): C = 1 + ceil(20 / H) identical samples in a row
#   adaptive proportion (§4.4.2): window W = 1024, fail when the window's
#     first value occurs C = 1 + CRITBINOM(1024, 2^-H, 1 - 2^-20) times
# H is the min-entropy per sample claimed for the source.  The claims are
# engineering estimates that set the test cutoffs, not a 90B §6 assessment of
# a board (future work, per board): os.urandom bytes H = 4 (half of 8, it is
# conditioned output) -> 6 and 105; jitter samples H = 1/8 -> 161 and 979.
# A stuck source (constant output, a clock that does not move) fails within
# the first 161 samples.  tests/test_entropy.py recomputes the cutoffs.
# Reseed: every _RESEED_EVERY requests and on reseed(), from 64 fresh
# os.urandom bytes and 64 jitter samples through the same (continuing) tests.
# A failure then makes every later random_bytes raise EntropyError.
import os
from binascii import unhexlify

from atls.crypto import backend
from atls.crypto.drbg import HmacDrbg

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import ticks_us
except ImportError:  # CPython: the host tests
    from time import monotonic_ns

    def ticks_us():
        return monotonic_ns() // 1000


urandom = os.urandom  # the raw sources, module attributes so tests can swap them

COUNTER_FILE = "boot_count"
_BOOT_SAMPLES = const(1024)  # one adaptive-proportion window per source at boot
_RESEED_SAMPLES = const(64)
_RESEED_EVERY = const(64)  # requests between reseeds (SP 800-90A reseed_interval)
_WINDOW_US = const(16)  # jitter: busy-loop turns counted over this many µs
_SPIN_MAX = const(16384)  # bounds a sample when the clock does not move
_TICKS_MASK = const(0x3FFFFFFF)  # every port's ticks period is a power of two >= 2^30
_APT_WINDOW = const(1024)  # SP 800-90B §4.4.2, non-binary samples
_U_RCT = const(6)  # os.urandom, H = 4: 1 + ceil(20/4)
_U_APT = const(105)  # 1 + CRITBINOM(1024, 2^-4, 1 - 2^-20)
_J_RCT = const(161)  # jitter, H = 1/8: 1 + ceil(20/0.125)
_J_APT = const(979)  # 1 + CRITBINOM(1024, 2^-0.125, 1 - 2^-20)
_MIN_SEED = const(16)

device_rng = None  # the installed DeviceRandom, after start()


class EntropyError(Exception):
    """A noise source failed its continuous health test at a reseed."""


class HealthTest:
    """SP 800-90B §4.4.1 repetition count and §4.4.2 adaptive proportion
    tests over one source's samples (ints).  feed(x) -> False once failed;
    `failed` then names the test.  The state persists across calls."""

    def __init__(self, rct_cutoff, apt_cutoff, window=_APT_WINDOW):
        self.rct_cutoff = rct_cutoff
        self.apt_cutoff = apt_cutoff
        self.window = window
        self.failed = None
        self._last = -1
        self._run = 0
        self._ref = -1
        self._count = 0
        self._pos = 0

    def feed(self, x):
        if x == self._last:  # §4.4.1: B = B + 1; fail when B >= C
            self._run += 1
            if self._run >= self.rct_cutoff:
                self.failed = self.failed or "repetition_count"  # the first failure stays
        else:
            self._last = x
            self._run = 1
        if self._pos == 0:  # §4.4.2: A = first sample of the window, B = 1
            self._ref = x
            self._count = 1
        elif x == self._ref:
            self._count += 1
            if self._count >= self.apt_cutoff:
                self.failed = self.failed or "adaptive_proportion"
        self._pos += 1
        if self._pos == self.window:
            self._pos = 0
        return self.failed is None


def urandom_health():
    """A fresh HealthTest with the os.urandom cutoffs (H = 4 per byte)."""
    return HealthTest(_U_RCT, _U_APT)


def jitter_health():
    """A fresh HealthTest with the jitter cutoffs (H = 1/8 per sample)."""
    return HealthTest(_J_RCT, _J_APT)


def urandom_block(n, health):
    """SHA-256 of n os.urandom bytes, each byte health-tested; None on failure."""
    h = backend.sha256()
    while n > 0:
        b = urandom(min(n, 64))
        for x in b:
            if not health.feed(x):
                return None
        h.update(b)
        n -= len(b)
    return h.digest()


def jitter_block(n, health):
    """SHA-256 of n jitter samples, each health-tested; None on failure (at
    the first failing sample: a stuck clock costs _SPIN_MAX turns a sample)."""
    h = backend.sha256()
    out = bytearray(n)
    for i in range(n):
        t0 = ticks_us()
        c = 0
        while c < _SPIN_MAX and ((ticks_us() - t0) & _TICKS_MASK) < _WINDOW_US:
            c += 1
        out[i] = c & 0xFF
        if not health.feed(c & 0xFF):
            return None
    h.update(out)
    return h.digest()


def rf_at_boot(board):
    """board_config.json `"entropy": {"rf_at_boot": true}`; default false."""
    return bool((board.get("entropy") or {}).get("rf_at_boot", False))


def radio_on():  # pragma: no cover - boards only (no `network` elsewhere)
    """Switch the WLAN interface on; returns a function that switches it off
    again, or None when it was on already or there is no WLAN."""
    try:
        import network

        sta = network.WLAN(network.STA_IF)
        if sta.active():
            return None
        sta.active(True)
    except Exception:  # noqa: BLE001 - no radio, or it would not start: sample anyway
        return None
    return lambda: sta.active(False)


def bump_boot_counter(path=COUNTER_FILE):
    """Read, increment and write back the boot counter (one write); a missing
    or unreadable file counts from 0, an unwritable one is not an error."""
    n = 0
    try:
        with open(path) as f:
            n = int(f.read().strip() or "0")
    except (OSError, ValueError):
        n = 0
    n += 1
    try:
        with open(path, "w") as f:
            f.write("%d\n" % n)
    except OSError:
        pass
    return n


class DeviceRandom:
    """random_bytes(n) on the device: HMAC_DRBG output, reseeded every
    _RESEED_EVERY requests and on reseed() with health-tested fresh input."""

    def __init__(self, drbg, urandom_health, jitter_health):
        self._drbg = drbg
        self._hu = urandom_health
        self._hj = jitter_health
        self.failed = None

    def __call__(self, n):
        if self.failed is None and self._drbg.reseed_due:
            self.reseed()
        if self.failed is not None:
            raise EntropyError(self.failed)
        return self._drbg.generate(n)

    def reseed(self, additional=b""):
        u = urandom_block(_RESEED_SAMPLES, self._hu)
        j = None if u is None else jitter_block(_RESEED_SAMPLES, self._hj)
        if j is None:
            if u is None:
                self.failed = "urandom " + self._hu.failed
            else:
                self.failed = "jitter " + self._hj.failed
            raise EntropyError(self.failed)
        self._drbg.reseed(u + j, additional)


def reseed(additional=b""):
    """Reseed the installed generator now (e.g. before a handshake)."""
    if device_rng is not None:
        device_rng.reseed(additional)


def start(board, dev, counter_path=COUNTER_FILE, radio=None):
    """Boot: seed the DRBG and install it behind backend.random_bytes.
    Returns None, or the failure's status fields (never a secret)."""
    global device_rng
    try:
        seed = unhexlify(dev.get("seed") or "")
    except ValueError:
        seed = None
    if seed is None or 0 < len(seed) < _MIN_SEED:
        return {"source": "seed", "error": "device.json seed must be hex, at least 16 bytes"}
    boots = bump_boot_counter(counter_path)
    off = (radio or radio_on)() if rf_at_boot(board) else None
    try:
        hu = urandom_health()
        u = urandom_block(_BOOT_SAMPLES, hu)
        if u is None:
            return {"source": "urandom", "test": hu.failed}
        hj = jitter_health()
        j = jitter_block(_BOOT_SAMPLES, hj)
        if j is None:
            return {"source": "jitter", "test": hj.failed}
        nonce = boots.to_bytes(8, "big") + urandom(8)
    finally:
        if off is not None:
            off()
    pers = b"atls-drbg" + seed + str(dev.get("device_id", "")).encode()
    device_rng = DeviceRandom(HmacDrbg(u + j, nonce, pers, _RESEED_EVERY), hu, hj)
    backend.install_random(device_rng)
    return None
