"""A firmware update on the emulated Pico's own flash, with power cuts (issue 20).

The real firmware deployed as armv6m .mpy with main.py (version A: the factory
0.0.0), a bundle of the whole firmware built and signed by host_tools.ota (version
B: 1.0.0, the `make release` path), received by atls.ota.updater on the board's
littlefs2 flash up to its last CHUNK.  From there (staging complete) to the
confirmation after the reboot, the emulator cuts the power before a seeded random
flash operation (half of them torn: the operation half done); the board then boots
again from that flash and must run all of A or all of B, signed, never a mix
(sim/pico/ota_cuts.py says how that is read).  The uncut run must end on B,
confirmed.  `make bench` section `pico` sweeps many more cut points (pico_ota_*).
"""

import pytest

pytestmark = pytest.mark.pico

SEED = 20  # the cut points are drawn from it (reported on failure)
CUTS = 3


@pytest.fixture(scope="module")
def ota(tmp_path_factory):
    from sim.pico.driver import EmulatorError, node_binary

    try:
        node_binary()
    except EmulatorError as e:
        pytest.fail(str(e))
    from sim.pico import ota_cuts

    wd = tmp_path_factory.mktemp("pico-ota")
    data, pub, _ = ota_cuts.bundle(wd)
    run = ota_cuts.Run(wd, data, pub)
    ref = run.reference()
    return run, ref


def test_uncut_update_switches_boots_b_from_its_slot_and_confirms(ota):
    run, ref = ota
    assert run.verified(ref["inspect"]) == "B", ref["inspect"]
    p = ref["inspect"]["pointer"]
    assert p["state"] == "ok" and p["slot"] in ("a", "b") and p["version"] == "1.0.0"
    assert run.n_switch > 0 and run.n_boot > 0  # the switch and the boot write flash


@pytest.mark.timeout(1200)
def test_power_cut_anywhere_in_the_switch_boots_a_verified_version(ota):
    run, _ = ota
    seen = []
    for k, torn in run.cut_points(CUTS, SEED):
        r = run.trial((k, torn), "cut-%d" % k)
        assert r["cut"] is not None, "cut %d (of %d) never happened" % (
            k,
            run.n_switch + run.n_boot,
        )
        got = run.verified(r["inspect"])
        seen.append((k, torn, r["phase"], got))
        assert got in ("A", "B"), (SEED, seen, r["inspect"]["pointer"])
