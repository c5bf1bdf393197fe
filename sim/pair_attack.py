"""The pairing scenarios (issue 15), registered in sim/scenarios.py:

  pair-attack   ZigBee security on (EE=1, a trust-center link key the devices
                are provisioned with).  While the devices pair by code, a
                rogue gateway without the network key answers every pairing
                request (sim/radio/attackers.py RogueGateway) and an insider
                holding the network key grinds its own request for each
                honest device's code (Grinder).  Verdict: no rogue device is
                allowlisted, every honest device paired with the real gateway
                (its paired.json key is the gateway's key for its address),
                the attacks happened (rogue frames not delivered, ground
                reveals refused).
  install-code  The fleet pairs by install codes: each device is provisioned
                with one, the gateway is given each QR code
                (`python -m host_tools.gateway pair --qr`), nobody confirms
                anything; the last device (with 2 or more) holds a wrong
                install code and must stay unpaired.

Both return what scenarios.run_scenario returns.
"""

import json
import subprocess
import sys
import time

from sim.radio.attackers import ROGUE_ADDRESS

SCENARIOS = {
    "pair-attack": "a rogue requester grinds codes and a rogue gateway answers while devices pair",
    "install-code": "the fleet pairs by install codes (QR), no operator",
}
LINK_KEY = "5a6967426565416c6c69616e63653039"  # a fixed test key: the sim is not a deployment


def _start_gateway(fleet):
    """As fleet.start_gateway, with ZigBee security and a gateway id."""
    cfg = {
        "serial": fleet.radio_state["coordinator"]["pty"],
        "escaped": True,
        "services": {"default": "%s:%d" % fleet.service_addr},
        "state_dir": "gateway-state",
        "limits": {"max_payload": 66, "rate_per_s": 100, "rate_burst": 200},
        "zigbee_security": {"link_key": LINK_KEY},
        "gateway_id": "gw-sim",
    }
    (fleet.dir / "gateway.json").write_text(json.dumps(cfg))
    ready = fleet.dir / "gateway.ready"
    if ready.exists():
        ready.unlink()
    cmd = [sys.executable, "-m", "host_tools.gateway", "run", "--config"]
    p = fleet.spawn("gateway", cmd + [str(fleet.dir / "gateway.json"), "--ready-file", str(ready)])
    deadline = time.time() + 20
    while not ready.exists():
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError("gateway did not start (see %s)" % (fleet.dir / "gateway.log"))
        time.sleep(0.05)
    fleet.note("gateway_up", zigbee_security=True)


def _radio(fleet, req):
    import socket

    with socket.create_connection(("127.0.0.1", fleet.radio_state["control_port"]), 5) as s:
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf or b"{}")


def _start(fleet, scenario):
    from host_tools.install_code import new_install_code

    fleet.wrong_psk = set()
    fleet.start_radio()
    fleet.make_credentials()
    fleet.start_service()
    _start_gateway(fleet)
    names = [fleet.prepare_device(i) for i in range(fleet.n)]
    codes = {}
    for name in names:
        path = fleet.device_dir(name) / "device.json"
        dev = json.loads(path.read_text())
        dev["link"]["xbee"]["zigbee_security"] = {"link_key": LINK_KEY}
        if scenario == "install-code":
            codes[name] = new_install_code()
            dev["install_code"] = codes[name].hex()
        path.write_text(json.dumps(dev))
    return names, codes


