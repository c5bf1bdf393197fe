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
