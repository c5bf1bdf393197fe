"""A device for the end-to-end tests: MicroPython unix port, UDP link.

argv[1] is a JSON config: host, port, mode ("psk" | "cert"), psk/psk_identity
or ca (+ cert/key), suites, mtu, count, timeout_ms.  Sends `count` numbered
messages, expects each echoed back, and prints a JSON summary as the last
line: sent, delivered, received (in order?), duplicates, counters."""

import json
import sys
from binascii import unhexlify

from atls.drivers.udp import UDPTransport
from atls.eventloop import Clock, run
from atls.link import LinkConfig, QueueFull
from atls.session import DeviceSession
from atls.tls.client import ClientConfig

c = json.load(open(sys.argv[1]))
kw = {"suites": c["suites"]} if c.get("suites") else {}
if c.get("psk"):
    kw["psk"] = unhexlify(c["psk"])
    kw["psk_identity"] = c["psk_identity"].encode()
if c.get("ca"):
    kw["ca_certs"] = [unhexlify(c["ca"])]
    kw["server_name"] = c.get("server_name")
if c.get("cert"):
    kw["client_certs"] = [unhexlify(c["cert"])]
    kw["client_key"] = unhexlify(c["key"])
link_cfg = LinkConfig(
    mtu=c.get("mtu", 1200),
    rto_ms=c.get("rto_ms", 300),
    rto_max_ms=c.get("rto_max_ms", 2000),
    handshake_timeout_ms=c.get("handshake_timeout_ms", 30000),
)
session = DeviceSession(ClientConfig(**kw), link_cfg, retry_ms=c.get("retry_ms", 500))
udp = UDPTransport(c["host"], c["port"])
count = c.get("count", 10)
state = {"next_send": 0, "received": [], "up": 0, "failed": None, "delivered": 0}


def on_event(ev):
    kind = ev[0]
    if kind == "message":
        state["received"].append(bytes(ev[1]))
    elif kind == "up":
        state["up"] += 1
    elif kind == "delivered":
        state["delivered"] += 1
    elif kind == "failed":
        state["failed"] = ev[1]


def done():
    if state["failed"] and c.get("stop_on_failure", True):
        return True
    while session.state == "up" and state["next_send"] < count:
        try:
            session.send(b"msg-%05d" % state["next_send"], clock())
        except QueueFull:
            break
        state["next_send"] += 1
    return len(state["received"]) >= count and not session.pending()


clock = Clock()
ok = run(session, udp, on_event, done, clock=clock, timeout_ms=c.get("timeout_ms", 60000))
expected = [b"msg-%05d" % i for i in range(count)]
got = state["received"]
print(
    json.dumps(
        {
            "ok": ok and got == expected,
            "failed": state["failed"],
            "ups": state["up"],
            "sent": state["next_send"],
            "delivered": state["delivered"],
            "received": len(got),
            "in_order": got == expected[: len(got)],
            "duplicates": len(got) - len(set(got)),
            "handshake_ms": session.last_handshake_ms,
            "counters": session.counters,
            "link": session.link.counters if session.link else None,
            "suite": session.suite,
        }
    )
)
