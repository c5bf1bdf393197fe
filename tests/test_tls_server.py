"""host_tools/service/tls_engine.py (OpenSSL through memory BIOs) and host_tools/pki.py.

Interop is checked against an independent client: the system's
`openssl s_client` (/usr/bin/openssl, a separate OpenSSL build and process)
talks TCP on 127.0.0.1 to a pump that carries its bytes to and from a
ServerConnection.  Both ends print / compute
TLS-Exporter("application-layer-tls", "", 56) (RFC 8446 §7.5) and must agree.
Host-side CPython only: nothing here runs under MicroPython.
"""

import functools
import os
import random
import re
import shutil
import socket
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from atls.protocol import (
    EXPORTER_LABEL,
    KEY_BLOCK_LEN,
    SECP256R1,
    TLS_AES_128_GCM_SHA256,
    X25519,
)
from host_tools import pki
from host_tools.service.tls_engine import (
    ALERTS,
    ServerConnection,
    TLSError,
    openssl_version,
)
from host_tools.service.tls_engine import ServerConfig as _ServerConfig


def ServerConfig(*args, **kw):
    """s_client runs close with close_notify, which needs the record layer in
    step after the handshake: keep OpenSSL's 2 tickets unless a test says."""
    kw.setdefault("tickets", 2)
    return _ServerConfig(*args, **kw)


OPENSSL = "/usr/bin/openssl" if os.path.exists("/usr/bin/openssl") else shutil.which("openssl")
OPENSSL_MISSING = (
    "the openssl CLI is missing: these interop tests drive `openssl s_client`; install it "
    "(Debian/Ubuntu: sudo apt-get install openssl; Fedora: sudo dnf install openssl; "
    "macOS: brew install openssl@3) - a missing CLI is a failure, not a skip"
)


def needs_openssl(test):
    """Fails the test loudly (never skips it) when the openssl CLI is missing:
    a skipped interop test would hide exactly what it is there to catch."""

    @functools.wraps(test)
    def run(*args, **kw):
        if OPENSSL is None:
            pytest.fail(OPENSSL_MISSING, pytrace=False)
        return test(*args, **kw)

    return run


pytestmark = pytest.mark.timeout(60)

SUITES3 = ("TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")
KEYMAT = ["-keymatexport", EXPORTER_LABEL.decode(), "-keymatexportlen", str(KEY_BLOCK_LEN)]
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


# ---------------------------------------------------------------------------
# s_client over TCP loopback, pumped into a ServerConnection


class ClientRun:
    def __init__(self, rc, out, err, server_error):
        self.rc = rc
        self.out = out
        self.err = err
        self.server_error = server_error

    @property
    def chain_length(self):
        """Certificates the server sent, from s_client's "Certificate chain"."""
        return len(re.findall(r"^\s*\d+ s:", self.out, re.M))

    @property
    def keymat(self):
        m = re.search(r"Keying material:\s*([0-9A-Fa-f]+)", self.out)
        return bytes.fromhex(m.group(1)) if m else None


def s_client(conn, args, timeout=15):
    """Run `openssl s_client args` against `conn`; after the handshake (or a
    TLSError, whose alert bytes are delivered) send close_notify and hang up."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(timeout)
    port = lsock.getsockname()[1]
    proc = subprocess.Popen(
        [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-ign_eof"] + list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server_error = None
    try:
        sock, _ = lsock.accept()
        sock.settimeout(timeout)
        try:
            while not conn.done:
                data = sock.recv(65536)
                if not data:
                    break
                try:
                    out = conn.feed(data)
                except TLSError as exc:
                    server_error = exc
                    sock.sendall(exc.outgoing)
                    break
                if out:
                    sock.sendall(out)
            if conn.done and conn.records_usable:
                sock.sendall(conn.close())
        finally:
            sock.close()
        out, err = proc.communicate(timeout=timeout)
    finally:
        lsock.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return ClientRun(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), server_error
    )


def psk_args(identity, key, suite="TLS_AES_128_GCM_SHA256"):
    return [
        "-tls1_3",
        "-psk_identity",
        identity.decode(),
        "-psk",
        key.hex(),
        "-ciphersuites",
        suite,
    ] + KEYMAT


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A P-256 root with server leaves of each key type, an intermediate,
    device (client) certificates from the root and from an unrelated CA;
    PEM files for s_client."""
    d = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca("Test Root CA", key_type="p256")
    other = pki.make_ca("Other CA", key_type="p256")
    inter = pki.make_cert("Issuing CA", issuer=ca, is_ca=True, path_len=0)
    c = {"dir": d, "ca": ca, "other": other, "inter": inter}
    for kt in pki.KEY_TYPES:
        c["server_" + kt] = pki.make_cert("service.local", issuer=ca, key_type=kt)
    c["server_chain"] = pki.make_cert("service.local", issuer=inter)
    c["device"] = pki.make_cert("device-1", issuer=ca, client=True)
    c["rogue"] = pki.make_cert("device-1", issuer=other, client=True)
    for name in ("ca", "other", "device", "rogue"):
        (d / (name + ".pem")).write_bytes(pki.pem(c[name]))
    for name in ("device", "rogue"):
        (d / (name + ".key")).write_bytes(pki.pem(c[name].key))
    return c


