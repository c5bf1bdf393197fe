# Device side of tests/test_xbee_security.py (MicroPython unix port or
# CPython): the XBee driver over TCP to an emulated module joins an encrypted
# network with the link key (secure), then, with the NOT_PAIRED hook of a
# pairing key installed, ignores a forged notice and raises NotPaired on the
# authenticated one.  argv: port, link key hex, pairing key hex.
import sys
from binascii import unhexlify

from atls.drivers.xbee_tcp import open_tcp
from atls.pairing_client import NotPaired, not_paired_check, secure

port, link_key, pkey = int(sys.argv[1]), sys.argv[2], sys.argv[3]
drv = open_tcp("127.0.0.1", port)
drv.wait_ready(5000)
print("READY", drv.joined, drv.mtu)
wrote = secure(drv, {"link_key": link_key})
print("SECURED", wrote, drv.mtu)
joined = drv.wait_joined(15000)
print("JOINED", joined)
drv.pairing_hook = not_paired_check(unhexlify(pkey))
got = 0
try:
    for _ in range(400):
        got += len(drv.recv(50))
    print("NOTHING")
except NotPaired:
    print("NOT_PAIRED", got, drv.stats()["received"])
