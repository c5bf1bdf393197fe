"""Interop probe, device side: runs the firmware TLS 1.3 client under the
MicroPython unix port over a plain TCP socket.  Started by host_tools.probe,
which turns the user's options into the JSON config file given as argv[1].

Prints one line per handshake, then as its last line a JSON object for the
last handshake; exits 1 with a one-line error on failure.
"""

import json
import socket
import sys
import time
from binascii import hexlify, unhexlify

from atls.channel import key_block
from atls.errors import AlertError
from atls.protocol import GROUP_NAMES, SUITE_NAMES
from atls.tls.client import ClientConfig, TLSClient


def now_ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def make_config(c, ticket=None):
    u = unhexlify
    kw = {
        "suites": c["suites"],
        "groups": c["groups"],
        "ticket": ticket,
        "server_name": c.get("server_name"),
        "check_hostname": c.get("check_hostname", False),
    }
    if c.get("psk"):
        kw["psk"] = u(c["psk"])
        kw["psk_identity"] = c["psk_identity"].encode()
    if c.get("ca"):
        kw["ca_certs"] = [u(x) for x in c["ca"]]
    if c.get("pins"):
        kw["spki_pins"] = [u(x) for x in c["pins"]]
    if c.get("cert"):
        kw["client_certs"] = [u(x) for x in c["cert"]]
        kw["client_key"] = u(c["key"])
    return ClientConfig(**kw)


def handshake(c, ticket=None):
    addr = socket.getaddrinfo(c["host"], c["port"], 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(c.get("timeout", 10))
    s.connect(addr)
    t0 = now_ms()
    cl = TLSClient(make_config(c, ticket))
    cl.start(now_ms())
    sent = recvd = 0
    try:
        out = cl.data_to_send()
        s.send(out)
        sent += len(out)
        while not cl.connected:
            data = s.recv(4096)
            if not data:
                raise OSError("server closed the connection")
            recvd += len(data)
            try:
                cl.receive(data, now_ms())
            finally:
                out = cl.data_to_send()
                if out:
                    s.send(out)
                    sent += len(out)
        ms = now_ms() - t0
        if c.get("want_ticket"):
            s.settimeout(2)
            deadline = now_ms() + 3000
            while not cl.tickets and now_ms() < deadline:
                try:
                    data = s.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                cl.receive(data, now_ms())
        result = {
            "version": "TLSv1.3",
            "suite": SUITE_NAMES[cl.suite],
            "group": GROUP_NAMES.get(cl.group),
            "mode": cl.mode,
            "hrr": cl.hrr,
            "exporter": hexlify(key_block(cl)).decode(),
            "handshake_ms": ms,
            "bytes_sent": sent,
            "bytes_received": recvd,
        }
        cl.close()
        s.send(cl.data_to_send())
        return result, (cl.tickets[-1] if cl.tickets else None)
    finally:
        s.close()


def main():
    c = json.load(open(sys.argv[1]))
    try:
        res, ticket = handshake(c)
        if c.get("resume"):
            print(json.dumps(res))
            if ticket is None:
                raise OSError("no session ticket received: cannot resume")
            res, _ = handshake(c, ticket)
    except AlertError as e:
        print("probe failed: TLS alert %d (%s)" % (e.description, e.message))
        sys.exit(1)
    except OSError as e:
        print("probe failed: %s" % (e,))
        sys.exit(1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
