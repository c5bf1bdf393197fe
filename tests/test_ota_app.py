"""host_tools.ota.app (the service's composition: OtaService on channel 2 of
every session, grants, refused channels) and atls.ota.agent (the device
app's side: Updater built at the first channel-2 message, reset after the
switch, confirm after the first handshake), wired to each other in CPython;
and the service config's "ota" object through the real loader."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from atls.ota import boot, running_version
from atls.ota.agent import Agent
from host_tools.ota import bundle
from host_tools.ota.app import OtaApp, RegistryTargets, from_config
from host_tools.service.errors import ConfigError

FILES = [("atls/__init__.py", b""), ("atls/a.mpy", bytes(range(256)) * 12)]


class Clock:
    now = 0

    def now_ms(self):
        return self.now


class FakeSession:
    """What OtaApp uses of host_tools.service.sessions.Session."""

    def __init__(self, service, identity, hello):
        self.service, self.identity, self.device_hello = service, identity, hello
        self.out = []  # (payload, channel)

    def send(self, payload, channel=0):
        self.out.append((payload, channel))


class Inner:
    def __init__(self):
        self.seen = []

    def on_connect(self, s):
        self.seen.append("connect")

    def on_message(self, s, p):
        self.seen.append(p)

    def on_close(self, s, r):
        self.seen.append("close")


@pytest.fixture
def svc(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    (tmp_path / "bundles").mkdir()
    (tmp_path / "release.pub").write_text(pub.hex())
    reg = tmp_path / "devices.json"
    devices = {"d1": {"target_version": "1.1.0"}, "d2": {"target_version": "1.1.0", "ota": False}}
    reg.write_text(json.dumps({"devices": devices}))
    cfg = {"bundles": "bundles", "release_pub": "release.pub", "rate_fps": 500}
    inner = Inner()
    app = from_config(inner, cfg, tmp_path, reg)
    app.ota.store.add(bundle.build(FILES, "1.1.0", "0.0.0", "unix", key))
    return tmp_path, pub, app, inner


def pump(app, clock, sess, agent, ms=20000):
    """Both sides until the device wants its reset (or `ms` pass)."""
    for _ in range(ms // 10):
        clock.now += 10
        app.poll(clock.now)
        out, sess.out = sess.out, []
        for payload, ch in out:
            assert ch == 2
            reply = agent.on_message(payload)
            if reply is not None:
                app.on_channel_message(sess, 2, reply)
        if agent.reset_due(clock.now, idle=True):
            return True
    return False


def test_update_through_the_app_composition_switches_then_confirms(svc):
    d, pub, app, inner = svc
    root = str(d / "dev")
    clock = Clock()
    log = []
    agent = Agent(pub.hex(), "unix", lambda ev, **f: log.append(ev), 0, root=root)
    assert agent.updater is None  # nothing imported before an update message
    sess = FakeSession(clock, "d1", b"0.0.0")
    assert app.granted_channels(sess) == 0x04
    app.on_connect(sess)
    app.on_message(sess, b"reading")  # channel 0 goes to the application unchanged
    assert inner.seen == ["connect", b"reading"]
    assert pump(app, clock, sess, agent)
    assert app.status("d1")["state"] == "SWITCHED"
    assert boot.read_pointer(root)["state"] == "trial" and running_version(root) == "1.1.0"
    # the reboot: a version on trial resets after TRIAL_MS unless a handshake completes
    agent = Agent(pub.hex(), "unix", lambda ev, **f: log.append(ev), 1000, root=root)
    assert agent.trial_until == 1000 + boot.TRIAL_MS
    assert agent.reset_due(1000 + boot.TRIAL_MS, idle=True)
    agent.on_up()
    assert not agent.reset_due(10**9, idle=True)
    assert boot.read_pointer(root)["state"] == "ok" and "ota_confirmed" in log
    app.on_close(sess, "reboot")
    sess2 = FakeSession(clock, "d1", b"1.1.0")
    app.on_connect(sess2)
    app.poll(clock.now)
    assert sess2.out == [] and app.status("d1")["state"] == "DONE"


def test_channels_not_granted_are_refused_and_counted(svc):
    d, pub, app, inner = svc
    clock = Clock()
    s2 = FakeSession(clock, "d2", b"0.0.0")  # registry: "ota": false
    assert app.granted_channels(s2) == 0
    app.on_connect(s2)
    app.poll(0)
    assert s2.out == []  # nothing offered
    app.on_channel_message(s2, 2, b"\x81\x00\x00\x00\x00\x00")
    s1 = FakeSession(clock, "d1", b"0.0.0")
    app.on_channel_message(s1, 7, b"x")  # a reserved channel
    assert app.counters["channel_refused"] == 2
    assert app.status("d2") is None


def test_no_version_in_hello_no_offer_and_bad_messages_counted(svc):
    d, pub, app, inner = svc
    s = FakeSession(Clock(), "d1", b"")  # a firmware that does not report its version
    app.on_connect(s)
    app.poll(0)
    assert s.out == []
    s.device_hello = b"1.1.0"
    app.on_channel_message(s, 2, b"\x99")  # starts the transfer state, then a bad message
    assert app.counters["bad_messages"] == 1


def test_registry_targets_follow_the_file(tmp_path):
    reg = tmp_path / "devices.json"
    reg.write_text(json.dumps({"devices": {"d1": {"target_version": "1.0.0", "board": "esp32"}}}))
    t = RegistryTargets(reg)
    assert (t.target_version("d1"), t.device_board("d1"), t.ota_granted("d1")) == (
        "1.0.0",
        "esp32",
        True,
    )
    assert t.target_version("nobody") is None
    import os

    reg.write_text(json.dumps({"devices": {"d1": {"target_version": "1.1.0", "ota": False}}}))
    os.utime(reg, ns=(1, 1))
    assert t.target_version("d1") == "1.1.0" and not t.ota_granted("d1")


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"bundles": "b", "rate": 1},
        {"bundles": "b", "rate_fps": -1},
        {"bundles": "b", "release_pub": "nope"},
    ],
)
def test_bad_ota_config_is_a_config_error(tmp_path, cfg):
    with pytest.raises(ConfigError):
        from_config(Inner(), cfg, tmp_path, tmp_path / "devices.json")


def test_service_json_ota_through_the_real_loader(tmp_path):
    from host_tools.service.config import build_from_config

    (tmp_path / "devices.json").write_text(json.dumps({"devices": {"d1": {"psk": "00" * 32}}}))
    (tmp_path / "service.json").write_text(
        json.dumps({"registry": "devices.json", "ota": {"bundles": "bundles", "rate_fps": 5}})
    )
    service, _ = build_from_config(tmp_path / "service.json")
    assert isinstance(service.app, OtaApp)
    assert service.app.ota.registry.target_version("d1") is None


def test_device_config_release_key_is_checked(tmp_path):
    from atls.app import ConfigError as DeviceConfigError
    from atls.app import load_config

    (tmp_path / "b.json").write_text("{}")
    for key, ok in (("ab" * 32, True), ("ab" * 31, False), ("zz" * 32, False), (5, False)):
        dev = {"device_id": "d", "tls": {"psk": "00" * 32}, "ota": {"release_key": key}}
        (tmp_path / "d.json").write_text(json.dumps(dev))
        if ok:
            load_config(str(tmp_path / "b.json"), str(tmp_path / "d.json"))
        else:
            with pytest.raises(DeviceConfigError):
                load_config(str(tmp_path / "b.json"), str(tmp_path / "d.json"))


AGENT_MPY = """
import sys
from atls.ota.agent import Agent, reset
a = Agent("ab" * 32, "unix", None, 0, "%s")
print("lazy", "atls.ota.updater" not in sys.modules, a.trial_until)
print("reply", a.on_message(b"\\x99"), a.dropped, "atls.ota.updater" in sys.modules)
reset()
print("not reached")
"""


def test_agent_under_micropython_is_lazy_and_reset_exits_75(mpy, tmp_path):
    from atls.ota.agent import RESET_EXIT

    r = mpy.run(AGENT_MPY % (tmp_path / "ota"))
    assert r.returncode == RESET_EXIT == 75, (r.stdout, r.stderr)
    assert r.stdout.splitlines()[:2] == ["lazy True None", "reply None 1 True"]


def _pair(app):
    from host_tools.bench.pair import CCM8, Device, exchange, make_service, quiet_stderr

    with quiet_stderr():
        svc, tr = make_service("TLS_AES_128_CCM_8_SHA256", 1200, app=app)
        dev = Device(CCM8, 1200)
        dev.start(0)
        exchange(dev, svc, tr, ("10.0.0.1", 5684))
    assert dev.up
    return svc, tr, dev


def _core_grants():
    import inspect

    from host_tools.service import core

    return "granted_channels" in inspect.getsource(core)


@pytest.mark.parametrize("granted", [True, False])
def test_service_refuses_and_counts_channels_not_granted(svc, granted):
    """PROTOCOL.md §4: the service's HELLO grants channel 2 (registry "ota");
    a message on a channel not granted never reaches the application."""
    d, pub, app, inner = svc
    app.targets.ota_granted = lambda dev: granted
    service, tr, dev = _pair(app)
    with_core = _core_grants()
    if with_core:
        assert dev.link.peer_channels == (0x04 if granted else 0)
    dev.link.send(b"\x81\x00\x00\x00\x00\x00", 0, 2)  # a STATUS on channel 2
    dev.link.send(b"x", 0, 3)  # a reserved channel: never granted
    from host_tools.bench.pair import exchange

    exchange(dev, service, tr, ("10.0.0.1", 5684))
    refused = app.counters["channel_refused"] + service.counters.get("channel_refused", 0)
    assert refused == (1 if granted else 2)


def test_agent_survives_memory_errors_and_then_waits_for_the_next_boot(tmp_path):
    """A MemoryError in the update code must not end the application (its
    readings): found at 168K heap on the unix port (the supervisor restarted
    the app over and over, the heap too fragmented to come back)."""
    from atls.ota import agent as agent_mod

    class NoHeap:
        state = "RECEIVING"
        calls = 0

        def on_message(self, p):
            NoHeap.calls += 1
            raise MemoryError

    a = Agent("ab" * 32, "unix", None, 0, root=str(tmp_path / "ota"))
    for _ in range(agent_mod.MAX_NOMEM + 3):
        a.updater = a.updater or NoHeap()
        assert a.on_message(b"\x01" + bytes(18)) is None
    assert a.nomem == agent_mod.MAX_NOMEM and NoHeap.calls == agent_mod.MAX_NOMEM