def cert_args(certs, cafile="ca.pem"):
    return [
        "-tls1_3",
        "-CAfile",
        str(certs["dir"] / cafile),
        "-verify_return_error",
        "-verify_hostname",
        "service.local",
        "-servername",
        "service.local",
    ] + KEYMAT


# ---------------------------------------------------------------------------
# Interop with s_client


@needs_openssl
@pytest.mark.parametrize("suite", SUITES3)
def test_psk_dhe_interop_all_suites_rfc8446_s4_2_9(suite):
    """External PSK (RFC 8446 §4.2.11) with psk_dhe_ke (§4.2.9) for each suite;
    exporter (§7.5) equal on both sides."""
    ident, key = pki.make_psk(b"device-1")
    conn = ServerConnection(ServerConfig(psks={ident: key, b"other": os.urandom(32)}).build())
    extra = ["-cipher", "DEFAULT:@SECLEVEL=0"] if "CCM_8" in suite else []
    run = s_client(conn, psk_args(ident, key, suite) + extra)
    assert run.server_error is None and run.rc == 0, run.err
    info = conn.info()
    assert info == {
        "version": "TLSv1.3",
        "suite": suite,
        "group": "x25519",
        "mode": "psk_dhe",
        "psk_identity": ident,
        "client_cert": None,
        "hrr": False,
    }
    assert run.keymat == conn.export() and len(run.keymat) == 56
    assert ("Cipher is %s" % suite) in run.out
    # a different label / context gives different keys (§7.5)
    assert conn.export(b"other-label") != conn.export()
    assert conn.export(context=b"ctx") != conn.export()
    assert conn.export(context=b"") == conn.export(context=None)


@needs_openssl
def test_psk_with_p256_key_share_and_64_byte_key():
    ident, key = pki.make_psk(b"d2", length=64)
    conn = ServerConnection(ServerConfig(psks={ident: key}).build())
    run = s_client(conn, psk_args(ident, key) + ["-groups", "P-256"])
    assert run.rc == 0, run.err
    assert conn.info()["group"] == "secp256r1" and conn.info()["mode"] == "psk_dhe"
    assert run.keymat == conn.export()


@needs_openssl
def test_ccm8_needs_seclevel0_on_the_server_only():
    """OpenSSL rates CCM_8 (64-bit tag) at 64 bits: our server must add
    @SECLEVEL=0 (build() does); the 3.0 s_client offers it without."""
    ident, key = pki.make_psk(b"d")
    conn = ServerConnection(
        ServerConfig(psks={ident: key}, suites=("TLS_AES_128_CCM_8_SHA256",)).build()
    )
    run = s_client(conn, psk_args(ident, key, "TLS_AES_128_CCM_8_SHA256"))
    assert run.rc == 0, run.err
    assert conn.info()["suite"] == "TLS_AES_128_CCM_8_SHA256"


@needs_openssl
def test_server_suite_preference_order():
    ident, key = pki.make_psk(b"d")
    cfg = ServerConfig(
        psks={ident: key}, suites=("TLS_AES_128_CCM_SHA256", "TLS_AES_128_GCM_SHA256")
    )
    conn = ServerConnection(cfg.build())
    run = s_client(conn, psk_args(ident, key, "TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256"))
    assert run.rc == 0, run.err
    assert conn.info()["suite"] == "TLS_AES_128_CCM_SHA256"