def _preauthorise(fleet, names, codes, wrong):
    from host_tools.install_code import new_install_code, qr_payload, write_qr

    for name in names:
        code = new_install_code() if name in wrong else codes[name]
        qr = fleet.dir / ("%s.png" % name)
        write_qr(qr_payload(name, "default", code), qr)
        r = subprocess.run(
            [sys.executable, "-m", "host_tools.gateway", "pair", "--config"]
            + [str(fleet.dir / "gateway.json"), "--qr", str(qr), "--window", "120"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        fleet.note("preauthorise", device=name, ok=r.returncode == 0)


def _table(fleet):
    try:
        return json.loads((fleet.dir / "gateway-state" / "pairing.json").read_text())
    except (OSError, ValueError):
        return {}


def _paired_with_gateway(fleet, name, table):
    try:
        st = json.loads((fleet.device_dir(name) / "paired.json").read_text())
    except (OSError, ValueError):
        return False
    entry = table.get("devices", {}).get(st.get("address64", ""))
    return entry is not None and entry.get("key") == st.get("key")


def run(fleet, scenario, duration, live=None, setup_timeout=90):
    from sim.scenarios import acked_at_least, all_up

    checks = []
    names, codes = _start(fleet, scenario)
    wrong = [names[-1]] if scenario == "install-code" and len(names) >= 2 else []
    good = [n for n in names if n not in wrong]
    if scenario == "pair-attack":
        r = _radio(fleet, {"cmd": "attack", "rogue_gateway": True, "grinder": True})
        checks.append(("attackers on the air", bool(r.get("ok")), str(r.get("attackers"))))
    else:
        _preauthorise(fleet, names, codes, wrong)
    for name in names:
        fleet.start_device(name)
    if scenario == "pair-attack":
        paired = fleet.pair_all(names, timeout=min(90, setup_timeout))
    else:
        paired = fleet.wait(lambda: all(fleet.devices[n].paired for n in good), setup_timeout, live)
    checks.append(("every honest device paired", paired, ""))
    up = fleet.wait(lambda: all_up(fleet, good), setup_timeout, live)
    checks.append(("every good device completed a handshake", up, ""))
    t_up = time.time()
    fleet.wait(lambda: acked_at_least(fleet, good, 2), max(5, duration - 5), live)
    table = _table(fleet)
    rogue = "%016x" % ROGUE_ADDRESS
    checks.append(("no rogue device allowlisted", rogue not in table.get("devices", {}), ""))
    with_real = [n for n in good if _paired_with_gateway(fleet, n, table)]
    checks.append(
        ("every honest device paired with the real gateway", with_real == good, str(with_real))
    )
    remaining = duration - (time.time() - t_up)
    if remaining > 0:
        fleet.wait(lambda: False, min(remaining, 10), live)
    fleet.settle(live)
    radio, _service, gateway, _ = fleet.collect()
    drops = gateway.get("drops", {})
    if scenario == "pair-attack":
        atk = radio.get("attackers", {})
        rg = atk.get("rogue_gateway", {})
        gr = atk.get("grinder", {})
        no_key = radio.get("medium", {}).get("no_key", 0)
        checks.append(
            (
                "the rogue gateway's answers were never delivered",
                rg.get("responses", 0) > 0 and no_key >= rg.get("responses", 0),
                "answers %s, undelivered %d" % (rg.get("responses"), no_key),
            )
        )
        refused = drops.get("pair_bad_commit", 0)
        checks.append(
            (
                "the grinder's reveals were refused",
                gr.get("reveals", 0) > 0 and refused >= gr.get("reveals", 0),
                "reveals %s (codes matched %s), refused %d"
                % (gr.get("reveals"), gr.get("matches"), refused),
            )
        )
        confirmed = {e.get("device") for e in fleet.events if e["event"] == "pair_confirm"}
        checks.append(("the person confirmed the honest devices only", confirmed == set(names), ""))
    else:
        confirms = [e for e in fleet.events if e["event"] in ("pair_confirm", "pair_refuse")]
        checks.append(("nobody confirmed anything", not confirms, ""))
        for n in wrong:
            checks.append(
                (
                    "%s with a wrong install code stays unpaired" % n,
                    not fleet.devices[n].paired and not _paired_with_gateway(fleet, n, table),
                    "",
                )
            )
            checks.append(("its proof was refused", drops.get("pair_bad_proof", 0) >= 1, ""))
    return names, good, wrong, checks
