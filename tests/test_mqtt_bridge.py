"""The MQTT bridge (host_tools.service.mqtt_app, docs/MQTT.md) against a real
Mosquitto broker started by a fixture on a free port: topics, retained
status, birth and last will, PUBACK before the link ACK, duplicate
suppression across a crash, the durable downlink queue, end to end with a
MicroPython device."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from e2e import ServiceProc, run_device, start_device

from host_tools.service.errors import ConfigError
from host_tools.service.mqtt_app import MqttApp, MqttConfig
from host_tools.service.mqtt_broker import Broker, Recorder, mosquitto_binary

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto missing: tools/system-deps.sh install"
)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


class FakeSession:
    """What the bridge uses of host_tools.service.core.Session."""

    def __init__(self, identity):
        self.identity = identity
        self.suite = "TLS_AES_128_CCM_8_SHA256"
        self.handshake_ms = 12
        self.sent = []  # [payload, on_delivered]
        self.last_msg_id = None  # the link's message id (protocol v2)

    def send(self, payload, on_delivered=None):
        self.sent.append([payload, on_delivered])

    def callbacks(self):
        return [cb for _, cb in self.sent]


def _up(app, s, payload, msg_id):
    """The service delivers the device's message `msg_id` to the bridge."""
    s.last_msg_id = msg_id
    return app.on_message(s, payload)


def _app(tmp_path, broker, **kw):
    cfg = dict({"port": broker.port, "prefix": "t", "state": str(tmp_path / "state.sqlite")}, **kw)
    return MqttApp(cfg)


async def _started(app):
    await app.start()
    await asyncio.wait_for(app.connected.wait(), 10)


def test_config_is_checked(tmp_path):
    with pytest.raises(ConfigError):
        MqttConfig({"prefix": "a/#"})
    with pytest.raises(ConfigError):
        MqttConfig({"qos": 3})
    with pytest.raises(ConfigError):
        MqttConfig({"bogus": 1})
    (tmp_path / "pw").write_text("secret\n")
    c = MqttConfig({"password_file": "pw", "username": "svc", "tls": {"ca": "ca.pem"}}, tmp_path)
    assert c.password == "secret" and c.tls["ca"] == str(tmp_path / "ca.pem")


def test_up_waits_for_puback_status_and_birth_and_will(tmp_path, broker):
    rec = Recorder(broker.port, ["t/#"])

    async def main():
        app = _app(tmp_path, broker)
        await _started(app)
        s = FakeSession("dev-1")
        app.on_connect(s)
        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker cannot PUBACK
        try:
            fut = app.on_message(s, b"reading-1")
            await asyncio.sleep(0.5)
            assert not fut.done()  # no PUBACK: the service holds the link ACK
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        await asyncio.wait_for(fut, 10)
        assert app.counters["published"] == 1
        # the same message id again while its first publish waits: published once
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            a = _up(app, s, b"reading-2", 2)
            b = _up(app, s, b"reading-2", 2)  # a new session sent it again
            assert b is a and not a.done()
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        await asyncio.wait_for(a, 10)
        assert _up(app, s, b"reading-2", 2) is None  # after PUBACK: remembered
        assert app.counters["published"] == 2 and app.counters["duplicates_suppressed"] == 2
        app.on_close(s, "idle")
        await app.stop()

    asyncio.run(main())
    assert rec.wait(lambda: len(rec.on("t/dev-1/status")) == 2)
    assert rec.on("t/dev-1/up") == [b"reading-1", b"reading-2"]
    online, offline = [json.loads(p) for p in rec.on("t/dev-1/status")]
    assert online["state"] == "online" and online["suite"] == "TLS_AES_128_CCM_8_SHA256"
    assert offline["state"] == "offline" and offline["reason"] == "idle"
    assert rec.on("t/service/status") == [b"online", b"offline"]
    rec.stop()
    # retained: a late subscriber sees the last status at once
    late = Recorder(broker.port, ["t/+/status"])  # dev-1 and service
    assert late.wait(lambda: len(late.messages) == 2)
    assert all(m[2] for m in late.messages)
    late.stop()