@needs_openssl
@pytest.mark.parametrize(
    "key_type,sig", [("p256", "ECDSA"), ("rsa2048", "RSA-PSS"), ("ed25519", "ed25519")]
)
def test_cert_mode_interop(certs, key_type, sig):
    """Certificate authentication (RFC 8446 §4.4.2-4.4.3); RSA uses
    rsa_pss_rsae_sha256 (§4.2.3)."""
    leaf = certs["server_" + key_type]
    conn = ServerConnection(ServerConfig(cert_chain=leaf.chain, key=leaf.key).build())
    run = s_client(conn, cert_args(certs))
    assert run.server_error is None and run.rc == 0, run.err
    assert "Verify return code: 0 (ok)" in run.out
    assert "Peer signature type: %s" % sig in run.out
    if key_type == "rsa2048":
        assert "Peer signing digest: SHA256" in run.out
    info = conn.info()
    assert info["mode"] == "cert" and info["psk_identity"] is None and info["hrr"] is False
    assert info["group"] == "x25519" and info["suite"] == "TLS_AES_128_GCM_SHA256"
    assert run.keymat == conn.export()


@needs_openssl
def test_cert_chain_with_intermediate_is_sent(certs):
    leaf = certs["server_chain"]
    assert leaf.chain == [leaf.cert, certs["inter"].cert]
    conn = ServerConnection(ServerConfig(cert_chain=leaf.chain, key=leaf.key).build())
    run = s_client(conn, cert_args(certs))
    assert run.rc == 0, run.err
    assert "Verify return code: 0 (ok)" in run.out and run.keymat == conn.export()
    assert run.chain_length == 2


@needs_openssl
def test_client_rejects_server_from_unknown_ca(certs):
    """s_client trusting another CA aborts with unknown_ca (§6.2); the server
    reports the peer's alert."""
    leaf = certs["server_p256"]
    conn = ServerConnection(ServerConfig(cert_chain=leaf.chain, key=leaf.key).build())
    run = s_client(conn, cert_args(certs, cafile="other.pem"))
    assert run.rc != 0 and not conn.done
    assert isinstance(run.server_error, TLSError)
    assert run.server_error.peer_alert == 48 and run.server_error.alert is None


@needs_openssl
def test_client_certificate_required_and_accepted(certs):
    leaf = certs["server_p256"]
    cfg = ServerConfig(cert_chain=leaf.chain, key=leaf.key, client_ca=[certs["ca"].cert])
    conn = ServerConnection(cfg.build())
    d = certs["dir"]
    run = s_client(
        conn, cert_args(certs) + ["-cert", str(d / "device.pem"), "-key", str(d / "device.key")]
    )
    assert run.server_error is None and run.rc == 0, run.err
    info = conn.info()
    assert info["mode"] == "cert" and info["client_cert"] == certs["device"].cert
    assert run.keymat == conn.export()
    # the client-CA store must not leak into the server's chain (no auto-chain)
    assert run.chain_length == 1


@needs_openssl
def test_client_certificate_missing_is_rejected_rfc8446_s4_4_2_4(certs):
    """No client certificate: certificate_required alert (§4.4.2.4), delivered
    encrypted (handshake traffic key) so s_client reports it."""
    leaf = certs["server_p256"]
    cfg = ServerConfig(cert_chain=leaf.chain, key=leaf.key, client_ca=[certs["ca"].cert])
    conn = ServerConnection(cfg.build())
    run = s_client(conn, cert_args(certs))
    err = run.server_error
    assert isinstance(err, TLSError) and not conn.done
    assert err.alert == 116 and err.alert_name == "certificate_required"
    assert err.outgoing[:3] == b"\x17\x03\x03" and len(err.outgoing) == 5 + 2 + 1 + 16
    assert run.rc != 0 and "alert certificate required" in run.err
    with pytest.raises(TLSError):  # a failed connection stays failed
        conn.feed(b"")


@needs_openssl
def test_client_certificate_from_other_ca_is_rejected(certs):
    leaf = certs["server_p256"]
    cfg = ServerConfig(cert_chain=leaf.chain, key=leaf.key, client_ca=[certs["ca"].cert])
    conn = ServerConnection(cfg.build())
    d = certs["dir"]
    run = s_client(
        conn, cert_args(certs) + ["-cert", str(d / "rogue.pem"), "-key", str(d / "rogue.key")]
    )
    err = run.server_error
    assert isinstance(err, TLSError) and not conn.done
    assert err.alert == 48 and "verify failed" in err.reason
    assert run.rc != 0 and "alert unknown ca" in run.err


