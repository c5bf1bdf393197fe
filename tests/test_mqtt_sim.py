"""`make sim MQTT=1` (sim/mqtt_check.py): the fleet with the MQTT bridge
against a local Mosquitto, through a service restart, passes its verdict
with the two MQTT checks (acknowledged = on the up topic exactly once; every
down message reached its device)."""

import pytest
from test_sim import run_sim

from host_tools.service.mqtt_broker import mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto missing")
def test_sim_mqtt_service_restart_verdict(tmp_path):
    proc, rep = run_sim(tmp_path, "service-restart", "--mqtt", devices=2, duration=5)
    checks = {c["check"]: c for c in rep["checks"]}
    mqtt = [c for name, c in checks.items() if name.startswith("MQTT:")]
    assert len(mqtt) == 2 and all(c["passed"] for c in mqtt), mqtt
    assert rep["verdict"] == "pass" and proc.returncode == 0, proc.stdout[-2500:]
