"""atls.crypto.p256.prepare() (issue 17): DeviceSession.preload() allocates the
native P-256 code's buffers (a 2,560-byte table among them) at boot.  On the
emulated Pico a certificate handshake failed with "MemoryError ... allocating
2560 bytes" while most of the heap was free, in pieces: here the heap is cut
into 1 KiB holes before signing and verifying, once without prepare() (the
MemoryError the device saw) and once with it (unix port, native x64 code); and
once with the workspace that atls.buffers.early() reserved before anything was
imported (what atls.supervisor.main does at boot), without prepare()."""

import json

import pytest
from test_native_x25519 import native_micropython

SCRIPT = r"""
import gc, sys
if sys.argv[1] == "early":  # what atls.supervisor.main does first (atls.buffers)
    from atls import buffers
    print(buffers.early(sys.argv[2], sys.argv[3]))
from atls.crypto import p256
from atls.crypto.p256_sign import ecdsa_sign
priv = bytes(range(1, 33))
if sys.argv[1] == "prepare":
    p256.prepare()
holes = []
try:
    while True:
        holes.append(bytearray(1024))
except MemoryError:
    pass
for i in range(0, len(holes), 2):
    holes[i] = None
gc.collect()
try:
    sig = ecdsa_sign(priv, b"reading")
    p256.ecdsa_verify(p256.public_key(priv), b"reading", sig)  # raises when it fails
    print("verified")
except MemoryError as e:
    print("MemoryError", e)
"""


@pytest.fixture(scope="module")
def mpy_native(tmp_path_factory):
    return native_micropython(tmp_path_factory.mktemp("native-p256-prepare"))


def test_prepared_buffers_survive_a_fragmented_heap(mpy_native):
    cold = mpy_native.run(SCRIPT, args=["cold"], heapsize="96K")
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split()[0] == "MemoryError", cold.stdout
    warm = mpy_native.run(SCRIPT, args=["prepare"], heapsize="96K")
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split() == ["verified"], warm.stdout


def test_workspace_reserved_before_the_imports_survives_a_fragmented_heap(mpy_native, tmp_path):
    board, dev = tmp_path / "board_config.json", tmp_path / "device.json"
    board.write_text(json.dumps({"name": "unix", "link": {"type": "udp"}}))
    dev.write_text(json.dumps({"device_id": "d", "tls": {"ca": "00", "server_name": "s"}}))
    res = mpy_native.run(SCRIPT, args=["early", str(board), str(dev)], heapsize="96K")
    assert res.returncode == 0, res.stderr
    # certificate mode with the default groups: X25519's workspace too (atls.buffers)
    assert res.stdout.splitlines() == ["['x25519', 'p256']", "verified"], res.stdout
