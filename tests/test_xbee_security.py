"""The device's XBee driver and ZigBee network security (drivers/xbee_at.py
secure, drivers/xbee.py pairing_hook) against the emulated radio, under the
MicroPython unix port at a 64 KiB heap (as tests/test_xbee_driver.py) and
CPython: the module is given EE=1/EO=2/KY and joins the encrypted network
once the gateway's window opens; a forged NOT_PAIRED is ignored, the one under
the pairing key raises NotPaired."""

import os
import subprocess
import sys
import time

import pytest
from conftest import FIRMWARE, TESTS

from atls import pairing as P
from sim.radio import BackgroundRadio

KY = bytes.fromhex("5a6967426565416c6c69616e63653039")
SCRIPT = TESTS / "mpy" / "xbee_security_device.py"


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_driver_joins_encrypted_network_and_obeys_only_an_authentic_notice(interp, mpyc):
    pkey = os.urandom(32)
    with BackgroundRadio(devices=1, ee=1) as radio:
        net = radio.net
        c = net.medium.coordinator
        dev = net.medium.module(bytes.fromhex(radio.state["devices"][0]["address64"]))
        radio.call(setattr, c, "ky", KY)
        args = [radio.state["devices"][0]["port"], KY.hex(), pkey.hex()]
        if interp == "micropython":
            p = mpyc.popen(SCRIPT, args, heapsize="72K", stdout=subprocess.PIPE, text=True)
        else:
            env = dict(os.environ, PYTHONPATH=str(FIRMWARE))
            cmd = [sys.executable, str(SCRIPT)] + [str(a) for a in args]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert p.stdout.readline().split()[0] == "READY"
            assert p.stdout.readline().split() == ["SECURED", "True", "66"]
            time.sleep(0.3)
            assert dev.ky == KY and dev.eo == 2 and not dev.joined
            radio.call(c.open_join, 30)
            assert p.stdout.readline().split() == ["JOINED", "True"]
            assert dev.nk == c.nk
            forged = P.encode_reply(P.NOT_PAIRED, tag=os.urandom(16))
            real = P.encode_reply(P.NOT_PAIRED, tag=P.tag(pkey, b"not paired"))

            def say(payload):  # the coordinator's address, with the network key
                net.medium.inject(c.addr64, dev.addr64, payload, 0, nk=c.nk)

            radio.call(say, forged)
            radio.call(say, b"\xa6\x00\x01\x01")  # an ATLS ERROR: handed to the link
            time.sleep(0.3)
            radio.call(say, real)
            out = p.stdout.readline().split()
            assert out[0] == "NOT_PAIRED" and out[1] == "1", out  # the ATLS packet came through
        finally:
            p.kill()
            p.wait(5)
