"""Issue 12 "never dies": the device session turns every failure into a
session failure with backoff, drops the TLS client once the channel is up,
feeds a watchdog between long steps, and its clock stays in the small-int
range.  Regression tests written against the code before each fix."""

import gc

import pytest
from hostile_peer import HostilePeer

from atls import session as session_mod
from atls.eventloop import Clock
from atls.link import LinkConfig
from atls.session import DeviceSession
from atls.tls.client import ClientConfig

PSK = bytes(range(32))


def _session(**kw):
    cfg = ClientConfig(psk=PSK, psk_identity=b"dev-1")
    return DeviceSession(
        cfg, LinkConfig(mtu=1200, handshake_timeout_ms=1000), retry_ms=100, retry_max_ms=400, **kw
    )


def _exchange(dev, peer, now, rounds=10):
    for _ in range(rounds):
        moved = False
        for d in dev.datagrams(now):
            moved = True
            for r in peer.handle(d, now):
                dev.receive(r, now)
        if not moved:
            return


@pytest.mark.parametrize("attack", ["hrr_close", "random", "bigcert", "error", "garbage"])
def test_issue12_hostile_flights_fail_the_session_and_it_retries(attack):
    """HRR + plaintext close_notify, then flight 3, raised UsageError("connection
    is closed") out of DeviceSession.receive before the fix."""
    dev = _session()
    peer = HostilePeer([attack, attack])
    dev.connect(0)
    now = 0
    for now in range(0, 3000, 50):
        _exchange(dev, peer, now)
    assert dev.state in ("waiting", "handshaking")
    assert dev.handshakes >= 2  # it failed and started again, with backoff
    assert peer.done[:2] == [attack, attack]


def test_issue12_hrr_close_notify_is_a_tls_failure():
    dev = _session()
    peer = HostilePeer(["hrr_close"])
    dev.connect(0)
    _exchange(dev, peer, 0)
    evs = dev.events()
    assert dev.state == "waiting" and ("failed" in [e[0] for e in evs]), evs
    assert dev.next_timer_ms() == 100  # backoff


def test_issue12_huge_encrypted_certificate_is_a_tls_failure():
    """The path declines the PSK, does ECDHE itself and sends a Certificate as
    large as the limits allow, encrypted: decrypted, parsed, refused."""
    from cryptography.hazmat.primitives import serialization

    from host_tools import pki

    der = pki.make_ca("T").cert.public_bytes(serialization.Encoding.DER)
    cfg = ClientConfig(psk=PSK, psk_identity=b"dev-1", ca_certs=[der], server_name="service.local")
    dev = DeviceSession(cfg, LinkConfig(mtu=1200), retry_ms=100)
    dev.connect(0)
    _exchange(dev, HostilePeer(["bigcert"]), 0)
    evs = dev.events()
    assert evs[-1][0] == "failed" and evs[-1][1].startswith("tls alert"), evs
    assert evs[-1][1] != "tls alert 20"  # not bad_record_mac: it was decrypted
    assert dev.state == "waiting"


class _Boom:
    """A TLS client whose receive() raises what a tiny heap or a bug raises."""

    exc = MemoryError

    def __init__(self, config, rng=None, discards=0):
        self.connected = False
        self.discarded = 0  # the stale-flight count of TLSClient (issue 14)

    def discard(self):
        return False

    def start(self, now_ms):
        pass

    def data_to_send(self):
        return b"\x16\x03\x03\x00\x01\x01"

    def receive(self, data, now_ms=None):
        raise self.exc("boom")


@pytest.mark.parametrize("exc", [MemoryError, RuntimeError, IndexError, OSError])
def test_issue12_any_exception_in_a_handshake_fails_the_session(monkeypatch, exc):
    monkeypatch.setattr(session_mod, "TLSClient", _Boom)
    monkeypatch.setattr(_Boom, "exc", exc)
    collected = []
    monkeypatch.setattr(gc, "collect", lambda: collected.append(1))
    dev = _session()
    peer = HostilePeer(["random"])
    dev.connect(0)
    _exchange(dev, peer, 0)
    evs = dev.events()
    assert dev.state == "waiting" and evs and evs[-1][0] == "failed", evs
    assert exc.__name__ in evs[-1][1]
    if exc is MemoryError:
        assert collected  # garbage collected before the retry
    _exchange(dev, peer, 100)
    assert dev.handshakes == 2


