"""`make probe`: run the firmware TLS 1.3 client (MicroPython unix port)
against any TLS 1.3 server over TCP and print what was negotiated.

    make probe HOST=example.net PORT=443 CA=ca.pem
    make probe HOST=127.0.0.1 PORT=4433 PSK_ID=dev1 PSK=00112233... RESUME=1

SERVER_NAME (default HOST) is sent as SNI unless it is an IPv4/IPv6 literal
(RFC 6066 §3 forbids those: nothing is sent); --check-hostname then matches
the certificate's iPAddress SAN.

The last line of output is a JSON object for the last handshake: version,
suite, group, mode (psk_dhe, cert or resumed) and exporter (the ATLS key
block, TLS-Exporter(atls.protocol.EXPORTER_LABEL, "", KEY_BLOCK_LEN), in hex).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atls import protocol
from host_tools.toolchain import FIRMWARE, ROOT, ToolMissing, micropython_binary

SUITES = protocol.SUITES  # the firmware client's suites: name -> code point
# group names -> code point, with OpenSSL's names for P-256
GROUPS = dict(protocol.GROUPS, **{"P-256": protocol.SECP256R1, "prime256v1": protocol.SECP256R1})


class ProbeError(Exception):
    pass


def _names(value, table, what):
    out = []
    for name in [v.strip() for v in value.split(",") if v.strip()]:
        if name not in table:
            raise ProbeError("unknown %s %r (known: %s)" % (what, name, ", ".join(table)))
        out.append(table[name])
    if not out:
        raise ProbeError("empty %s list" % what)
    return out


def _pem_certs(path):
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ProbeError("cannot read %s: %s" % (path, e.strerror))
    certs = x509.load_pem_x509_certificates(data)
    return [c.public_bytes(serialization.Encoding.DER).hex() for c in certs]


def build_config(a):
    c = {
        "host": a.host,
        "port": a.port,
        "suites": _names(a.suites, SUITES, "suite"),
        "groups": _names(a.groups, GROUPS, "group"),
        "resume": a.resume,
        "want_ticket": a.resume,
        "server_name": a.server_name or a.host,
        "check_hostname": bool(a.check_hostname),
        "timeout": a.timeout,
    }
    if a.psk or a.psk_id:
        if not (a.psk and a.psk_id):
            raise ProbeError("PSK and PSK_ID go together")
        try:
            key = bytes.fromhex(a.psk)
        except ValueError:
            raise ProbeError("PSK must be hex")
        if not 16 <= len(key) <= 64:
            raise ProbeError("PSK must be 16..64 bytes")
        c["psk"], c["psk_identity"] = key.hex(), a.psk_id
    if a.ca:
        c["ca"] = _pem_certs(a.ca)
    if not (a.psk or a.ca):
        raise ProbeError("give PSK_ID and PSK, or CA (a PEM trust anchor)")
    if a.cert or a.key:
        if not (a.cert and a.key):
            raise ProbeError("CERT and KEY go together")
        c["cert"] = _pem_certs(a.cert)
        key = serialization.load_pem_private_key(Path(a.key).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ProbeError("KEY must be an ECDSA P-256 private key")
        c["key"] = key.private_numbers().private_value.to_bytes(32, "big").hex()
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="ATLS interop probe (firmware TLS client under MicroPython)"
    )
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--psk-id", dest="psk_id")
    ap.add_argument("--psk")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument(
        "--suites", default="TLS_AES_128_GCM_SHA256,TLS_AES_128_CCM_SHA256,TLS_AES_128_CCM_8_SHA256"
    )
    ap.add_argument("--groups", default="x25519,secp256r1")
    ap.add_argument("--server-name")
    ap.add_argument("--check-hostname", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--heapsize", help="MicroPython heap limit, e.g. 64K")
    a = ap.parse_args(argv)
    try:
        cfg = build_config(a)
        mpy = micropython_binary()
    except (ProbeError, ToolMissing) as e:
        print("probe: %s" % e, file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen", str(FIRMWARE)])
    cmd = [mpy]
    if a.heapsize:
        cmd += ["-X", "heapsize=" + a.heapsize]
    cmd += [str(ROOT / "host_tools" / "mpy" / "probe.py"), f.name]
    try:
        return subprocess.call(cmd, env=env)
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    sys.exit(main())
