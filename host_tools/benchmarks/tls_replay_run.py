"""Replays one recorded handshake (see tls_fixtures.py) through the firmware
client; dialect-neutral.  Used by bench_tls.py for timing and, as a script,
by the heap measurement:  micropython tls_replay_run.py FIXTURE.json
(one recorded handshake per file, as written by tls_fixtures.py)."""

import json
import sys
from binascii import unhexlify

from detrng import DetRng

from atls.tls.client import ClientConfig, TLSClient


def config(spec):
    kw = {"suites": spec["suites"], "groups": spec["groups"]}
    if "psk" in spec:
        kw["psk"] = spec["psk"]
        kw["psk_identity"] = spec["psk_identity"]
    if "ca" in spec:
        kw["ca_certs"] = [spec["ca"]]
        kw["server_name"] = "service.local"
    return ClientConfig(**kw)


def handshake(spec, flight):
    c = TLSClient(config(spec), rng=DetRng(spec["seed"]))
    c.start()
    c.data_to_send()
    c.receive(flight)
    c.data_to_send()
    if not c.connected:
        raise RuntimeError("replay did not connect")
    return c


def load(path):
    """(spec, server flight) of one recording.  Hex fields become the bytes
    the client is configured with here, before a heap measurement starts:
    the client's inputs stay in RAM, their hex text and the recording's
    statistics do not."""
    with open(path) as f:
        spec = json.load(f)
    flight = unhexlify(spec.pop("server_flight"))
    spec.pop("wire", None)
    for k in ("psk", "ca"):
        if k in spec:
            spec[k] = unhexlify(spec[k])
    if "psk_identity" in spec:
        spec["psk_identity"] = spec["psk_identity"].encode()
    return spec, flight


if __name__ == "__main__" and len(sys.argv) > 1:
    import gc

    spec, flight = load(sys.argv[1])
    gc.collect()
    handshake(spec, flight)
    print("ok")
