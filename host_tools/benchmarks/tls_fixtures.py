"""Records real TLS 1.3 server flights (OpenSSL via memory BIOs) for a
deterministic firmware client, so the client's full handshake work can be
replayed under MicroPython without a server: `bench_tls.py` and the heap
measurements use them.  CPython only.

    python -m host_tools.benchmarks.tls_fixtures OUTDIR    (one NAME.json per case)
"""

import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from atls.channel import key_block
from atls.protocol import SECP256R1, TLS_AES_128_CCM_8_SHA256, TLS_AES_128_CCM_SHA256, X25519
from atls.tls.client import ClientConfig, TLSClient
from host_tools import pki
from host_tools.benchmarks.detrng import DetRng
from host_tools.service.tls_engine import ServerConfig, ServerConnection

PSK = bytes(range(1, 33))
CCM = TLS_AES_128_CCM_SHA256
CCM8 = TLS_AES_128_CCM_8_SHA256


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def client_kwargs(spec):
    """ClientConfig keyword arguments from a JSON-able spec."""
    kw = {"suites": spec["suites"], "groups": spec["groups"]}
    if "psk" in spec:
        kw["psk"] = bytes.fromhex(spec["psk"])
        kw["psk_identity"] = spec["psk_identity"].encode()
    if "ca" in spec:
        kw["ca_certs"] = [bytes.fromhex(spec["ca"])]
        kw["server_name"] = "service.local"
    return kw


def record(name, spec, server_cfg):
    client = TLSClient(ClientConfig(**client_kwargs(spec)), rng=DetRng(name))
    client.start()
    ch = client.data_to_send()
    server = ServerConnection(server_cfg.build())
    flight = server.feed(ch)
    client.receive(flight)
    fin = client.data_to_send()
    server.feed(fin)
    assert client.connected and server.done
    assert key_block(client) == server.export()
    spec = dict(
        spec,
        seed=name,
        server_flight=flight.hex(),
        wire={"client_hello": len(ch), "server_flight": len(flight), "client_finished": len(fin)},
    )
    return spec


def build():
    root = pki.make_ca("Bench Root", key_type="p256")
    inter = pki.make_cert("Bench Intermediate", issuer=root, key_type="p256", is_ca=True)
    leaf = pki.make_cert("service.local", issuer=inter, key_type="p256")
    rsa_ca = pki.make_ca("Bench RSA CA", key_type="rsa2048")
    rsa_leaf = pki.make_cert("service.local", issuer=rsa_ca, key_type="rsa2048")
    ed_ca = pki.make_ca("Bench Ed CA", key_type="ed25519")
    ed_leaf = pki.make_cert("service.local", issuer=ed_ca, key_type="ed25519")
    psk = {"psk": PSK.hex(), "psk_identity": "device-1"}
    cases = {
        "psk_x25519": (
            dict(psk, suites=[CCM8], groups=[X25519]),
            ServerConfig(psks={b"device-1": PSK}),
        ),
        "psk_p256": (
            dict(psk, suites=[CCM8], groups=[SECP256R1]),
            ServerConfig(psks={b"device-1": PSK}),
        ),
        "cert_p256_chain2": (
            dict(ca=_der(root.cert).hex(), suites=[CCM], groups=[X25519]),
            ServerConfig(cert_chain=[leaf.cert, inter.cert], key=leaf.key),
        ),
        "cert_rsa2048": (
            dict(ca=_der(rsa_ca.cert).hex(), suites=[CCM], groups=[X25519]),
            ServerConfig(cert_chain=[rsa_leaf.cert], key=rsa_leaf.key),
        ),
        "cert_ed25519": (
            dict(ca=_der(ed_ca.cert).hex(), suites=[CCM], groups=[X25519]),
            ServerConfig(cert_chain=[ed_leaf.cert], key=ed_leaf.key),
        ),
    }
    return {name: record(name, spec, cfg) for name, (spec, cfg) in cases.items()}


def write(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = build()
    for name, spec in cases.items():
        (out_dir / (name + ".json")).write_text(json.dumps(spec))
    return cases


def main(argv=None):
    argv = argv if argv is not None else sys.argv[1:]
    out = argv[0] if argv else "build/tls_fixtures"
    write(out)
    print("wrote %s" % out)


if __name__ == "__main__":
    main()