def test_issue12_watchdog_fed_around_tls_steps():
    fed = []
    dev = _session(feed=lambda: fed.append(1))
    dev.connect(0)
    assert fed  # the key share computed in start() is a long step
    n = len(fed)
    _exchange(dev, HostilePeer(["random"]), 0)
    assert len(fed) > n


def _udp_session(svc, dev, until, timeout=20.0):
    import socket
    import time

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.01)
    t0 = time.monotonic()
    events = []
    try:
        while not until(events):
            assert time.monotonic() - t0 < timeout, events
            now = int((time.monotonic() - t0) * 1000)
            for d in dev.datagrams(now):
                s.sendto(d, svc.addr)
            try:
                dev.receive(s.recv(2048), now)
            except socket.timeout:
                pass
            events += dev.events()
    finally:
        s.close()
    return events


def test_issue12_tls_client_and_its_secrets_are_dropped_once_up(tmp_path):
    from e2e import ServiceProc

    svc = ServiceProc(tmp_path, devices={"dev-1": PSK})
    try:
        cfg = ClientConfig(psk=PSK, psk_identity=b"dev-1")
        dev = DeviceSession(cfg, LinkConfig(mtu=1200, rto_ms=200))
        dev.connect(0)
        assert dev.tls is not None  # while handshaking
        dev.send(b"hello", 0)
        evs = _udp_session(svc, dev, lambda ev: ("message", b"hello") in ev)
        assert ("up", dev.suite) in evs
        assert dev.state == "up" and dev.tls is None  # only the channel keys remain
    finally:
        svc.stop()


class _Raw:
    """An injected ticks_ms: MicroPython's wraps at 2**30 on a 32-bit port."""

    def __init__(self, start):
        self.t = start

    def __call__(self):
        return self.t