def test_full_64_bit_message_ids(tmp_path, broker):
    """v2 ids are boot << 32 | n with a random 32-bit boot: ids of 2**63 and
    more are remembered like the others (SQLite INTEGER is signed)."""
    rec = Recorder(broker.port, ["t/dev-1/up"])

    async def main():
        app = _app(tmp_path, broker)
        await _started(app)
        s = FakeSession("dev-1")
        app.on_connect(s)
        big = 0xFFFFFFFF00000001
        await asyncio.wait_for(_up(app, s, b"big", big), 10)
        assert _up(app, s, b"big", big) is None  # published once, remembered
        assert _up(app, s, b"small", 1) is not None
        await app.stop()

    asyncio.run(main())
    assert rec.wait(lambda: len(rec.on("t/dev-1/up")) == 2)
    assert [m[3] for m in rec.messages] == [str(0xFFFFFFFF00000001), "1"]
    rec.stop()


_CRASHING = textwrap.dedent(
    """
    import asyncio, os, sys, json
    from host_tools.service.mqtt_app import MqttApp
    cfg, ids, die_at = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])

    class S:
        identity, suite, handshake_ms, last_msg_id = "dev-k", "x", 1, None
        def send(self, payload, on_delivered=None): pass

    class Crashing(MqttApp):
        def on_puback(self, device, msg_id):
            if msg_id == die_at:  # PUBACK came, the link ACK never goes out
                os._exit(9)

    async def main():
        app = Crashing(cfg)
        await app.start()
        await asyncio.wait_for(app.connected.wait(), 10)
        s = S()
        for i in ids:
            s.last_msg_id = i
            r = app.on_message(s, b"m%d" % i)
            if r is not None:
                await r
            print("acked", i, flush=True)
        await app.stop()

    asyncio.run(main())
    """
)


