"""A local Mosquitto broker (the system package) for tests, the simulator
(`make sim MQTT=1`) and the bench, plus a recording subscriber.

`Broker(tmp)` starts `mosquitto` on a free loopback port with a config of
its own (anonymous, no persistence) and stop() ends it; `Recorder` is a paho
client that records every message on the topics it subscribes and can echo
`<prefix>/<dev>/up` to `<prefix>/<dev>/down`.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from host_tools.toolchain import free_port

__all__ = ["Broker", "Recorder", "mosquitto_binary"]


def mosquitto_binary():
    """Path of mosquitto (Debian puts it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class Broker:
    def __init__(self, tmp, port=None, users=None, tls=None):
        """users: {name: password}: only they may connect (mosquitto_passwd);
        tls: (cert PEM path, key PEM path): the listener speaks TLS."""
        exe = mosquitto_binary()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (tools/system-deps.sh install)")
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(socket.SOCK_STREAM)
        conf = self.tmp / "mosquitto.conf"
        auth = "allow_anonymous true\n"
        if users:
            pw = self.tmp / "passwd"
            pw.write_text("")
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for name, password in users.items():
                subprocess.run([tool, "-b", str(pw), name, password], check=True)
            auth = "allow_anonymous false\npassword_file %s\n" % pw
            if os.geteuid() == 0:  # else mosquitto drops to its user and cannot read pw
                auth += "user root\n"
        if tls:
            auth += "certfile %s\nkeyfile %s\n" % tuple(tls)
            if os.geteuid() == 0 and "user root" not in auth:
                auth += "user root\n"
        conf.write_text(
            "listener %d 127.0.0.1\n%spersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 100000\n" % (self.port, auth)
        )
        self.log = open(self.tmp / "mosquitto.log", "w")
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError("mosquitto did not start: %s" % self.logs())
                time.sleep(0.05)

    def logs(self):
        return (self.tmp / "mosquitto.log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Recorder:
    """Subscribes `topics` (QoS 1) and records (topic, payload, retain,
    msg-id user property) in arrival order; echo=True republishes each
    `…/up` payload to the device's `…/down`."""

    def __init__(self, port, topics, echo=False, client_id=None):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.stamps = []  # (down topic, time) of each echo published
        self.echo = echo
        self.lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            protocol=mqtt.MQTTv5,
        )
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a, **k: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber did not connect")

    def _on_connect(self, client, userdata, flags, reason, properties=None):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        mid = None
        props = getattr(msg, "properties", None)
        for k, v in getattr(props, "UserProperty", None) or []:
            if k == "msg-id":
                mid = v
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), mid))
        if self.echo and msg.topic.endswith("/up"):
            down = msg.topic[:-3] + "/down"
            client.publish(down, msg.payload, qos=1)
            with self.lock:
                self.stamps.append((down, time.time()))

    def on(self, topic):
        with self.lock:
            return [m[1] for m in self.messages if m[0] == topic]

    def wait(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return False

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()
