"""Section `mqtt` (issue 18): device messages through the service to a real
Mosquitto broker with the MQTT bridge (host_tools.service.mqtt_app).

  messages_per_s              device -> service -> broker, acknowledged back to
                              the device (PUBACK before the link ACK), window 32
  ack_latency_ms_p50/p95      one message at a time: device send -> the device
                              sees the ACK, with the bridge
  baseline_ack_ms_p50/p95     the same with an application that keeps nothing
                              (the ACK goes out at delivery)
  added_ms_p50/p95            what the PUBACK-before-ACK rule adds

In process: the firmware client Link + TLS client against the service's
Service object (bench.pair), the broker a real process on loopback.
"""

import asyncio
import statistics
import tempfile
import time

from host_tools.bench.pair import CCM8, Device, exchange, make_service, quiet_stderr

NOTE = (
    "in-process device (firmware TLS client + Link) -> Service -> MQTT bridge -> "
    "local Mosquitto (QoS 1, loopback); latency = device send to device-side ACK"
)
ADDR = ("10.0.0.1", 5684)


class _Keep:
    """The baseline application: takes a message and keeps nothing."""

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        return None

    def on_close(self, session, reason):
        pass


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


async def _connect(app):
    from atls.link import Link, LinkConfig

    svc, tr = make_service("TLS_AES_128_CCM_8_SHA256", 1200, app=app)
    dev = Device(CCM8, 1200)
    dev.link = Link("client", LinkConfig(mtu=1200, window=32, queue=64))
    dev.start(0)
    exchange(dev, svc, tr, ADDR)
    if not dev.up:
        raise RuntimeError("handshake did not complete")
    return svc, tr, dev


async def _until(dev, svc, tr, n, deadline_s=30):
    end = time.monotonic() + deadline_s
    while dev.link.counters["messages_out"] < n:
        exchange(dev, svc, tr, ADDR)
        if dev.link.counters["messages_out"] >= n:
            return
        if time.monotonic() > end:
            raise RuntimeError("messages not acknowledged")
        await asyncio.sleep(0.0001)


async def _latencies(app, n):
    svc, tr, dev = await _connect(app)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        dev.link.send(b"reading %d" % i, 0)
        await _until(dev, svc, tr, i + 1)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _throughput(app, m):
    from atls.link import QueueFull

    svc, tr, dev = await _connect(app)
    sent = 0
    t0 = time.perf_counter()
    end = time.monotonic() + 60
    while dev.link.counters["messages_out"] < m:
        while sent < m:
            try:
                dev.link.send(b"reading %d" % sent, 0)
            except QueueFull:
                break
            sent += 1
        exchange(dev, svc, tr, ADDR)
        if time.monotonic() > end:
            raise RuntimeError("messages not acknowledged")
        await asyncio.sleep(0.0001)
    return m / (time.perf_counter() - t0)


def mqtt(quick=False):
    from host_tools.service.mqtt_app import MqttApp
    from host_tools.service.mqtt_broker import Broker, mosquitto_binary

    if mosquitto_binary() is None:
        return {"skipped_no_mosquitto": 1}
    n, m = (20, 200) if quick else (200, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(tmp + "/broker")
        try:

            async def main():
                app = MqttApp({"port": broker.port, "prefix": "bench", "state": tmp + "/st.sqlite"})
                await app.start()
                await asyncio.wait_for(app.connected.wait(), 10)
                try:
                    base = await _latencies(_Keep(), n)
                    held = await _latencies(app, n)
                    rate = await _throughput(app, m)
                finally:
                    await app.stop()
                return base, held, rate

            with quiet_stderr():
                base, held, rate = asyncio.run(main())
        finally:
            broker.stop()
    res = {"messages_per_s": round(rate, 1)}
    for name, xs in (("ack_latency_ms", held), ("baseline_ack_ms", base)):
        res[name + "_p50"] = round(statistics.median(xs), 3)
        res[name + "_p95"] = round(_pct(xs, 95), 3)
    res["added_ms_p50"] = round(max(0.0, res["ack_latency_ms_p50"] - res["baseline_ack_ms_p50"]), 3)
    res["added_ms_p95"] = round(max(0.0, res["ack_latency_ms_p95"] - res["baseline_ack_ms_p95"]), 3)
    res["messages"] = n
    return res
