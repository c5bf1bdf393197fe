"""Scenario `ota` (issue 20 "Done when"): the fleet updates A -> B through a
tampering gateway while it sends readings; a power cut mid-download resumes,
a tampered bundle is refused, a version that does not come up rolls back.
The real multi-process run (sim/ota_run.py, `make sim SCENARIO=ota`) and the
one-process model (sim/ota_scenario.py: simulated time, a version that never
reaches the service, for `make bench`)."""

import json
import subprocess
import sys

from host_tools.bench.ota import real_figures
from host_tools.toolchain import ROOT
from sim.ota_run import A, B, C
from sim.ota_scenario import C as MODEL_C
from sim.ota_scenario import checks, run_model


def test_ota_scenario_model_small_scale():
    r = run_model(devices=5, seed=3, files_kb=12, limit_s=300)
    cs = checks(r)
    assert all(c[1] for c in cs), cs
    roles, devs = r["roles"], r["devices"]
    assert devs[roles["tampered"]]["version"] == A
    assert devs[roles["broken"]]["bad"] == MODEL_C and devs[roles["broken"]]["boots"] >= 4
    assert [n for n, d in devs.items() if d["version"] == B] == [
        n for n in devs if n not in (roles["tampered"], roles["broken"])
    ]
    assert r["gateway"]["tampered"] == r["gateway"]["rejected"] > 0


def test_sim_ota_scenario_real_processes(tmp_path):
    """`make sim SCENARIO=ota` small: MicroPython devices, the tampering
    gateway, the service with the OTA app; every verdict must pass."""
    rep = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, "-m", "sim", "--scenario", "ota", "--devices", "4", "--duration", "4"]
        + ["--ota-rate", "200", "--report", str(rep), "--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert rep.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(rep.read_text())
    failed = [c for c in report["checks"] if not c["passed"]]
    assert report["verdict"] == "pass" and p.returncode == 0, (failed, p.stdout[-2500:])
    ota = report["ota"]
    devs = ota["devices"]
    assert [n for n, d in devs.items() if d["version"] == B] == ["dev-01", "dev-02"]
    assert devs["dev-03"]["refused"] == ["bad_signature"] and devs["dev-03"]["version"] == A
    assert devs["dev-04"]["rollback"] == [C] and devs["dev-04"]["hello"][-1] == A
    assert 0 < ota["cut_at"] == devs["dev-02"]["resumed_at"] < ota["bundle_bytes"]
    assert ota["tamper_update"] > 0 and ota["resets"] >= 3
    assert report["totals"]["lost_acknowledged"] == report["totals"]["duplicated"] == 0
    assert all(d["acked_during"] > 0 for d in devs.values())
    fig = real_figures(report)  # make bench section ota, from this run
    assert fig["real_verdict"] == "pass" and fig["real_devices"] == 4
    assert fig["real_ack_ms_p95_during"] > 0 and fig["real_readings_during"] > 0
    assert fig["real_update_bytes_on_air"] > ota["bundle_bytes"]  # 48 bytes a frame + ACKs


def test_sim_ota_scenario_needs_a_device_per_role(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "sim", "--scenario", "ota", "--devices", "3"]
        + ["--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "--devices 4" in p.stderr, p.stderr


def test_bench_ota_section_quick():
    from host_tools.bench.ota import ota
    from host_tools.bench.sections import NOTES, SECTIONS

    assert "ota" in dict(SECTIONS) and NOTES["ota"]
    res = ota(quick=True, real=False)  # the real run: test_sim_ota_scenario_real_processes
    # docs/OTA.md: a 104,051-byte bundle is 2,169 frames down, 363 up, ~150 KB on air
    assert (res["typical_frames_down"], res["typical_frames_up"]) == (2169, 363)
    assert 140_000 < res["typical_bytes_on_air"] < 160_000
    assert res["fleet_all_updated"] and res["fleet_update_s"] > 0
    assert res["reading_latency_ms_p95_during"] is not None


def test_unix_port_slot_that_does_not_import_rolls_back_and_asks_for_a_reboot(mpy, tmp_path):
    """firmware/main.py on the unix port: a slot whose supervisor does not
    import is rolled back and the process exits RESET_EXIT (the simulator's
    fleet restarts it into A), as machine.reset() on a board; it used to
    raise (exit 1), which the fleet took for a crash."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from atls.ota.agent import RESET_EXIT
    from host_tools.ota import bundle
    from host_tools.toolchain import FIRMWARE
    from sim.ota_scenario import preinstall

    files = [("atls/__init__.py", b""), ("atls/supervisor.py", b"import atls.not_here\n")]
    data = bundle.build(files, B, A, "unix", ed25519.Ed25519PrivateKey.generate())
    preinstall(tmp_path / "ota", data)
    p = subprocess.run(
        [mpy.binary, str(FIRMWARE / "main.py")],
        cwd=tmp_path,
        env={"MICROPYPATH": ".frozen:" + str(FIRMWARE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == RESET_EXIT, p.stdout + p.stderr
    assert '"ota_boot_error"' in p.stdout and '"ota_rollback"' in p.stdout
    ptr = json.loads((tmp_path / "ota" / "boot.json").read_text())
    assert (ptr["slot"], ptr["bad"], ptr["state"]) == ("", B, "ok")
