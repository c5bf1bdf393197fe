"""The firmware on an emulated Raspberry Pi Pico (the `pico` tier, issue 16).

Stock MicroPython v1.28.0 RPI_PICO in rp2040js (sim/pico), the firmware deployed as
.mpy for armv6m the way `make deploy` does it.  Crypto vectors run on the device, each
named by its source: RFC 7748 §5.2/§6.1 (X25519), RFC 6979 §A.2.5 and Wycheproof
ecdsa_secp256r1_sha256 (P-256 ECDSA), Wycheproof ed25519 (RFC 8032 §5.1.7 verify),
Wycheproof aes_ccm/aes_gcm (12-byte nonces, 128-bit keys), Wycheproof hkdf_sha256
(RFC 5869 A.1-A.3 first), NIST CAVP HMAC_DRBG SHA-256 (SP 800-90A §10.1.2).  Then the
real firmware/main.py with the real XBee driver on UART0, bridged to the simulator's
emulated XBee module, through the gateway to the real service: pairing, a PSK+ECDHE
handshake and 20 messages each way; and a certificate-mode handshake.

Node (and sim/pico/node_modules, `make pico-setup`) missing is a failure that names
the install command, never a skip.
"""

import contextlib
import json
import os
import time

import pytest
from conftest import load_vectors
from test_drbg import parse_rsp
from test_p256 import RFC6979_SIGS, RFC6979_UX, RFC6979_UY, RFC6979_X
from test_x25519 import ALICE_PRIV, ALICE_PUB, BOB_PUB, RFC7748_S52, SHARED_K

pytestmark = pytest.mark.pico


@pytest.fixture(scope="module")
def pico():
    from sim.pico.driver import EmulatorError, Pico, deployed, node_binary

    try:
        node_binary()
    except EmulatorError as e:
        pytest.fail(str(e))
    with costed("deploy and boot (fixture)"):
        p = Pico(flash=deployed(leave_out=("main.py",)))
        p.wait_prompt(300)
    with p:
        exec_ = p.exec

        def counted(*a, **k):  # the shared emulator's busy cycles, for cost() below
            r = exec_(*a, **k)
            COST["busy_cycles"] += r.core_cycles
            return r

        p.exec = counted
        yield p


COST = {"busy_cycles": 0}


@contextlib.contextmanager
def costed(name):
    """What `name` costs, appended to build/pico/tier.jsonl: wall seconds and emulated
    busy cycles (the shared emulator's jobs plus every emulator process that exited
    meanwhile: deployments, fleets); docs/TESTING.md has the figures."""
    from sim.pico.driver import CACHE, TOTALS

    before = dict(TOTALS, shared=COST["busy_cycles"])
    t0 = time.time()
    yield
    row = {"test": name, "wall_s": round(time.time() - t0, 2)}
    row["busy_cycles"] = TOTALS["busy_cycles"] - before["busy_cycles"]
    row["busy_cycles"] += COST["busy_cycles"] - before["shared"]
    row["processes"] = TOTALS["processes"] - before["processes"]
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "tier.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def cost(request):
    with costed(request.node.name):
        yield


# Device side: run each case, print "OK <name>" or "FAIL <name> <detail>".
RUNNER = """
import gc
def run(name, f):
    gc.collect()
    try:
        ok = f()
    except Exception as e:
        print("FAIL", name, repr(e))
        return
    print(("OK" if ok else "FAIL"), name)
"""


def run_cases(pico, body, cases, timeout=600):
    r = pico.exec(RUNNER + "CASES = %r\n" % (cases,) + body, timeout=timeout)
    assert r.ok, r.err
    fails = r.lines("FAIL")
    oks = r.lines("OK")
    assert not fails, fails
    assert len(oks) == len(cases), r.out[-2000:]
    return r


def wycheproof(name, keep, limit):
    out = []
    for g in load_vectors(name)["testGroups"]:
        for t in g["tests"]:
            if keep(g, t) and len(out) < limit:
                out.append((g, t))
    return out