@needs_openssl
@pytest.mark.parametrize("psk", [False, True], ids=["cert", "psk"])
def test_forced_hello_retry_request_rfc8446_s4_1_4(certs, psk):
    """Server supports secp256r1 only; s_client sends an x25519 share first:
    HelloRetryRequest, then a P-256 handshake."""
    leaf = certs["server_p256"]
    ident, key = pki.make_psk(b"d")
    cfg = ServerConfig(
        cert_chain=leaf.chain,
        key=leaf.key,
        groups=("secp256r1",),
        psks={ident: key} if psk else None,
    )
    conn = ServerConnection(cfg.build())
    args = cert_args(certs) + ["-groups", "X25519:P-256"]
    if psk:
        args += ["-psk_identity", ident.decode(), "-psk", key.hex()]
    run = s_client(conn, args)
    assert run.rc == 0, run.err
    info = conn.info()
    assert info["hrr"] is True and info["group"] == "secp256r1"
    assert info["mode"] == ("psk_dhe" if psk else "cert")
    assert run.keymat == conn.export()


@needs_openssl
@pytest.mark.parametrize("client_auth", [False, True])
def test_resumption_with_tickets_rfc8446_s4_6_1(certs, tmp_path, client_auth):
    """tickets=2: s_client stores a ticket (-sess_out) and resumes with it
    (-sess_in) on the same context: mode "resumed", fresh exporter."""
    leaf = certs["server_p256"]
    cfg = ServerConfig(
        cert_chain=leaf.chain,
        key=leaf.key,
        tickets=2,
        client_ca=[certs["ca"].cert] if client_auth else None,
    )
    ctx = cfg.build()
    sess = tmp_path / "sess.pem"
    d = certs["dir"]
    extra = ["-cert", str(d / "device.pem"), "-key", str(d / "device.key")] if client_auth else []
    first = ServerConnection(ctx)
    run1 = s_client(first, cert_args(certs) + extra + ["-sess_out", str(sess)])
    assert run1.rc == 0, run1.err
    assert first.info()["mode"] == "cert" and sess.exists()
    second = ServerConnection(ctx)
    run2 = s_client(second, cert_args(certs) + extra + ["-sess_in", str(sess)])
    assert run2.rc == 0, run2.err
    assert "Reused, TLSv1.3" in run2.out
    info = second.info()
    assert info["mode"] == "resumed" and info["psk_identity"] is None
    assert info["group"] == "x25519"  # psk_dhe_ke resumption
    assert info["client_cert"] == (certs["device"].cert if client_auth else None)
    assert run2.keymat == second.export() != first.export()
    # a different context (other ticket keys) does not resume
    third = ServerConnection(cfg.build())
    run3 = s_client(third, cert_args(certs) + extra + ["-sess_in", str(sess)])
    assert run3.rc == 0 and third.info()["mode"] == "cert"


@needs_openssl
@pytest.mark.parametrize("tickets", [0, 1, 2])
def test_ticket_count(certs, tickets):
    """OpenSSL sends 2 tickets; fewer are withheld from the output, after
    which the TLS record layer is not used again (no close_notify)."""
    leaf = certs["server_p256"]
    conn = ServerConnection(
        _ServerConfig(cert_chain=leaf.chain, key=leaf.key, tickets=tickets).build()
    )
    run = s_client(conn, cert_args(certs) + ["-msg"])
    assert run.out.count(", NewSessionTicket") == tickets
    assert conn.records_usable == (tickets == 2)
    if tickets == 2:
        assert run.rc == 0, run.err
    else:
        assert "unexpected eof" in run.err  # hung up without close_notify


def test_ticket_count_out_of_range():
    with pytest.raises(ValueError, match="tickets must be 0..2"):
        _ServerConfig(psks={}, tickets=3)


