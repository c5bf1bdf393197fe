"""Smoke test of the `make bench` section `mqtt` (host_tools/bench/mqtt.py):
it runs with tiny sizes against a real Mosquitto and produces its keys."""

import pytest

from host_tools.bench.mqtt import mqtt
from host_tools.bench.sections import SECTIONS
from host_tools.service.mqtt_broker import mosquitto_binary


def test_mqtt_section_is_registered():
    assert "mqtt" in dict(SECTIONS)


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto missing")
def test_mqtt_section_quick():
    res = mqtt(quick=True)
    for k in (
        "messages_per_s",
        "ack_latency_ms_p50",
        "ack_latency_ms_p95",
        "baseline_ack_ms_p50",
        "added_ms_p50",
        "added_ms_p95",
    ):
        assert isinstance(res[k], float) and res[k] >= 0, (k, res)
    assert res["messages_per_s"] > 0
