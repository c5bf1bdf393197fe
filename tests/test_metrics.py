"""/metrics of the service (prometheus_client text format) parses with the
Prometheus text parser and its counters move during a run."""

import json
import os
import urllib.request

import pytest
from e2e import ServiceProc, run_device
from prometheus_client.parser import text_string_to_metric_families


def scrape(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_service_metrics_move_during_a_run(mpyc, tmp_path):
    psk = os.urandom(32)
    svc = ServiceProc(tmp_path, devices={"dev-m": psk}, extra={"metrics_listen": "127.0.0.1:0"})
    try:
        addr = json.loads((tmp_path / "service.ready.json").read_text())["metrics"]
        before = scrape(addr)
        assert before[("atls_handshakes_total", (("result", "ok"),))] == 0
        cfg = {"host": svc.addr[0], "port": svc.addr[1], "psk": psk.hex()}
        cfg.update(psk_identity="dev-m", count=5)
        assert run_device(mpyc, tmp_path, cfg)["ok"]
        after = scrape(addr)
    finally:
        svc.stop()
    assert after[("atls_handshakes_total", (("result", "ok"),))] == 1
    assert after[("atls_messages_total", (("direction", "in"),))] == 5
    assert after[("atls_datagrams_total", (("direction", "in"),))] > before.get(
        ("atls_datagrams_total", (("direction", "in"),)), 0
    )
    assert after[("atls_sessions_total", ())] == 1
    assert after[("atls_handshake_duration_seconds_count", ())] == 1
    assert ("atls_queue_depth", (("queue", "app_backlog"),)) in after


def test_gateway_metrics_parse_and_move(tmp_path):
    """The gateway's /metrics (metrics_listen in gateway.json): Gateway.stats()
    as Prometheus families, moving as packets pass."""
    import asyncio
    import socket

    import aiohttp

    from host_tools.gateway import Config, Gateway
    from host_tools.gateway.metrics import serve_metrics

    svc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    svc.bind(("127.0.0.1", 0))
    cfg = tmp_path / "gateway.json"
    cfg.write_text(
        json.dumps(
            {
                "services": {"default": "127.0.0.1:%d" % svc.getsockname()[1]},
                "state_dir": "gw",
                "metrics_listen": "127.0.0.1:0",
            }
        )
    )
    pkt = bytes([0xA8, 0, 0, 0, 0]) + b"hello"  # HS (link protocol v2)

    def parse(text):
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    async def go():
        config = Config(cfg)
        assert config.metrics_listen == ("127.0.0.1", 0)
        gw = Gateway(config)
        runner, addr = await serve_metrics(gw, config.metrics_listen)
        try:
            async with aiohttp.ClientSession() as http:
                url = "http://%s/metrics" % addr
                before = parse(await (await http.get(url)).text())
                gw.upstream(("udp", ("10.0.0.1", 1)), b"\x42plain text")
                gw.upstream(("udp", ("10.0.0.1", 1)), pkt)
                after = parse(await (await http.get(url)).text())
        finally:
            await runner.cleanup()
            gw.close_flows()
        return before, after

    before, after = asyncio.run(go())
    svc.close()
    assert before[("atls_gateway_up_packets_total", ())] == 0
    assert after[("atls_gateway_up_packets_total", ())] == 1
    assert after[("atls_gateway_drops_total", (("key", "not_atls"),))] == 1
    assert after[("atls_gateway_flows", ())] == 1


def test_fleet_tracker_passes_channel_messages_through():
    """Under metrics_listen the Fleet wraps the app: an app's firmware-update
    channel (link protocol v2, on_channel_message) still reaches it."""
    from host_tools.service.metrics import Fleet

    class App:
        got = []

        def on_channel_message(self, session, channel, payload):
            self.got.append((channel, payload))

    f = Fleet(App())
    assert hasattr(f, "on_channel_message") and not hasattr(Fleet(object()), "on_channel_message")
    f.on_channel_message(None, 2, b"chunk")
    assert App.got == [(2, b"chunk")]


def test_handshake_failures_by_reason_and_udp_bytes():
    """Counters behind atls_handshake_failures_total{reason} and atls_bytes_total."""
    from prometheus_client.parser import text_string_to_metric_families

    from atls.errors import AlertError
    from host_tools.bench.pair import CCM8, Device, exchange, make_service, quiet_stderr
    from host_tools.service.metrics import ServiceMetrics

    with quiet_stderr():
        svc, tr = make_service("TLS_AES_128_CCM_8_SHA256", 1200)
        dev = Device(CCM8, 1200, identity=b"nobody")  # not registered: the binder fails
        dev.start(0)
        with pytest.raises(AlertError):  # decrypt_error (51) from the service
            exchange(dev, svc, tr, ("10.0.0.1", 5684))
    c = svc.counters
    assert c["handshakes_failed"] == 1 and sum(c["handshake_failures"].values()) == 1
    assert c["bytes_in"] > 0 and c["bytes_out"] > 0
    text = ServiceMetrics(svc).render().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (s,) = fams["atls_handshake_failures"].samples
    assert s.value == 1 and s.labels["reason"] == next(iter(c["handshake_failures"]))
    got = {x.labels["direction"]: x.value for x in fams["atls_bytes"].samples}
    assert got == {"in": c["bytes_in"], "out": c["bytes_out"]}
