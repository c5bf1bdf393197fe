"""The simulator's pairing scenarios (issue 15, sim/pair_attack.py) through
`python -m sim`: `pair-attack` (a rogue gateway without the network key
answers every pairing request and an insider grinds codes while the devices
pair by code: no rogue is allowlisted, every honest device pairs with the real
gateway) and `install-code` (the fleet pairs by install codes, nobody
confirms, a device with a wrong code stays out)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("scenario", ["pair-attack", "install-code"])
def test_pairing_scenario_passes(tmp_path, scenario):
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "--scenario", scenario, "--devices", "2", "--count", "2"]
        + ["--period", "300", "--duration", "20", "--seed", "7", "--report", str(report)]
        + ["--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rep = json.loads(report.read_text())
    assert rep["verdict"] == "pass", proc.stdout[-3000:]
    checks = {c["check"]: c["passed"] for c in rep["checks"]}
    assert checks["no rogue device allowlisted"]
    assert checks["every honest device paired with the real gateway"]
    if scenario == "pair-attack":
        assert checks["the rogue gateway's answers were never delivered"]
        assert checks["the grinder's reveals were refused"]
    else:
        assert checks["nobody confirmed anything"]
        assert checks["dev-02 with a wrong install code stays unpaired"]


def test_unpaired_device_is_told_and_pairs_again_on_its_own(tmp_path):
    """End to end (MicroPython device, emulated radio, gateway and service
    processes): the gateway unpairs a running device; its next packets get an
    authenticated NOT_PAIRED, the device drops paired.json, restarts into
    pairing by itself and, once the person confirms again, carries on."""
    import time

    from sim.fleet import Fleet

    fleet = Fleet(devices=1, seed=11, workdir=tmp_path / "w", period_ms=300, quiet=True)
    try:
        (name,) = fleet.start()
        assert fleet.pair_all([name], timeout=60)
        assert fleet.wait(lambda: fleet.devices[name].handshakes_ok >= 1, 60)
        assert (fleet.device_dir(name) / "paired.json").exists()
        again = []
        fleet.on_device_event(name, "pairing_start", lambda: again.append(1))
        removed = fleet.gateway({"cmd": "unpair", "key": name})["removed"]
        assert removed
        assert fleet.wait(lambda: bool(again), 60)
        assert not (fleet.device_dir(name) / "paired.json").exists()
        ok_before = fleet.devices[name].handshakes_ok
        fleet.gateway({"cmd": "open_join", "seconds": 60})  # the person pairs it again
        deadline = time.time() + 60
        confirmed = False
        while not confirmed and time.time() < deadline:
            for p in fleet.gateway({"cmd": "pending"})["pending"]:
                if p["device"] == name and p["code"] == fleet.devices[name].code:
                    fleet.gateway({"cmd": "confirm", "addr64": p["addr64"], "code": p["code"]})
                    confirmed = True
            time.sleep(0.2)
        assert confirmed
        assert fleet.wait(lambda: fleet.devices[name].handshakes_ok > ok_before, 60)
        st = json.loads((tmp_path / "w" / "gateway-state" / "stats.json").read_text())
        assert st.get("not_paired_sent", 0) >= 1
    finally:
        fleet.shutdown()