@needs_openssl
def test_wrong_psk_fails_cleanly_on_both_sides():
    """Same identity, other key: the binder (§4.2.11.2) fails, decrypt_error
    alert in plaintext; nothing secret in the error."""
    ident, key = pki.make_psk(b"device-1")
    conn = ServerConnection(ServerConfig(psks={ident: key}).build())
    wrong = bytes(b ^ 1 for b in key)
    run = s_client(conn, psk_args(ident, wrong))
    err = run.server_error
    assert isinstance(err, TLSError) and not conn.done
    assert err.alert == 51 and "binder" in err.reason
    assert err.outgoing == bytes.fromhex("15030300020233")
    assert run.rc != 0 and "alert decrypt error" in run.err
    for secret in (key, wrong):
        assert secret.hex() not in str(err) and secret.hex().upper() not in str(err)


@needs_openssl
def test_unknown_identity_without_certificate_fails_with_alert():
    ident, key = pki.make_psk(b"device-1")
    conn = ServerConnection(ServerConfig(psks={b"someone-else": key}).build())
    run = s_client(conn, psk_args(ident, key))
    err = run.server_error
    assert isinstance(err, TLSError) and err.alert == 40
    assert err.outgoing == bytes.fromhex("15030300020228")
    assert run.rc != 0


@needs_openssl
def test_psk_table_is_consulted_live():
    """The service adds devices after build(): the same context sees them; a
    corrupt entry fails the handshake cleanly (internal_error), no exception."""
    table = {}
    ctx = ServerConfig(psks=table).build()
    ident, key = pki.make_psk(b"late-device")
    run = s_client(ServerConnection(ctx), psk_args(ident, key))
    assert run.server_error is not None and run.server_error.alert == 40
    table[ident] = key
    conn = ServerConnection(ctx)
    run = s_client(conn, psk_args(ident, key))
    assert run.rc == 0 and conn.info()["psk_identity"] == ident
    assert run.keymat == conn.export()
    table[ident] = b"short"
    run = s_client(ServerConnection(ctx), psk_args(ident, key))
    err = run.server_error
    assert err is not None and err.alert == 80 and "invalid PSK table entry" in err.reason
    assert run.rc != 0


@needs_openssl
def test_unknown_identity_falls_back_to_certificate(certs):
    leaf = certs["server_p256"]
    ident, key = pki.make_psk(b"device-1")
    conn = ServerConnection(
        ServerConfig(psks={b"someone-else": key}, cert_chain=leaf.chain, key=leaf.key).build()
    )
    run = s_client(conn, cert_args(certs) + ["-psk_identity", "device-1", "-psk", key.hex()])
    assert run.rc == 0, run.err
    assert conn.info()["mode"] == "cert" and conn.info()["psk_identity"] is None
    assert run.keymat == conn.export()


# ---------------------------------------------------------------------------
# Raw input: hand-built ClientHellos (RFC 8446 §4.1.2), fragments, garbage


def _ext(etype, body):
    return etype.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def _v8(b):
    return bytes([len(b)]) + b


def _v16(b):
    return len(b).to_bytes(2, "big") + b


def client_hello(
    share_group=X25519, groups=(X25519, SECP256R1), suites=(TLS_AES_128_GCM_SHA256,), sid=b""
):
    """A minimal TLS 1.3 ClientHello record for certificate mode."""
    if share_group == X25519:
        share = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    else:
        share = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
    exts = (
        _ext(43, _v8(b"\x03\x04"))
        + _ext(10, _v16(b"".join(g.to_bytes(2, "big") for g in groups)))
        + _ext(13, _v16(bytes.fromhex("040308040807")))
        + _ext(51, _v16(share_group.to_bytes(2, "big") + _v16(share)))
    )
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + _v8(sid)
        + _v16(b"".join(s.to_bytes(2, "big") for s in suites))
        + b"\x01\x00"
        + _v16(exts)
    )
    return b"\x16\x03\x01" + _v16(b"\x01" + len(body).to_bytes(3, "big") + body)


def records(data):
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i + 3 : i + 5], "big")
        out.append((data[i], data[i + 5 : i + 5 + n]))
        i += 5 + n
    return out


@pytest.fixture(scope="module")
def cert_ctx(certs):
    leaf = certs["server_p256"]
    return ServerConfig(cert_chain=leaf.chain, key=leaf.key).build()


