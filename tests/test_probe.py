"""`make probe` against an independent TLS 1.3 server over TCP: OpenSSL's
s_server prints the keying material it exports, and the probe (firmware client
under the MicroPython unix port) must print the same bytes."""

import json
import re
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN
from host_tools import pki
from host_tools.toolchain import free_port

OPENSSL = "openssl"


class SServer:
    def __init__(self, args):
        self.port = free_port(socket.SOCK_STREAM)
        cmd = [
            OPENSSL,
            "s_server",
            "-accept",
            str(self.port),
            "-tls1_3",
            "-keymatexport",
            EXPORTER_LABEL.decode(),
            "-keymatexportlen",
            str(KEY_BLOCK_LEN),
        ] + args
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.head = []
        for line in self.proc.stdout:  # s_server says ACCEPT once it listens
            self.head.append(line)
            if line.startswith("ACCEPT"):
                break

    def finish(self):
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return "".join(self.head) + out


def run_probe(port, *args):
    cmd = [sys.executable, "-m", "host_tools.probe", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def keying_material(text):
    return [m.lower() for m in re.findall(r"Keying material:\s*([0-9A-Fa-f]+)", text)]


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256"])
def test_probe_psk_matches_s_server_exporter(suite):
    psk = "00112233445566778899aabbccddeeff"
    srv = SServer(
        [
            "-nocert",
            "-psk_identity",
            "device-1",
            "-psk",
            psk,
            "-ciphersuites",
            suite,
            "-naccept",
            "1",
        ]
    )
    res = run_probe(srv.port, "--psk-id", "device-1", "--psk", psk, "--suites", suite)
    out = srv.finish()
    assert res.returncode == 0, res.stdout + res.stderr
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["version"] == "TLSv1.3" and last["suite"] == suite and last["mode"] == "psk_dhe"
    assert len(bytes.fromhex(last["exporter"])) == 56
    assert last["exporter"] in keying_material(out)


def test_probe_certificate_mode_and_groups(tmp_path):
    ca = pki.make_ca("Probe CA")
    leaf = pki.make_cert("localhost", issuer=ca, san=["localhost"])
    (tmp_path / "ca.pem").write_bytes(pki.pem(ca.cert))
    (tmp_path / "cert.pem").write_bytes(pki.pem(leaf.cert))
    (tmp_path / "key.pem").write_bytes(pki.pem(leaf.key))
    srv = SServer(
        [
            "-cert",
            str(tmp_path / "cert.pem"),
            "-key",
            str(tmp_path / "key.pem"),
            "-groups",
            "P-256",
            "-naccept",
            "1",
        ]
    )
    res = run_probe(
        srv.port,
        "--ca",
        str(tmp_path / "ca.pem"),
        "--server-name",
        "localhost",
        "--check-hostname",
        "--groups",
        "x25519,secp256r1",
    )
    out = srv.finish()
    assert res.returncode == 0, res.stdout + res.stderr
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["mode"] == "cert" and last["group"] == "secp256r1" and last["hrr"] is True
    assert last["exporter"] in keying_material(out)


def test_probe_resume(tmp_path):
    psk = "000102030405060708090a0b0c0d0e0f"
    srv = SServer(["-nocert", "-psk_identity", "device-1", "-psk", psk, "-naccept", "2"])
    res = run_probe(srv.port, "--psk-id", "device-1", "--psk", psk, "--resume")
    out = srv.finish()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(x) for x in res.stdout.strip().splitlines() if x.startswith("{")]
    assert [x["mode"] for x in lines] == ["psk_dhe", "resumed"]
    km = keying_material(out)
    assert lines[0]["exporter"] in km and lines[1]["exporter"] in km


def test_probe_wrong_psk_exits_nonzero_with_one_line():
    srv = SServer(["-nocert", "-psk_identity", "device-1", "-psk", "00" * 16, "-naccept", "1"])
    res = run_probe(srv.port, "--psk-id", "device-1", "--psk", "11" * 16)
    srv.finish()
    assert res.returncode != 0
    msg = res.stdout.strip().splitlines()[-1]
    assert msg.startswith("probe failed:") and "alert" in msg


def test_probe_usage_errors():
    res = run_probe(1, "--psk", "zz", "--psk-id", "x")
    assert res.returncode == 2 and "PSK must be hex" in res.stderr
    res = run_probe(1)
    assert res.returncode == 2 and "give PSK_ID and PSK, or CA" in res.stderr
    res = run_probe(1, "--psk", "00" * 16, "--psk-id", "x", "--suites", "TLS_FOO")
    assert res.returncode == 2 and "unknown suite" in res.stderr


class StrictServer:
    """A TLS 1.3 server that insists on RFC 6066 §3 (OpenSSL through
    pyOpenSSL over a real socket, in a thread): an IP literal as SNI is
    aborted with illegal_parameter (tests/test_tls_sni.py); one handshake."""

    def __init__(self, leaf):
        import threading

        from OpenSSL import SSL
        from test_tls_sni import strict_rfc6066

        from host_tools.service.tls_engine import ServerConfig

        self.seen, self.exported, self.error = [], None, None
        ctx = strict_rfc6066(ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build(), self.seen)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]

        def serve():
            try:
                s, _ = self.sock.accept()
                s.setblocking(True)  # pyOpenSSL: a timeout would make it non-blocking
                conn = SSL.Connection(ctx, s)
                conn.set_accept_state()
                conn.do_handshake()
                self.exported = conn.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN).hex()
                try:
                    conn.recv(1)  # the probe's close_notify
                except SSL.Error:
                    pass
                s.close()
            except Exception as e:  # reported by the test
                self.error = e

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def finish(self):
        self.thread.join(60)
        self.sock.close()


def test_make_probe_host_ip_sends_no_sni_to_a_strict_rfc6066_server(tmp_path):
    """Issue 13 item 6: `make probe HOST=127.0.0.1 CA=...` against a server
    that aborts on an IP-literal SNI completes; the name is checked against
    the certificate's iPAddress SAN."""
    import ipaddress

    ca = pki.make_ca("Probe CA")
    leaf = pki.make_cert("service", issuer=ca, san=[ipaddress.ip_address("127.0.0.1")])
    (tmp_path / "ca.pem").write_bytes(pki.pem(ca.cert))
    srv = StrictServer(leaf)
    res = run_probe(srv.port, "--ca", str(tmp_path / "ca.pem"), "--check-hostname")
    srv.finish()
    assert res.returncode == 0, res.stdout + res.stderr + repr(srv.error)
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["mode"] == "cert" and srv.seen == [None]
    assert last["exporter"] == srv.exported