def _diff(a, b, period=1 << 30):
    return ((a - b + period // 2) & (period - 1)) - period // 2


def test_issue12_clock_is_rebased_before_it_leaves_the_small_int_range():
    raw = _Raw((1 << 30) - 5000)  # near the wrap of ticks_ms
    clock = Clock(raw=raw, diff=_diff)
    limit = Clock.REBASE_AT
    assert limit <= (1 << 29)
    dev = _session()
    dev.connect(clock())
    seen = 0
    for _ in range(4 * (limit // (1 << 20)) + 8):
        raw.t = (raw.t + (1 << 20)) & ((1 << 30) - 1)  # ~17 min per step, wrapping
        now = clock()
        assert 0 <= now < limit + (1 << 20)
        if clock.rebase_due():
            delta = clock.rebase()
            seen += 1
            dev.rebase(delta, clock())
            assert clock() < (1 << 20)
    assert seen >= 3  # days of uptime and every timestamp stays a small int
    assert dev.datagrams(clock()) or dev.state == "handshaking"


def test_issue12_step_rebases_the_clock_and_tells_the_session(monkeypatch):
    from atls import eventloop

    raw = _Raw(0)
    clock = Clock(raw=raw, diff=_diff)
    dev = _session()
    dev.connect(clock())
    for t in (1 << 28, Clock.REBASE_AT + 10):  # ticks_ms is read at least every half period
        raw.t = t
        clock()

    class T:
        def send(self, d):
            pass

        def recv(self, wait):
            return []

    got = []
    eventloop.step(dev, T(), clock, got.append, block=False)
    assert clock() < 100 and ("rebase", Clock.REBASE_AT + 10) in got
    assert dev.state == "handshaking" and dev.handshakes == 2  # a fresh session at the new base


# -- atls.supervisor (what firmware/main.py runs) -------------------------------
from atls.supervisor import CONFIG_BLINK, Supervisor, Watchdog  # noqa: E402


class ConfigError(Exception):
    pass


class _Board:
    """Everything a board gives the supervisor, recorded."""

    def __init__(self):
        self.lines = []
        self.slept = 0
        self.resets = 0
        self.led = []
        self.fed = 0

    def status(self, ev, **kw):
        kw["ev"] = ev
        self.lines.append(kw)

    def sleep_ms(self, ms):
        self.slept += ms

    def reset(self):
        self.resets += 1
        raise SystemExit  # machine.reset() does not return

    def set(self, on):
        self.led.append(on)

    def feed(self):
        self.fed += 1


def _sup(b, load, run, reset=True, **kw):
    wd = Watchdog()
    wd.feed = b.feed
    return Supervisor(
        load,
        run,
        b.status,
        sleep_ms=b.sleep_ms,
        reset=b.reset if reset else None,
        led=b,
        watchdog=wd,
        now_ms=lambda: b.slept,
        elapsed=lambda t0: b.slept - t0,
        **kw,
    )


def test_issue12_supervisor_restarts_after_any_error_with_backoff():
    b = _Board()
    runs = []

    def run(board, dev, wd):
        runs.append(1)
        if len(runs) < 4:
            raise [OSError, MemoryError, RuntimeError][len(runs) - 1]("x")
        return "done"

    sup = _sup(b, lambda: ({}, {}), run, reset=False)
    assert sup.run(ConfigError) == "done"
    errs = [e for e in b.lines if e["ev"] == "error"]
    assert [e["error"] for e in errs] == ["OSError: x", "MemoryError: x", "RuntimeError: x"]
    assert [e["restart_ms"] for e in errs] == [1000, 2000, 4000]
    assert b.slept == 7000 and b.fed >= 70  # the watchdog is fed while waiting
    assert b.resets == 0  # the unix port is never reset


def test_issue12_supervisor_resets_a_board_after_repeated_failures():
    b = _Board()

    def run(board, dev, wd):
        raise ValueError("bug")

    with pytest.raises(SystemExit):
        _sup(b, lambda: ({"max_failures": 3}, {}), run).run(ConfigError)
    assert b.resets == 1
    assert [e["ev"] for e in b.lines] == ["error", "error", "reset"]


def test_issue12_config_error_waits_blinking_never_resets():
    b = _Board()
    tries = []

    def load():
        tries.append(1)
        if len(tries) < 4:
            raise ConfigError("device.json is not valid JSON")
        return {}, {}

    assert _sup(b, load, lambda *a: "ok", poll_ms=1200).run(ConfigError) == "ok"
    assert [e["ev"] for e in b.lines] == ["config_error"]  # once per distinct message
    assert b.resets == 0 and b.slept == 3600
    assert b.led[: len(CONFIG_BLINK)] == list(CONFIG_BLINK)


def test_issue12_ctrl_c_leaves_to_the_repl():
    b = _Board()

    def run(board, dev, wd):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sup(b, lambda: ({}, {}), run).run(ConfigError)


def test_issue12_watchdog_from_board_config():
    made = []

    class WDT:
        def __init__(self, timeout):
            made.append(timeout)

        def feed(self):
            made.append("fed")

    wd = Watchdog(8000, factory=WDT)
    wd.feed()  # not started: nothing
    wd.start()
    wd.start()
    wd.feed()
    assert made == [8000, "fed"]
    lines = []
    bad = Watchdog(9000, factory=lambda timeout: 1 / 0)
    bad.start(lambda ev, **kw: lines.append(ev))
    bad.feed()
    assert lines == ["watchdog_error"]


def test_issue12_config_error_blinks_the_board_led_when_only_device_json_is_bad(monkeypatch):
    import sys
    import types

    values = []

    class Pin:
        OUT = 1

        def __init__(self, pin, mode):
            assert pin == "LED"

        def value(self, v):
            values.append(v)

    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace(Pin=Pin))
    b = _Board()
    tries = []

    def load():
        tries.append(1)
        if len(tries) < 2:
            raise ConfigError("device.json is not valid JSON")
        return {}, {}

    sup = Supervisor(
        load,
        lambda *a: "ok",
        b.status,
        sleep_ms=b.sleep_ms,
        poll_ms=1200,
        led_config=lambda: {"pin": "LED", "active_high": True},
    )
    assert sup.run(ConfigError) == "ok"
    assert values == list(CONFIG_BLINK) + [0]