def test_byte_by_byte_client_hello_gets_server_flight(cert_ctx):
    """Any link: one byte per feed still yields the whole server flight."""
    conn = ServerConnection(cert_ctx)
    ch = client_hello()
    outs = [conn.feed(ch[i : i + 1]) for i in range(len(ch))]
    assert all(o == b"" for o in outs[:-1])
    recs = records(outs[-1])
    assert recs[0][0] == 22 and recs[0][1][0] == 2  # ServerHello
    assert recs[0][1][6:38] != HRR_RANDOM and not conn.hrr
    assert all(t == 23 for t, _ in recs[1:]) and not conn.done  # no compat CCS


def test_compat_ccs_dropped_by_default(certs):
    leaf = certs["server_p256"]
    ctx = ServerConfig(cert_chain=leaf.chain, key=leaf.key).build()
    recs = records(ServerConnection(ctx).feed(client_hello()))
    assert [t for t, _ in recs] == [22, 23, 23, 23, 23]


def test_compat_ccs_passed_on_when_asked(certs):
    leaf = certs["server_p256"]
    ctx = ServerConfig(cert_chain=leaf.chain, key=leaf.key, compat_ccs=True).build()
    recs = records(ServerConnection(ctx).feed(client_hello()))
    assert [t for t, _ in recs] == [22, 20, 23, 23, 23, 23]
    assert recs[1] == (20, b"\x01")  # RFC 8446 §D.4


def test_hrr_seen_in_raw_output(certs):
    leaf = certs["server_p256"]
    ctx = ServerConfig(cert_chain=leaf.chain, key=leaf.key, groups=("secp256r1",)).build()
    conn = ServerConnection(ctx)
    recs = records(conn.feed(client_hello(share_group=X25519)))
    assert recs[0][1][0] == 2 and recs[0][1][6:38] == HRR_RANDOM and conn.hrr


def test_no_common_group_is_handshake_failure(certs):
    leaf = certs["server_p256"]
    ctx = ServerConfig(cert_chain=leaf.chain, key=leaf.key, groups=("secp256r1",)).build()
    conn = ServerConnection(ctx)
    with pytest.raises(TLSError) as ei:
        conn.feed(client_hello(groups=(X25519,)))
    assert ei.value.alert == 40 and ei.value.outgoing == bytes.fromhex("15030300020228")


GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 64,
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff",  # truncated ClientHello body
    b"\x16\x03\x01\xff\xff" + b"\x01" * 300,  # record length too long
    b"\x17\x03\x03\x00\x10" + b"\x00" * 16,  # app data before handshake
    b"\x15\x03\x03\x00\x02\x02\x28",  # fatal alert from peer
    b"\x80\x2e\x01\x03\x01\x00\x15" + b"\x00" * 40,  # SSLv2-style hello
    b"\x16\x03\x03\x00\x00" * 40,  # 40 empty handshake records (§5.1)
]


@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_raises_tlserror_only(cert_ctx, data):
    conn = ServerConnection(cert_ctx)
    with pytest.raises(TLSError) as ei:
        conn.feed(data)
        conn.feed(b"\x16\x03\x03\x00\x00" * 2)  # in case OpenSSL is still waiting
    assert isinstance(ei.value.outgoing, bytes) and not conn.done
    with pytest.raises(TLSError):
        conn.feed(client_hello())


def test_fuzzed_client_hellos_never_raise_other_exceptions(cert_ctx):
    """300 mutated ClientHellos / random inputs: feed returns bytes or raises
    TLSError, nothing else."""
    rng = random.Random(8446)
    base = client_hello()
    failures = 0
    for i in range(300):
        data = bytearray(base)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            data = data[: rng.randrange(1, len(data))] + bytes(
                rng.randrange(256) for _ in range(rng.randint(0, 40))
            )
        elif kind == 2:
            pos = rng.randrange(5, len(data))
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        else:
            data = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 600)))
        conn = ServerConnection(cert_ctx)
        try:
            out = conn.feed(bytes(data))
            assert isinstance(out, bytes)
            out = conn.feed(bytes(rng.randrange(256) for _ in range(64)))
        except TLSError as exc:
            assert isinstance(exc.outgoing, bytes)
            failures += 1
    assert failures > 200