def test_x25519_rfc7748_s5_2_and_s6_1(pico):
    k, u, out = RFC7748_S52[0]
    cases = [("5.2 #1", k, u, out), ("6.1 alice public", ALICE_PRIV, "", ALICE_PUB)]
    cases.append(("6.1 shared", ALICE_PRIV, BOB_PUB, SHARED_K))
    # three ladders (~0.14 s each at 125 MHz): the full RFC 7748 set, 1,000 iterations
    # included, runs on the unix port (tests/test_x25519.py, tests/test_native_x25519.py)
    body = """
from binascii import unhexlify as H
from atls.crypto import x25519 as X
for name, k, u, out in CASES:
    if u:
        run(name, lambda: X.x25519(H(k), H(u)) == H(out))
    else:
        run(name, lambda: X.x25519_base(H(k)) == H(out))
"""
    run_cases(pico, body, cases)


def test_p256_ecdsa_rfc6979_a_2_5_and_wycheproof(pico):
    pub = "04" + RFC6979_UX + RFC6979_UY
    # one RFC 6979 signature, one valid and one invalid Wycheproof signature, one
    # ECDH: each code path once on the board (the full sets run on the unix port)
    cases = [("rfc6979 sign %s" % m.decode(), m.hex(), r, s) for m, _k, r, s in RFC6979_SIGS[:1]]
    wp = wycheproof(
        "ecdsa_secp256r1_sha256_test.json",
        lambda g, t: t["tcId"] == 1 or t["result"] == "invalid" and t["tcId"] % 97 == 0,
        2,
    )
    verify = [
        ("wycheproof tc%d" % t["tcId"], g["publicKey"]["uncompressed"], t["msg"], t["sig"])
        for g, t in wp
    ]
    verify_ok = [t["result"] == "valid" for _g, t in wp]
    body = """
from binascii import unhexlify as H
from atls.crypto import p256
from atls.crypto.p256_sign import ecdsa_sign
PRIV = H(%r)
PUB = H(%r)
def der_rs(sig):
    i = 4 + sig[3]
    return int.from_bytes(sig[4:4 + sig[3]], "big"), int.from_bytes(sig[i + 2:i + 2 + sig[i + 1]], "big")
def sign_case(m, r, s):
    sig = ecdsa_sign(PRIV, H(m))
    return der_rs(sig) == (int(r, 16), int(s, 16))
for name, m, r, s in CASES:
    run(name, lambda: sign_case(m, r, s))
def verify_case(pk, m, sig, want):
    try:
        p256.ecdsa_verify(H(pk), H(m), H(sig))
        got = True
    except Exception:
        got = False
    return got == want
for (name, pk, m, sig), want in zip(VERIFY, WANT):
    run(name, lambda: verify_case(pk, m, sig, want))
run("ecdh agrees", lambda: p256.ecdh(PRIV, p256.public_key(H("01" * 32))) == p256.ecdh(H("01" * 32), PUB))
""" % (RFC6979_X, pub)
    body = "VERIFY = %r\nWANT = %r\n" % (verify, verify_ok) + body
    r = pico.exec(RUNNER + "CASES = %r\n" % (cases,) + body, timeout=600)
    assert r.ok, r.err
    assert not r.lines("FAIL"), r.lines("FAIL")
    assert len(r.lines("OK")) == len(cases) + len(verify) + 1, r.out


def test_ed25519_wycheproof_rfc8032_5_1_7(pico):
    # tc1 (valid) and the first invalid one: pure-Python verification is ~0.8 s a
    # signature at 125 MHz; the whole Wycheproof file runs on the unix port
    wp = wycheproof("ed25519_test.json", lambda g, t: t["tcId"] == 1 or t["result"] == "invalid", 2)
    cases = [
        ("tc%d" % t["tcId"], g["publicKey"]["pk"], t["msg"], t["sig"], t["result"] == "valid")
        for g, t in wp
    ]
    body = """
from binascii import unhexlify as H
from atls.crypto import ed25519
def case(pk, m, sig, want):
    try:
        ed25519.verify(H(pk), H(m), H(sig))
        got = True
    except Exception:
        got = False
    return got == want
for name, pk, m, sig, want in CASES:
    run(name, lambda: case(pk, m, sig, want))
"""
    run_cases(pico, body, cases)