def test_kill_between_puback_and_ack_no_loss_no_duplicate(tmp_path, broker):
    """The service dies after the broker's PUBACK of message 2 and before
    the device saw its ACK; the device sends 2 again to the restarted
    service (same message id): on the topic 1, 2, 3 exactly once."""
    rec = Recorder(broker.port, ["t/dev-k/up"])
    cfg = json.dumps({"port": broker.port, "prefix": "t", "state": str(tmp_path / "st.sqlite")})

    def run(ids, die_at):
        return subprocess.run(
            [sys.executable, "-c", _CRASHING, cfg, json.dumps(ids), str(die_at)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run([1, 2, 3], 2)
    assert first.returncode == 9, first.stderr
    assert first.stdout.split() == ["acked", "1"]  # 2 was never acknowledged to the device
    second = run([2, 3], 0)  # the device's retransmission, then the next message
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["acked", "2", "acked", "3"]
    assert rec.wait(lambda: len(rec.on("t/dev-k/up")) >= 3)
    assert not rec.wait(lambda: len(rec.on("t/dev-k/up")) > 3, timeout=0.5)
    assert rec.on("t/dev-k/up") == [b"m1", b"m2", b"m3"]
    assert [m[3] for m in rec.messages] == ["1", "2", "3"]  # MQTT 5 user property msg-id
    rec.stop()


def test_down_is_durable_bounded_and_acknowledged_by_the_device(tmp_path, broker):
    from host_tools.service.registry import Registry

    (tmp_path / "devices.json").write_text(
        json.dumps({"devices": {"dev-1": {"psk": "00" * 32}, "dev-2": {"psk": "01" * 32}}})
    )
    reg = Registry(tmp_path / "devices.json")
    pub = Recorder(broker.port, ["nothing"])

    async def main():
        app = _app(tmp_path, broker, down_queue=3)
        app.registry = reg
        await _started(app)
        for i in range(5):  # dev-1 offline: queued, the oldest two dropped
            pub.client.publish("t/dev-1/down", b"d%d" % i, qos=1).wait_for_publish(5)
        pub.client.publish("t/stranger/down", b"x", qos=1).wait_for_publish(5)
        for _ in range(200):
            if app.counters["down_received"] == 5 and app.counters["down_refused"] == 1:
                break
            await asyncio.sleep(0.02)
        assert app.counters["down_dropped_overflow"] == 2
        assert app.queue_depths()["down"] == 3
        await app.stop()
        # a restarted bridge still has them; the device gets them once online
        app = _app(tmp_path, broker, down_queue=3)
        await _started(app)
        s = FakeSession("dev-1")
        app.on_connect(s)
        assert [p for p, _ in s.sent] == [b"d2", b"d3", b"d4"]
        s.sent[0][1]()  # the device acknowledged d2
        assert app.queue_depths()["down"] == 2
        app.on_close(s, "gone")  # d3, d4 not acknowledged: sent again next session
        s2 = FakeSession("dev-1")
        app.on_connect(s2)
        assert [p for p, _ in s2.sent] == [b"d3", b"d4"]
        # link protocol v2: a replacing session takes d3 over with its callback
        app.on_close(s2, "replaced by a new session")
        s3 = FakeSession("dev-1")
        s3.sent = [s2.sent[0]]  # moved by the service, not sent again by the bridge
        app.on_connect(s3)
        assert [p for p, _ in s3.sent] == [b"d3", b"d4"]
        s3.sent[0][1]()  # the device acknowledged d3 in the new session
        assert app.queue_depths()["down"] == 1
        await app.stop()

    asyncio.run(main())
    pub.stop()


def test_device_end_to_end_through_the_broker(mpyc, tmp_path, broker):
    """A MicroPython device sends 20 messages; each is on its up topic once;
    a subscriber echoes them to down and the device receives all 20."""
    psk = os.urandom(32)
    echo = Recorder(broker.port, ["t/#"], echo=True)
    mqtt = {"port": broker.port, "prefix": "t", "state": "mqtt.sqlite"}
    svc = ServiceProc(tmp_path, devices={"dev-e": psk}, extra={"app": "mqtt", "mqtt": mqtt})
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": svc.addr[0],
                "port": svc.addr[1],
                "psk": psk.hex(),
                "psk_identity": "dev-e",
                "count": 20,
            },
        )
        assert s["ok"] and s["received"] == 20 and s["in_order"] and s["duplicates"] == 0, s
        ups = echo.on("t/dev-e/up")
        assert len(ups) == 20 and len(set(ups)) == 20
        status = json.loads(echo.on("t/dev-e/status")[0])
        assert status["state"] == "online"
    finally:
        svc.stop()
        echo.stop()
    assert psk.hex() not in svc.logs()


def test_broker_down_at_start_messages_wait_then_go(tmp_path):
    """The broker is not there yet: a device message is held (no PUBACK, no
    link ACK) and published once the broker comes up."""
    import socket

    from host_tools.toolchain import free_port

    port = free_port(socket.SOCK_STREAM)

    async def main():
        app = MqttApp({"port": port, "prefix": "t", "state": str(tmp_path / "s.sqlite")})
        await app.start()
        s = FakeSession("dev-1")
        fut = _up(app, s, b"early", 7)
        await asyncio.sleep(0.3)
        assert not fut.done()
        broker = await asyncio.get_running_loop().run_in_executor(
            None, lambda: Broker(tmp_path / "late", port=port)
        )
        try:
            await asyncio.wait_for(fut, 20)  # the client reconnects (backoff up to 10 s)
            assert app.counters["published"] == 1  # the broker's PUBACK completed it
            await app.stop()
        finally:
            broker.stop()

    asyncio.run(main())


def test_broker_credentials_from_password_file(tmp_path):
    """username + password_file (config) against a broker that refuses
    anonymous clients."""
    broker = Broker(tmp_path / "auth", users={"svc": "s3cret"})
    (tmp_path / "pw").write_text("s3cret\n")
    try:

        async def main(password_file):
            cfg = {"port": broker.port, "username": "svc", "password_file": password_file}
            app = MqttApp(dict(cfg, state="st.sqlite"), tmp_path)
            await app.start()
            try:
                await asyncio.wait_for(app.connected.wait(), 1.5)
                return True
            except asyncio.TimeoutError:
                return False
            finally:
                await app.stop()

        assert asyncio.run(main("pw"))
        (tmp_path / "bad").write_text("wrong\n")
        assert not asyncio.run(main("bad"))
    finally:
        broker.stop()