def test_api_misuse():
    ident, key = pki.make_psk(b"d")
    conn = ServerConnection(ServerConfig(psks={ident: key}).build())
    with pytest.raises(RuntimeError):
        conn.export()
    with pytest.raises(RuntimeError):
        conn.send(b"x")
    assert conn.info()["mode"] is None
    with pytest.raises(TypeError):
        ServerConnection(object())
    assert conn.close() == b"" or conn.closed


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # nothing to authenticate
        dict(psks={b"d": b"short"}),
        dict(psks={b"d": b"k" * 65}),
        dict(psks={b"": b"k" * 32}),
        dict(psks={b"d": b"k" * 32}, suites=("TLS_AES_256_GCM_SHA384",)),
        dict(psks={b"d": b"k" * 32}, suites=("TLS_RSA_WITH_RC4",)),
        dict(psks={b"d": b"k" * 32}, groups=("ffdhe2048",)),
        dict(psks={b"d": b"k" * 32}, tickets=-1),
        dict(psks={b"d": b"k" * 32}, session_id_context=b"x" * 33),
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)


def test_config_cert_without_key_rejected(certs):
    with pytest.raises(ValueError):
        ServerConfig(cert_chain=[certs["server_p256"].cert])


# ---------------------------------------------------------------------------
# pyOpenSSL in-memory client: application data, KeyUpdate-free close path


def test_application_data_and_close_with_memory_client(certs):
    from OpenSSL import SSL

    leaf = certs["server_p256"]
    conn = ServerConnection(ServerConfig(cert_chain=leaf.chain, key=leaf.key).build())
    cctx = SSL.Context(SSL.TLS_METHOD)
    cctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    client = SSL.Connection(cctx, None)
    client.set_connect_state()
    to_server = b""
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            to_server = client.bio_read(65536)
        except SSL.WantReadError:
            to_server = b""
        reply = conn.feed(to_server)
        if reply:
            client.bio_write(reply)
        if conn.done:
            break
    assert conn.done
    client.send(b"ping")
    assert conn.feed(client.bio_read(65536)) == b"" and conn.recv() == b"ping"
    client.bio_write(conn.send(b"pong"))
    assert client.recv(100) == b"pong"
    assert client.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN) == conn.export()
    client.bio_write(conn.close())
    with pytest.raises(SSL.ZeroReturnError):
        client.recv(100)
    assert conn.close() == b""


def test_openssl_version_reported():
    v = openssl_version()
    assert v.startswith("OpenSSL ") and int(v.split()[1].split(".")[0]) >= 3
    assert ALERTS[116] == "certificate_required"


# ---------------------------------------------------------------------------
# PKI helpers

SIG_OIDS = {
    "p256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "rsa2048": SignatureAlgorithmOID.RSA_WITH_SHA256,  # PKCS#1 v1.5
    "ed25519": SignatureAlgorithmOID.ED25519,
}
KEY_CLASSES = {
    "p256": ec.EllipticCurvePrivateKey,
    "rsa2048": rsa.RSAPrivateKey,
    "ed25519": ed25519.Ed25519PrivateKey,
}