@pytest.mark.parametrize("aead", ["ccm", "gcm"])
def test_aead_wycheproof_aes_128_nonce_96(pico, aead):
    tags = (16, 8) if aead == "ccm" else (16,)
    wp = wycheproof(
        "aes_%s_test.json" % aead,
        lambda g, t: g["ivSize"] == 96 and g["keySize"] == 128 and g["tagSize"] // 8 in tags,
        12,
    )
    cases = [
        (
            "tc%d" % t["tcId"],
            g["tagSize"] // 8,
            t["key"],
            t["iv"],
            t["aad"],
            t["msg"],
            t["ct"] + t["tag"],
            t["result"] == "valid",
        )
        for g, t in wp
    ]
    body = """
from binascii import unhexlify as H
from atls.crypto.ccm import CCM
from atls.crypto.gcm import GCM
def case(tag, k, iv, aad, msg, ct, valid):
    c = CCM(H(k), tag) if %r == "ccm" else GCM(H(k))
    if valid and c.seal(H(iv), H(aad), H(msg)) != H(ct):
        return False
    try:
        got = c.open(H(iv), H(aad), H(ct)) == H(msg)
    except Exception:
        got = False
    return got == valid
for name, tag, k, iv, aad, msg, ct, valid in CASES:
    run(name, lambda: case(tag, k, iv, aad, msg, ct, valid))
""" % (aead,)
    run_cases(pico, body, cases)


def test_hkdf_wycheproof_rfc5869(pico):
    wp = wycheproof("hkdf_sha256_test.json", lambda g, t: t["result"] == "valid", 6)
    cases = [
        ("tc%d" % t["tcId"], t["ikm"], t["salt"], t["info"], t["size"], t["okm"]) for g, t in wp
    ]
    body = """
from binascii import unhexlify as H
from atls.crypto.hkdf import hkdf_expand, hkdf_extract
for name, ikm, salt, info, n, okm in CASES:
    run(name, lambda: hkdf_expand(hkdf_extract(H(salt), H(ikm)), H(info), n) == H(okm))
"""
    run_cases(pico, body, cases)


def test_drbg_cavp_hmac_drbg_sha256(pico):
    picked = parse_rsp(load_vectors("hmac_drbg_sha256.txt"))[::16]
    cases = [
        (
            "%s #%d" % (c["file"], c["COUNT"]),
            c["EntropyInput"].hex(),
            c["Nonce"].hex(),
            c["PersonalizationString"].hex(),
            c.get("EntropyInputReseed", b"").hex(),
            c.get("AdditionalInputReseed", b"").hex(),
            c["add"][0].hex(),
            c["add"][1].hex(),
            c["ReturnedBits"].hex(),
        )
        for c in picked
    ]
    body = """
from binascii import unhexlify as H
from atls.crypto.drbg import HmacDrbg
def case(e, n, p, re, ra, a1, a2, want):
    d = HmacDrbg(H(e), H(n), H(p))
    if re:
        d.reseed(H(re), H(ra))
    d.generate(len(want) // 2, H(a1))
    return d.generate(len(want) // 2, H(a2)) == H(want)
for c in CASES:
    run(c[0], lambda: case(*c[1:]))
"""
    run_cases(pico, body, cases)


def test_device_random_comes_from_the_seeded_drbg(pico):
    """atls.entropy seeds the DRBG on the emulated board (its sources pass the
    SP 800-90B health tests there) and random_bytes then comes from it."""
    r = pico.exec(
        "from atls import entropy\n"
        "from atls.crypto import backend\n"
        'f = entropy.start({}, {"device_id": "pico-test", "seed": "11" * 32})\n'
        "a = backend.random_bytes(32); b = backend.random_bytes(32)\n"
        "print('RES', f is None, len(a), a != b)\n",
        timeout=300,
    )
    assert r.ok, r.err
    assert r.lines("RES") == ["True 32 True"], r.out


def test_missing_node_fails_with_the_install_command(monkeypatch):
    """No silent skip: without Node the tier fails and says how to install it."""
    from sim.pico import driver

    monkeypatch.setattr(driver.shutil, "which", lambda name: None)
    with pytest.raises(driver.EmulatorError) as e:
        driver.Pico()
    assert "apt-get install -y nodejs npm" in str(e.value) and "make pico-setup" in str(e.value)


# -- end to end: main.py, the XBee driver on UART0, the simulator's radio ---------------------
# One fleet, two emulated Picos at once (their fixed waits overlap: pairing window, fleet
# start, settling): dev-01 holds a PSK (PSK+ECDHE handshake), dev-02 a certificate (the
# service has both in its registry).  UART0 and the module run at 115,200 baud (XBee 3
# ATBD=7, a standard rate of the module; device.json's link.xbee.baudrate overrides the
# board's 9600): the firmware's code and heap do not depend on the rate, the wall time
# does (a 66-byte frame is 69 ms at 9600).  The handshake at the board's 9600 is
# `make bench` section pico (e2e_handshake_ms_*).
E2E_BAUD = 115200
E2E_MESSAGES = 20


