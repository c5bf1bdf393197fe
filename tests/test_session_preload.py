"""DeviceSession.preload(): after it, a whole handshake and the first message
load no firmware module (issue 12: nothing is imported mid-handshake, where
the qstr pool growing was the largest allocation).  Runs with the pure
crypto (ATLS_PURE_CRYPTO=1), whose lazy imports are the device's."""

import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = r"""
import sys
from atls.link import Link, LinkConfig
from atls.protocol import SECP256R1, X25519
from atls.session import DeviceSession
from atls.tls.client import ClientConfig
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(32))
group = {"x25519": X25519, "secp256r1": SECP256R1}[sys.argv[1]]
preload = sys.argv[2] == "1"
cfg = ClientConfig(psk=PSK, psk_identity=b"dev", groups=(group,))
dev = DeviceSession(cfg, LinkConfig(mtu=64))
srv = Link("server", LinkConfig(mtu=64), session_id=0x1234)
tls = ServerConnection(ServerConfig(psks={b"dev": PSK}).build())
if preload:
    dev.preload()
before = {m for m in sys.modules if m.startswith("atls")}
dev.connect(0)
up = False
for now in range(10, 5000, 10):
    for d in dev.datagrams(now):
        srv.receive(d, now)
    for ev in srv.events():
        if ev[0] == "flight":
            out = tls.feed(bytes(ev[1]))
            if out:
                srv.send_flight(out, now)
            if tls.done and srv.channel is None:
                srv.start_channel(tls.export(), 0x1305)
    for d in srv.datagrams(now):
        dev.receive(d, now)
    for ev in dev.events():
        if ev[0] == "up" and not up:
            up = True
            dev.send(b"reading 1", now)
    if up and not dev.pending():
        break
assert up, "no handshake"
print(sorted({m for m in sys.modules if m.startswith("atls")} - before))
"""


@pytest.mark.parametrize("group", ["x25519", "secp256r1"])
def test_nothing_is_imported_mid_handshake_after_preload(group):
    env = {"ATLS_PURE_CRYPTO": "1", "PYTHONPATH": str(ROOT / "firmware")}
    run = [sys.executable, "-c", SCRIPT, group]
    without = subprocess.run(run + ["0"], capture_output=True, text=True, env=env, timeout=120)
    assert without.returncode == 0, without.stderr
    assert without.stdout.strip() != "[]"  # the handshake does load modules lazily
    with_ = subprocess.run(run + ["1"], capture_output=True, text=True, env=env, timeout=120)
    assert with_.returncode == 0, with_.stderr
    assert with_.stdout.strip() == "[]"
