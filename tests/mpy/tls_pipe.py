"""Drives the firmware TLS client over stdin/stdout so a test can pair it with
a real TLS server living in the pytest process (OpenSSL via memory BIOs).

Protocol (one line each): the client writes "OUT <hex>" for bytes to the
server, "NEW" before a second connection (resumption), "RESULT <json>" per
completed handshake and "FAIL <alert> <message>" on failure; the test answers
every OUT with "IN <hex>" (possibly empty hex, "-").
"discards" in the config: TLSClient(discards=) (stale or forged flights).
Config: argv[1] is a JSON file (make_config in host_tools/mpy/probe.py, which
the test puts on MICROPYPATH).
"""

import json
import sys
from binascii import hexlify, unhexlify

from probe import make_config  # host_tools/mpy/probe.py: the same JSON -> ClientConfig

from atls.errors import AlertError
from atls.protocol import GROUP_NAMES, SUITE_NAMES
from atls.tls.client import TLSClient


def exchange(out):
    sys.stdout.write("OUT " + (hexlify(out).decode() or "-") + "\n")
    line = sys.stdin.readline().strip()
    if not line.startswith("IN "):
        raise OSError("pipe closed")
    data = line[3:]
    return b"" if data == "-" else unhexlify(data)


def handshake(c, ticket=None):
    cl = TLSClient(make_config(c, ticket), discards=c.get("discards", 0))
    cl.start(0)
    out = cl.data_to_send()
    while True:
        data = exchange(out)
        if data:
            try:
                cl.receive(data, 0)
            except AlertError:
                alert = cl.data_to_send()
                if alert:
                    exchange(alert)
                raise
        out = cl.data_to_send()
        if cl.connected and not out and (cl.tickets or not c.get("want_ticket")):
            break
        if not data and not out:
            raise AlertError(80, "stalled: server sent nothing")
    res = {
        "suite": SUITE_NAMES[cl.suite],
        "group": GROUP_NAMES.get(cl.group),
        "mode": cl.mode,
        "hrr": cl.hrr,
        "exporter": hexlify(cl.exporter(b"application-layer-tls", b"", 56)).decode(),
        "tickets": len(cl.tickets),
        "discarded": cl.discarded,
    }
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    return cl.tickets[-1] if cl.tickets else None


def main():
    c = json.load(open(sys.argv[1]))
    try:
        ticket = handshake(c)
        if c.get("resume"):
            sys.stdout.write("NEW\n")
            c["want_ticket"] = False
            handshake(c, ticket)
    except AlertError as e:
        sys.stdout.write("FAIL %d %s\n" % (e.description, e.message))


main()
