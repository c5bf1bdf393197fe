"""atls.pairing_state (issue 17, heap): a device that is paired already loads
neither the pairing exchange (atls.pairing_client) nor, once the app has dropped
it, the pairing wire module; the NOT_PAIRED hook it keeps still believes only
K's tag.  Runs on the MicroPython unix port (the device's interpreter)."""

import json

SCRIPT = r"""
import sys
from atls import pairing_state
from atls.app import unload

class Drv:
    pairing_hook = None

dev = {"device_id": "dev-01", "service": "default"}
print("unpaired", pairing_state.hook_if_paired(Drv, dev))
f = open("paired.json", "w")
f.write('{"version": 2, "device": "dev-01", "service": "default", "address64": "00", "key": "%s"}')
f.close()
print("other device", pairing_state.hook_if_paired(Drv, {"device_id": "dev-02"}))
print("paired", pairing_state.hook_if_paired(Drv, dev))
unload("atls.pairing_client", "atls.pairing")
print("loaded", sorted(m for m in sys.modules if m.startswith("atls.pairing")))
from atls import pairing as P
key = bytes(range(32))
wrong = bytes([P.MARKER | P.NOT_PAIRED]) + P.tag(bytes(32), b"not paired")
print("wrong tag", Drv.pairing_hook(wrong))
try:
    Drv.pairing_hook(bytes([P.MARKER | P.NOT_PAIRED]) + P.tag(key, b"not paired"))
    print("not raised")
except pairing_state.NotPaired:
    import os
    print("NotPaired", "paired.json" in os.listdir())
"""


def test_paired_device_keeps_only_the_hook(mpy, tmp_path):
    key = bytes(range(32)).hex()
    r = mpy.run(SCRIPT % key, cwd=str(tmp_path))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == [
        "unpaired False",
        "other device False",
        "paired True",
        "loaded ['atls.pairing_state']",
        "wrong tag False",
        "NotPaired False",
    ]


def test_pairing_client_still_saves_what_pairing_state_reads(tmp_path, monkeypatch):
    """CPython: the file pairing_client writes after an exchange is the one
    pairing_state reads at the next boot."""
    from atls import pairing_client, pairing_state

    monkeypatch.chdir(tmp_path)
    dev = {"device_id": "dev-01", "service": "default"}
    pairing_client._save(dev, "0013a20041000001", bytes(range(32)))
    st = json.loads((tmp_path / "paired.json").read_text())
    assert st["key"] == bytes(range(32)).hex() and st["address64"] == "0013a20041000001"
    assert pairing_state.load(dev) == st
    assert pairing_client.NotPaired is pairing_state.NotPaired
