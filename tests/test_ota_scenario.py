"""Scenario `ota` (issue 20 "Done when"): the fleet updates A -> B through a
tampering gateway while it sends readings; a power cut mid-download resumes,
a tampered bundle is refused, a version that never reaches the service rolls
back (sim/ota_scenario.py, a small-scale run)."""

import json
import subprocess
import sys

from host_tools.toolchain import ROOT
from sim.ota_scenario import A, B, C, checks, run_model


def test_ota_scenario_model_small_scale():
    r = run_model(devices=5, seed=3, files_kb=12, limit_s=300)
    cs = checks(r)
    assert all(c[1] for c in cs), cs
    roles, devs = r["roles"], r["devices"]
    assert devs[roles["tampered"]]["version"] == A
    assert devs[roles["broken"]]["bad"] == C and devs[roles["broken"]]["boots"] >= 4
    assert [n for n, d in devs.items() if d["version"] == B] == [
        n for n in devs if n not in (roles["tampered"], roles["broken"])
    ]
    assert r["gateway"]["tampered"] == r["gateway"]["rejected"] > 0


def test_sim_cli_runs_the_ota_scenario(tmp_path):
    rep = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, "-m", "sim", "--scenario", "ota", "--devices", "4", "--report", str(rep)]
        + ["--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(rep.read_text())
    assert report["verdict"] == "pass"
    assert "rolled back" in json.dumps(report["checks"]), report["checks"]


def test_bench_ota_section_quick():
    from host_tools.bench.ota import ota
    from host_tools.bench.sections import NOTES, SECTIONS

    assert "ota" in dict(SECTIONS) and NOTES["ota"]
    res = ota(quick=True)
    # docs/OTA.md: a 104,051-byte bundle is 2,169 frames down, 363 up, ~150 KB on air
    assert (res["typical_frames_down"], res["typical_frames_up"]) == (2169, 363)
    assert 140_000 < res["typical_bytes_on_air"] < 160_000
    assert res["fleet_all_updated"] and res["fleet_update_s"] > 0
    assert res["reading_latency_ms_p95_during"] is not None
