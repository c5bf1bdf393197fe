"""The MQTT bridge: the service application `mqtt` (docs/MQTT.md).

Topics under `prefix` (default "atls"):
    <prefix>/<device>/up       each device message, QoS 1 (MQTT 5: user property msg-id)
    <prefix>/<device>/down     subscribed: messages for the device
    <prefix>/<device>/status   retained {"state": "online"|"offline", "suite", ...}
    <prefix>/service/status    retained "online" (birth) / "offline" (last will)

Uplink, end to end: on_message returns a future that completes on the
broker's PUBACK; the service (hold_acks) acknowledges the message on the
link only then, so a message the device saw acknowledged is on the broker.
If the service dies between PUBACK and the link ACK, the device sends the
message again with the same id (link protocol v2: `session.last_msg_id`,
also the MQTT 5 user property msg-id); the bridge finds (device, msg_id) in
its state database and acknowledges without publishing again.  The table
keeps the last `dedupe` ids per device.

Downlink: a `down` message is written to the state database (SQLite) inside
the client's message callback, before the client sends PUBACK, then sent to
the device when it is online and deleted once the device acknowledged it on
the link.  A session that ends first hands its unacknowledged messages (and
their callbacks) to the device's next session (link protocol v2), which the
device de-duplicates by id; after a service restart the rows are sent
again with new ids (at least once).  Bounded
by `down_queue` per device: a full queue drops its oldest message (counted,
logged).  Unregistered device ids on `down` are refused (counted).

The paho client runs its network thread; everything it reports is handed
to the asyncio loop with call_soon_threadsafe (the downlink database write
excepted, which must happen before the PUBACK).
"""

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path

from host_tools.common import log
from host_tools.service.errors import ConfigError

__all__ = ["MqttApp", "MqttConfig", "DEFAULTS"]

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 1883,
    "prefix": "atls",
    "qos": 1,
    "client_id": "atls-service",
    "keepalive_s": 30,
    "protocol": 5,
    "username": None,
    "password": None,
    "password_file": None,
    "tls": None,
    "state": "mqtt-state.sqlite",
    "down_queue": 64,
    "dedupe": 1024,
}


class MqttConfig:
    """The service config's "mqtt" object, checked (ConfigError); paths
    relative to `base`."""

    def __init__(self, cfg, base="."):
        if not isinstance(cfg, dict) or set(cfg) - set(DEFAULTS):
            raise ConfigError("mqtt: unknown keys %s" % sorted(set(cfg or {}) - set(DEFAULTS)))
        c = dict(DEFAULTS, **cfg)
        base = Path(base)
        if c["qos"] not in (0, 1, 2):
            raise ConfigError("mqtt.qos must be 0, 1 or 2")
        if c["protocol"] not in (4, 5):
            raise ConfigError("mqtt.protocol must be 4 (3.1.1) or 5")
        prefix = c["prefix"]
        if (
            not isinstance(prefix, str)
            or not prefix
            or set(prefix) & set("+#")
            or prefix[-1] == "/"
        ):
            raise ConfigError("mqtt.prefix must be a topic without wildcards or trailing /")
        for k in ("port", "keepalive_s", "down_queue", "dedupe"):
            if not isinstance(c[k], int) or c[k] < 1:
                raise ConfigError("mqtt.%s must be a positive integer" % k)
        tls = c["tls"]
        if tls is not None:
            if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key", "insecure"}:
                raise ConfigError('mqtt.tls must be {"ca", "cert", "key", "insecure"}')
            tls = {k: (str(base / v) if k != "insecure" and v else v) for k, v in tls.items()}
        if c["password_file"]:
            try:
                c["password"] = (base / c["password_file"]).read_text().strip()
            except OSError as e:
                raise ConfigError("mqtt.password_file: %s" % e)
        self.__dict__.update(c)
        self.tls = tls
        self.state = str(base / c["state"])


