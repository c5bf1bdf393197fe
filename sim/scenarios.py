"""Scenarios for the simulator, each with a verdict.

Every scenario checks the two invariants of the product:
  * nothing forged is accepted: every message the service application got
    is one its (authenticated) device sent;
  * nothing acknowledged is lost or duplicated: every message a device saw
    acknowledged reached the service application exactly once;
plus what the scenario itself is about (devices come back after a reboot,
keep working through a gateway restart, re-handshake after a service
restart, a wrong PSK is refused while the others carry on, ...).
"""

import threading
import time

from sim.pair_attack import SCENARIOS as PAIRING_SCENARIOS

SCENARIOS = {
    "default": "the fleet pairs, handshakes and exchanges readings",
    "lossy10": "10 % of radio frames lost",
    "lossy30": "30 % of radio frames lost",
    "reboot-handshake": "a device reboots in the middle of its handshake",
    "reboot-stream": "a device reboots while messages are in flight",
    "gateway-restart": "the gateway restarts; paired devices keep working",
    "service-restart": "the service restarts; devices re-handshake and resend",
    "malicious-gateway": "the gateway tampers, replays, reorders, drops and injects",
    "wrong-psk": "one device holds a wrong PSK: refused, the others unaffected",
    "forged-error": "the gateway drops ACKs, forges ERRORs both ways and spoofs off-path packets",
    "reboot-mid-message": "a device reboots right after sending, its ACKs dropped by the path",
}
SCENARIOS.update(PAIRING_SCENARIOS)  # sim/pair_attack.py: pair-attack, install-code
SCENARIOS["ota"] = (
    "signed updates A->B through a tampering gateway, readings flowing (sim/ota_run.py)"
)
DEFAULT_LOSS = {"lossy10": 0.1, "lossy30": 0.3}
EVIL = {"tamper": 0.05, "replay": 0.05, "reorder": 0.05, "drop": 0.05, "inject": 0.05}
# issue 13: what the path can forge never duplicates, loses or stalls a message
FORGED = {"drop_ack": 0.3, "forge_error_s": 1.0, "spoof_s": 1.0}
EVILS = {
    "malicious-gateway": EVIL,
    "forged-error": FORGED,
    "reboot-mid-message": {"drop_ack": 0.4},
}
HANDSHAKES_PER_MIN = 6  # the device's cap (atls.session), whatever the path forges


def all_up(fleet, names):
    return all(fleet.devices[n].handshakes_ok >= 1 for n in names)


def acked_at_least(fleet, names, k):
    return all(fleet.devices[n].acked >= k for n in names)