def mixed_fleet(tmp_path):
    from sim.fleet import Fleet

    class MixedFleet(Fleet):
        """Cert mode (the service has its certificate, dev-02 a client certificate),
        but dev-01 authenticates with a PSK."""

        def make_credentials(self):
            super().make_credentials()
            reg = json.loads((self.dir / "devices.json").read_text())
            psk = os.urandom(32).hex()
            reg["devices"]["dev-01"] = {"psk": psk}
            (self.dir / "devices.json").write_text(json.dumps(reg))
            self.creds["dev-01"] = {"psk": psk}

        def prepare_device(self, i):
            name = super().prepare_device(i)
            if name == "dev-01":
                path = self.device_dir(name) / "device.json"
                dev = json.loads(path.read_text())
                dev["tls"] = {"psk": self.creds[name]["psk"]}
                path.write_text(json.dumps(dev))
            return name

    return MixedFleet(
        devices=2, seed=16, mode="cert", period_ms=50, count=E2E_MESSAGES, workdir=tmp_path
    )


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    from sim.pico.driver import EmulatorError, node_binary

    try:
        node_binary()
    except EmulatorError as e:
        pytest.fail(str(e))
    from sim import report as rep
    from sim.pico.fleet import attach
    from sim.scenarios import run_scenario

    wd = tmp_path_factory.mktemp("pico-e2e")
    fleet = attach(mixed_fleet(wd), 2, baud=E2E_BAUD)
    t0 = time.time()
    with costed("e2e fleet (fixture)"):
        try:
            names, good, wrong, checks = run_scenario(fleet, "default", 400, None, 240)
        finally:
            fleet.shutdown()
    report = rep.build(fleet, "default", names, good, wrong, checks, time.time() - t0)
    logs = {n: (wd / (n + ".log")).read_text() for n in names}
    return fleet, report, logs


def events(log, kind):
    return [
        json.loads(ln.split("ATLS ", 1)[1])
        for ln in log.splitlines()
        if ln.startswith("ATLS ") and '"ev": "%s"' % kind in ln
    ]


def test_e2e_main_py_xbee_uart0_pairing_psk_handshake_20_messages_each_way(e2e):
    fleet, report, logs = e2e
    log = logs["dev-01"]
    failed = [c for c in report["checks"] if not c["passed"]]
    assert report["verdict"] == "pass", (failed, log[-3000:])
    d = fleet.devices["dev-01"]
    assert d.paired and d.handshakes_ok >= 1, log[-3000:]
    n = E2E_MESSAGES
    assert d.acked >= n and d.received >= n, log[-3000:]  # 20 each way
    assert events(log, "boot")[0]["board"] == "pico_w"  # the board's configuration, UART0
    assert events(log, "xbee"), log[-3000:]  # the XBee driver on UART0 answered (API frames)
    t = report["totals"]
    assert t["forged_accepted"] == 0 and t["lost_acknowledged"] == 0
    up = events(log, "up")
    assert up and up[0]["suite"] == "TLS_AES_128_CCM_8_SHA256"
    svc = (fleet.dir / "service.log").read_text()
    ok = [json.loads(ln) for ln in svc.splitlines() if '"handshake_ok"' in ln]
    assert {(h["identity"], h["auth"]) for h in ok} >= {("dev-01", "psk"), ("dev-02", "cert")}


def test_e2e_certificate_mode_handshake(e2e):
    fleet, report, logs = e2e
    log = logs["dev-02"]
    assert report["verdict"] == "pass", log[-3000:]
    d = fleet.devices["dev-02"]
    assert d.paired and d.handshakes_ok >= 1, log[-3000:]
    assert d.acked >= 1 and d.received >= 1, log[-3000:]
    svc = (fleet.dir / "service.log").read_text()
    ok = [json.loads(ln) for ln in svc.splitlines() if '"handshake_ok"' in ln]
    assert any(h["identity"] == "dev-02" and h["auth"] == "cert" for h in ok), svc[-2000:]