class _State:
    """The bridge's SQLite file: seen uplink ids and the downlink queue.
    One per thread (sqlite3 connections are not shared)."""

    def __init__(self, path):
        new = not os.path.exists(path)
        if new:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS seen (device TEXT, msg_id INTEGER, at REAL,"
            " PRIMARY KEY (device, msg_id));"
            "CREATE TABLE IF NOT EXISTS down (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " device TEXT NOT NULL, payload BLOB NOT NULL, queued REAL NOT NULL);"
            "CREATE INDEX IF NOT EXISTS down_device ON down (device, id);"
        )

    def seen(self, device, msg_id):
        q = "SELECT 1 FROM seen WHERE device = ? AND msg_id = ?"
        return self.db.execute(q, (device, _signed(msg_id))).fetchone() is not None

    def mark(self, device, msg_id, keep):
        self.db.execute(
            "INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", (device, _signed(msg_id), time.time())
        )
        self.db.execute(
            "DELETE FROM seen WHERE device = ? AND rowid NOT IN (SELECT rowid FROM seen"
            " WHERE device = ? ORDER BY at DESC LIMIT ?)",
            (device, device, keep),
        )

    def enqueue(self, device, payload, limit):
        """Queue a downlink message; returns how many old ones were dropped."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO down (device, payload, queued) VALUES (?, ?, ?)",
            (device, payload, time.time()),
        )
        n = self.db.execute("SELECT COUNT(*) FROM down WHERE device = ?", (device,)).fetchone()[0]
        dropped = max(0, n - limit)
        if dropped:
            self.db.execute(
                "DELETE FROM down WHERE id IN (SELECT id FROM down WHERE device = ?"
                " ORDER BY id LIMIT ?)",
                (device, dropped),
            )
        self.db.execute("COMMIT")
        return dropped

    def queued(self, device):
        q = "SELECT id, payload FROM down WHERE device = ? ORDER BY id"
        return self.db.execute(q, (device,)).fetchall()

    def depth(self):
        return self.db.execute("SELECT COUNT(*) FROM down").fetchone()[0]

    def done(self, row_id):
        self.db.execute("DELETE FROM down WHERE id = ?", (row_id,))


class MqttApp:
    """The service application `mqtt`.  start() connects (serve() calls it
    once the loop runs); stop() publishes offline and disconnects."""

    hold_acks = True  # the service ACKs a device message once our future is done

    def __init__(self, cfg, base=".", registry=None):
        self.cfg = cfg if isinstance(cfg, MqttConfig) else MqttConfig(cfg or {}, base)
        self.registry = registry  # host_tools.service.registry.Registry: down for known ids
        self.loop = None
        self.client = None
        self.state = None
        self._pending = {}  # mid -> (future, t0, device, msg_id)
        self._publishing = {}  # (device, msg_id) -> future, until its PUBACK
        self._sessions = {}  # device id -> Session online
        self._sending = {}  # device id -> row ids its session carries (moved ones too)
        self._tls = threading.local()
        self.connected = asyncio.Event()
        self.publish_latency = deque(maxlen=10000)  # s, publish -> PUBACK (metrics drain it)
        self.counters = {
            "published": 0,
            "duplicates_suppressed": 0,
            "publish_failed": 0,
            "down_received": 0,
            "down_delivered": 0,
            "down_dropped_overflow": 0,
            "down_refused": 0,
            "connects": 0,
        }

    def topic(self, device, leaf):
        return "%s/%s/%s" % (self.cfg.prefix, device, leaf)

    # -- connection -----------------------------------------------------------------
    async def start(self):
        import paho.mqtt.client as mqtt

        c = self.cfg
        self.loop = asyncio.get_running_loop()
        self.state = _State(c.state)
        proto = mqtt.MQTTv5 if c.protocol == 5 else mqtt.MQTTv311
        kw = {} if c.protocol == 5 else {"clean_session": False}
        cl = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=proto, **kw
        )
        if c.username is not None:
            cl.username_pw_set(c.username, c.password)
        if c.tls is not None:
            cl.tls_set(
                ca_certs=c.tls.get("ca"), certfile=c.tls.get("cert"), keyfile=c.tls.get("key")
            )
            if c.tls.get("insecure"):
                cl.tls_insecure_set(True)
        status = self.topic("service", "status")
        cl.will_set(status, b"offline", qos=1, retain=True)
        cl.max_inflight_messages_set(1000)
        cl.max_queued_messages_set(0)  # unbounded here: the link's window bounds it
        cl.reconnect_delay_set(1, 10)
        cl.on_connect = self._on_connect
        cl.on_publish = self._on_publish
        cl.on_message = self._on_down
        cl.on_subscribe = self._on_subscribe
        self.client = cl
        if c.protocol == 5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0xFFFFFFFF  # keep our subscription while away
            cl.connect_async(c.host, c.port, c.keepalive_s, clean_start=False, properties=props)
        else:
            cl.connect_async(c.host, c.port, c.keepalive_s)
        cl.loop_start()

    async def stop(self):
        cl = self.client
        if cl is None:
            return
        for dev in list(self._sessions):
            self._status(dev, {"state": "offline"})
        if cl.is_connected():  # a clean stop: offline now, not when the will fires
            info = cl.publish(self.topic("service", "status"), b"offline", qos=1, retain=True)
            try:
                await asyncio.wait_for(self.loop.run_in_executor(None, info.wait_for_publish, 2), 3)
            except Exception:
                pass
        cl.disconnect()
        cl.loop_stop()
        self.client = None

    def _on_connect(self, client, userdata, flags, reason, properties=None):  # paho thread
        if reason.is_failure:
            log("mqtt_connect_failed", reason=str(reason))
            return
        client.publish(self.topic("service", "status"), b"online", qos=1, retain=True)
        client.subscribe(self.topic("+", "down"), qos=1)

    def _on_subscribe(self, client, userdata, mid, reasons, properties=None):  # paho thread
        self.loop.call_soon_threadsafe(self._connected)

    def _connected(self):  # connected and subscribed
        self.counters["connects"] += 1
        self.connected.set()
        log("mqtt_connected", host=self.cfg.host, port=self.cfg.port)

    # -- uplink ---------------------------------------------------------------------
    def on_connect(self, session):
        dev = session.identity
        self._sessions[dev] = session
        # rows moved to this session from the one it replaces are on their way
        self._sending[dev] = {cb.row for cb in session.callbacks() if isinstance(cb, _DownAck)}
        info = {
            "state": "online",
            "since": time.time(),
            "suite": session.suite,
            "handshake_ms": session.handshake_ms,
        }
        reg = self.registry
        if reg is not None:
            reg.touch(dev)
            fw = [d.get("firmware") for d in reg.devices() if d["id"] == dev]
            info["firmware"] = fw[0] if fw else None
        self._status(dev, info)
        self._flush_down(dev)

    def on_close(self, session, reason):
        dev = session.identity
        if dev is not None and self._sessions.get(dev) is session:
            del self._sessions[dev]
            self._sending.pop(dev, None)
            self._status(dev, {"state": "offline", "since": time.time(), "reason": reason})

    def _status(self, dev, info):
        if self.client is not None:
            body = json.dumps(info, sort_keys=True).encode()
            self.client.publish(self.topic(dev, "status"), body, qos=1, retain=True)

    def on_message(self, session, payload):
        """Publish to <prefix>/<device>/up; the returned future completes on
        PUBACK (None: nothing to wait for, a duplicate of a published id)."""
        dev = session.identity
        msg_id = session.last_msg_id
        if msg_id is not None:
            if self.state.seen(dev, msg_id):
                self.counters["duplicates_suppressed"] += 1
                return None
            prev = self._publishing.get((dev, msg_id))
            if prev is not None:  # sent again before the first PUBACK: wait for that one
                self.counters["duplicates_suppressed"] += 1
                return prev
        fut = self.loop.create_future()
        props = None
        if msg_id is not None and self.cfg.protocol == 5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("msg-id", str(msg_id))
        info = self.client.publish(
            self.topic(dev, "up"), bytes(payload), qos=self.cfg.qos, properties=props
        )
        if info.rc not in (0, 4):  # 4: not connected yet, queued until the client is
            self.counters["publish_failed"] += 1
            fut.set_exception(ConnectionError("mqtt publish failed: rc %d" % info.rc))
            return fut
        if self.cfg.qos == 0:
            fut.set_result(None)
            return fut
        self._pending[info.mid] = (fut, time.monotonic(), dev, msg_id)
        if msg_id is not None:
            self._publishing[(dev, msg_id)] = fut
        return fut

    def _on_publish(self, client, userdata, mid, reason=None, properties=None):  # paho thread
        self.loop.call_soon_threadsafe(self._puback, mid)

    def _puback(self, mid):
        entry = self._pending.pop(mid, None)
        if entry is None:  # a status or birth message
            return
        fut, t0, dev, msg_id = entry
        self.publish_latency.append(time.monotonic() - t0)
        self.counters["published"] += 1
        if msg_id is not None:
            self.state.mark(dev, msg_id, self.cfg.dedupe)
            self._publishing.pop((dev, msg_id), None)
        self.on_puback(dev, msg_id)
        if not fut.done():
            fut.set_result(None)

    def is_duplicate(self, device, msg_id):
        """True when on_message would not publish `msg_id` again (published
        before, or its publish awaits its PUBACK)."""
        if msg_id is None:
            return False
        return (device, msg_id) in self._publishing or self.state.seen(device, msg_id)

    def on_puback(self, device, msg_id):
        """Called after the broker acknowledged a device message, before the
        service acknowledges it on the link (a seam for tests)."""

    # -- downlink -------------------------------------------------------------------
    def _on_down(self, client, userdata, msg):  # paho thread: durable before PUBACK
        parts = msg.topic.split("/")
        dev = parts[-2] if len(parts) >= 3 else ""
        reg = self.registry
        if reg is not None and not _registered(reg, dev):
            self.loop.call_soon_threadsafe(self._count, "down_refused", 1)
            return
        st = getattr(self._tls, "state", None)
        if st is None:
            st = self._tls.state = _State(self.cfg.state)
        dropped = st.enqueue(dev, bytes(msg.payload), self.cfg.down_queue)
        self.loop.call_soon_threadsafe(self._queued, dev, dropped)

    def _count(self, name, n):
        self.counters[name] += n

    def _queued(self, dev, dropped):
        self.counters["down_received"] += 1
        if dropped:
            self.counters["down_dropped_overflow"] += dropped
            log("mqtt_down_overflow", device=dev, dropped=dropped)
        self._flush_down(dev)

    def _flush_down(self, dev):
        sess = self._sessions.get(dev)
        if sess is None:
            return
        sending = self._sending[dev]
        for row_id, payload in self.state.queued(dev):
            if row_id in sending:
                continue
            try:
                sess.send(payload, on_delivered=_DownAck(self, dev, row_id))
            except Exception:  # the session's queue is full: the rest waits in the database
                return
            sending.add(row_id)

    def _delivered(self, dev, row_id):
        self.state.done(row_id)
        self.counters["down_delivered"] += 1
        s = self._sending.get(dev)
        if s is not None:
            s.discard(row_id)
            self._flush_down(dev)

    def queue_depths(self):
        """{"down": rows waiting, "publishing": publishes awaiting PUBACK}."""
        return {"down": self.state.depth() if self.state else 0, "publishing": len(self._pending)}


def _signed(msg_id):
    """A 64-bit message id (boot << 32 | n) as SQLite's signed INTEGER."""
    return msg_id - (1 << 64) if msg_id >= 1 << 63 else msg_id


class _DownAck:
    """on_delivered of a downlink row: the device acknowledged it."""

    def __init__(self, app, dev, row):
        self.app, self.dev, self.row = app, dev, row

    def __call__(self):
        self.app._delivered(self.dev, self.row)


def _registered(reg, dev):
    """dev has a credential in the loaded registry (safe from the paho thread:
    it reads the tables reload() swaps, never the database)."""
    return dev.encode() in reg.psks or dev in reg.certs.values() or dev in reg.spkis.values()