def test_service_killed_between_puback_and_ack_end_to_end(mpyc, tmp_path, broker, monkeypatch):
    """The real service process (bridge: sim.mqtt_check's app) exits at the
    third PUBACK, before the link ACK; a new service on the same port takes
    over.  The MicroPython device re-handshakes and sends the unacknowledged
    message again: every message is on the up topic exactly once."""
    import socket

    from host_tools.toolchain import free_port

    psk = os.urandom(32)
    listen = "127.0.0.1:%d" % free_port(socket.SOCK_DGRAM)
    cfg = {"port": broker.port, "prefix": "t", "state": str(tmp_path / "st.sqlite")}
    monkeypatch.setenv("ATLS_SIM_RECORD", str(tmp_path / "deliveries.jsonl"))
    monkeypatch.setenv("ATLS_SIM_MQTT", json.dumps(dict(cfg, die_after_puback=3)))
    extra = {"listen": listen, "app": "sim.mqtt_check:MqttRecordingApp"}
    echo = Recorder(broker.port, ["t/dev-k/up"], echo=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ServiceProc(tmp_path / "a", devices={"dev-k": psk}, extra=extra)
    second = dev = None
    try:
        dcfg = {"host": first.addr[0], "port": first.addr[1], "psk": psk.hex()}
        dcfg.update(psk_identity="dev-k", count=6, timeout_ms=40000, stop_on_failure=False)
        dev = start_device(mpyc, tmp_path, dcfg)
        first.proc.wait(30)
        assert first.proc.returncode == 9, first.logs()[-2000:]
        monkeypatch.setenv("ATLS_SIM_MQTT", json.dumps(cfg))
        # the same state (service-state/ beside the registry): its RESET key and marks
        extra["registry"] = str(tmp_path / "a" / "devices.json")
        second = ServiceProc(tmp_path / "b", devices={"dev-k": psk}, extra=extra)
        out, err = dev.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
        dev = None
    finally:
        if dev is not None:
            dev.kill()
        first.stop()
        if second is not None:
            second.stop()
        echo.stop()
    # up: every message acknowledged to the device, each on the topic exactly once
    assert summary["delivered"] == 6 and summary["ups"] >= 2, json.dumps(summary)
    assert echo.on("t/dev-k/up") == [b"msg-%05d" % i for i in range(6)]
    # down is at least once (docs/MQTT.md): echoes the device got from the dead
    # service before that service saw the device's ACK (at most a link window,
    # 4) are sent again by the new one
    assert summary["received"] >= 6 and summary["duplicates"] <= 4, json.dumps(summary)


def test_broker_over_tls(tmp_path):
    """tls.ca (config): the bridge checks the broker's certificate."""
    from host_tools import pki

    ca = pki.make_ca("MQTT test CA")
    srv = pki.make_cert("127.0.0.1", issuer=ca, san=["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(pki.pem(ca.cert))
    (tmp_path / "b.pem").write_bytes(pki.pem(srv.cert))
    (tmp_path / "b.key").write_bytes(pki.pem(srv.key))
    broker = Broker(tmp_path / "tls", tls=(tmp_path / "b.pem", tmp_path / "b.key"))
    try:

        async def main():
            cfg = {"port": broker.port, "tls": {"ca": "ca.pem"}, "state": "st.sqlite"}
            app = MqttApp(cfg, tmp_path)
            await app.start()
            try:
                await asyncio.wait_for(app.connected.wait(), 10)
                fut = app.on_message(FakeSession("dev-t"), b"over tls")
                await asyncio.wait_for(fut, 10)
            finally:
                await app.stop()
            return app.counters["published"]

        assert asyncio.run(main()) == 1
    finally:
        broker.stop()