def run_scenario(fleet, scenario, duration, live=None, setup_timeout=90):
    """Drive `fleet` through `scenario`; returns (names, checks) where checks
    is a list of (name, passed, detail) specific to the scenario."""
    if scenario in PAIRING_SCENARIOS:
        from sim import pair_attack

        return pair_attack.run(fleet, scenario, duration, live, setup_timeout)
    if scenario == "ota":
        from sim import ota_run

        return ota_run.run(fleet, duration, live)
    checks = []
    wrong = ["dev-%02d" % fleet.n] if scenario == "wrong-psk" and fleet.n >= 2 else []
    target = "dev-01"
    rebooted = []
    if scenario == "reboot-handshake":
        # power-cycle dev-01 the moment its first handshake starts (its
        # ClientHello is on the air, the service is answering)
        def cut():
            if not rebooted:
                rebooted.append(fleet.devices[target].handshakes_ok)
                threading.Thread(
                    target=fleet.reboot_device, args=(target, 0.2), daemon=True
                ).start()

        fleet.on_device_event(target, "handshaking", cut)
    names = fleet.start(wrong_psk=wrong)
    good = [n for n in names if n not in wrong]
    paired = fleet.pair_all(names, timeout=min(60, setup_timeout))
    checks.append(("all devices paired", paired, ""))
    if scenario == "reboot-handshake":
        fleet.wait(lambda: bool(rebooted), 30, live)
        checks.append(("rebooted %s mid-handshake" % target, rebooted == [0], ""))
    up = fleet.wait(lambda: all_up(fleet, good), setup_timeout, live)
    checks.append(("every good device completed a handshake", up, ""))
    t_up = time.time()

    if scenario == "reboot-stream" and target:
        fleet.wait(lambda: fleet.devices[target].acked >= 3, 30, live)
        fleet.reboot_device(target, down_s=0.3)
        back = fleet.wait(
            lambda: (
                fleet.devices[target].handshakes_ok >= 1
                and fleet.devices[target].boots[-1]["acked"] >= 2
            ),
            60,
            live,
        )
        checks.append(("%s came back after a reboot mid-stream" % target, back, ""))
    elif scenario == "gateway-restart":
        fleet.wait(lambda: acked_at_least(fleet, good, 2), 30, live)
        marks = {n: fleet.devices[n].acked for n in good}
        fleet.restart("gateway", down_s=1.0)
        moved = fleet.wait(
            lambda: all(fleet.devices[n].acked >= marks[n] + 2 for n in good), 60, live
        )
        checks.append(("paired devices keep working after the gateway restart", moved, ""))
        codes = [e for e in fleet.events if e["event"] == "pair_confirm"]
        checks.append(("no device had to pair again", len(codes) <= len(names), ""))
    elif scenario == "service-restart":
        fleet.wait(lambda: acked_at_least(fleet, good, 2), 30, live)
        marks = {n: fleet.devices[n].acked for n in good}
        fleet.restart("service", down_s=1.0)
        again = fleet.wait(
            lambda: all(
                fleet.devices[n].handshakes_ok >= 2 and fleet.devices[n].acked >= marks[n] + 2
                for n in good
            ),
            90,
            live,
        )
        checks.append(("devices re-handshook and carried on after the service restart", again, ""))
    elif scenario == "reboot-mid-message":
        # power-cycle the device just after a reading went out, twice: the
        # service may have it while the (dropped) ACK never reached the device
        dev = fleet.devices[target]
        for _ in range(2):
            fleet.wait(lambda: dev.boots and dev.boots[-1]["acked"] >= 1, 30, live)
            hit = []
            fleet.on_device_event(target, "tx", lambda h=hit: h.append(time.time()))
            fleet.wait(lambda h=hit: bool(h), 10, live)
            time.sleep(0.1)
            fleet.reboot_device(target, down_s=0.2)
        back = fleet.wait(
            lambda: (
                fleet.devices[target].handshakes_ok >= 1
                and fleet.devices[target].boots[-1]["acked"] >= 1
            ),
            60,
            live,
        )
        checks.append(("%s came back after two reboots mid-message" % target, back, ""))
    elif scenario == "wrong-psk" and wrong:
        bad = wrong[0]
        refused = fleet.wait(lambda: fleet.devices[bad].failures >= 1, 60, live)
        checks.append(
            (
                "%s with a wrong PSK is refused" % bad,
                refused and fleet.devices[bad].handshakes_ok == 0,
                "",
            )
        )

    # let traffic flow for the rest of the run (or until every good device
    # has had all of its `count` readings acknowledged and echoed)
    remaining = duration - (time.time() - t_up)

    def finished():
        return fleet.count is not None and all(
            fleet.devices[n].acked >= fleet.count and fleet.devices[n].received >= fleet.count
            for n in good
        )

    if remaining > 0:
        fleet.wait(finished, remaining, live)
    # a verdict on correctness, not speed: on a loaded machine (or at 30 % loss)
    # a short run may end before a device's first reading got through, so give
    # every good device up to 30 s more to have one acknowledged
    fleet.wait(lambda: acked_at_least(fleet, good, 1), 30, live)
    if fleet.count is not None:
        checks.append(
            ("every device's %d readings acknowledged and echoed" % fleet.count, finished(), "")
        )
    # quiet period so in-flight messages settle before the counters are read
    fleet.settle(live)
    return names, good, wrong, checks