def _verify_signature(issuer_key, cert):
    pub = issuer_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    else:
        pub.verify(cert.signature, cert.tbs_certificate_bytes)


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_pki_make_ca(key_type):
    ca = pki.make_ca("Root %s" % key_type, key_type=key_type, path_len=1)
    cert = ca.cert
    assert isinstance(ca.key, KEY_CLASSES[key_type]) and ca.is_root and ca.chain == [cert]
    if key_type == "rsa2048":
        assert ca.key.key_size == 2048
    if key_type == "p256":
        assert isinstance(ca.key.curve, ec.SECP256R1)
    assert cert.subject == cert.issuer
    assert cert.signature_algorithm_oid == SIG_OIDS[key_type]
    _verify_signature(ca.key, cert)
    cert.verify_directly_issued_by(cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert (
        pki.make_ca("R", key_type=key_type)
        .cert.extensions.get_extension_for_class(x509.BasicConstraints)
        .value.path_length
        is None
    )


@pytest.mark.parametrize("issuer_type", pki.KEY_TYPES)
@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_pki_make_cert_signed_by_issuer(issuer_type, key_type):
    ca = pki.make_ca("Root", key_type=issuer_type)
    leaf = pki.make_cert(
        "service.local", issuer=ca, key_type=key_type, san=["service.local", "127.0.0.1"], days=30
    )
    cert = leaf.cert
    assert isinstance(leaf.key, KEY_CLASSES[key_type])
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == leaf.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert cert.issuer == ca.cert.subject
    assert cert.signature_algorithm_oid == SIG_OIDS[issuer_type]
    _verify_signature(ca.key, cert)
    cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(Exception):
        _verify_signature(pki.make_key(issuer_type), cert)  # negative: other key
    ext = cert.extensions
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["service.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * 86400 <= life.total_seconds() <= 30 * 86400 + 600


def test_pki_client_cert_and_default_san():
    ca = pki.make_ca("Root")
    dev = pki.make_cert("device-7", issuer=ca, client=True)
    ext = dev.cert.extensions
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["device-7"]
    nosan = pki.make_cert("x", issuer=ca, san=[])
    with pytest.raises(x509.ExtensionNotFound):
        nosan.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert dev.cert.serial_number != nosan.cert.serial_number


@needs_openssl
def test_pki_chain_verifies_with_openssl_cli(certs, tmp_path):
    """Independent check: `openssl verify` accepts root -> intermediate ->
    leaf for sslserver, and the device cert for sslclient, and rejects a
    cert from another CA."""
    root = tmp_path / "root.pem"
    root.write_bytes(pki.pem(certs["ca"]))
    inter = tmp_path / "inter.pem"
    inter.write_bytes(pki.pem(certs["inter"]))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pki.pem(certs["server_chain"]))
    dev = tmp_path / "dev.pem"
    dev.write_bytes(pki.pem(certs["device"]))
    rogue = tmp_path / "rogue.pem"
    rogue.write_bytes(pki.pem(certs["rogue"]))

    def verify(*args):
        return subprocess.run(
            [OPENSSL, "verify", "-CAfile", str(root)] + list(args), capture_output=True, timeout=15
        )

    assert verify("-untrusted", str(inter), "-purpose", "sslserver", str(leaf)).returncode == 0
    assert verify("-purpose", "sslclient", str(dev)).returncode == 0
    assert verify("-purpose", "sslserver", str(dev)).returncode != 0  # EKU clientAuth only
    assert verify(str(rogue)).returncode != 0
    assert verify(str(leaf)).returncode != 0  # intermediate missing
    # path_len=0 intermediate cannot issue another CA
    sub = pki.make_cert("Sub", issuer=certs["inter"], is_ca=True)
    leaf2 = pki.make_cert("deep", issuer=sub)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.pem([certs["inter"], sub]))
    deep = tmp_path / "deep.pem"
    deep.write_bytes(pki.pem(leaf2))
    assert leaf2.chain == [leaf2.cert, sub.cert, certs["inter"].cert]
    assert verify("-untrusted", str(chain), str(deep)).returncode != 0


def test_pki_pem_der_roundtrip():
    ca = pki.make_ca("Root", key_type="ed25519")
    leaf = pki.make_cert("a", issuer=ca)
    assert x509.load_pem_x509_certificate(pki.pem(leaf)) == leaf.cert
    assert x509.load_der_x509_certificate(pki.der(leaf.cert)) == leaf.cert
    assert x509.load_pem_x509_certificates(pki.pem([leaf, ca])) == [leaf.cert, ca.cert]
    for key in (ca.key, leaf.key, pki.make_key("rsa2048")):
        loaded = serialization.load_der_private_key(pki.der(key), None)
        assert pki.der(loaded) == pki.der(key)
        assert serialization.load_pem_private_key(pki.pem(key), None) is not None
    assert pki.pem(leaf.key.public_key()).startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ValueError):
        pki.der([leaf, ca])
    with pytest.raises(TypeError):
        pki.pem("not a cert")


def test_pki_make_psk_and_errors():
    ident, key = pki.make_psk("dev")
    assert ident == b"dev" and len(key) == 32
    assert pki.make_psk(b"x", 16)[1] != pki.make_psk(b"x", 16)[1]
    assert len(pki.make_psk(b"x", 64)[1]) == 64
    for bad in (dict(length=15), dict(length=65), dict(identity=b"")):
        with pytest.raises(ValueError):
            pki.make_psk(**bad)
    with pytest.raises(ValueError):
        pki.make_ca("x", key_type="rsa1024")
    with pytest.raises(ValueError):
        pki.make_cert("x", issuer=pki.make_ca("r"), path_len=1)  # path_len needs is_ca
    with pytest.raises(TypeError):
        pki.make_cert("x", issuer="not a credential")
