"""host_tools/service/tls_engine.py: the direct OpenSSL calls of a context
without pyOpenSSL callback helpers (issue 19, one worker against raw
OpenSSL).  "Wants more bytes" and "nothing to read" cost no Python
exception, and every other result still surfaces exactly as pyOpenSSL's own
calls would raise it.  The client is pyOpenSSL in memory (the raw baseline's
client, host_tools.bench.openssl_peers), so these run without sockets.
Also host_tools.common.log, which the service calls for every handshake.
"""

import json

import pytest
from OpenSSL import SSL

from atls.protocol import EXPORTER_LABEL, KEY_BLOCK_LEN
from host_tools.bench import openssl_peers
from host_tools.common import log
from host_tools.service.tls_engine import ServerConfig, ServerConnection, TLSError

IDENT = b"dev-01"
PSK = bytes(range(32))
SUITE = "TLS_AES_128_CCM_8_SHA256"


def _client(key=PSK):
    c = SSL.Connection(openssl_peers.client_context(SUITE, IDENT, key), None)
    c.set_connect_state()
    return c


def _flight(c):
    openssl_peers._step(c)
    return openssl_peers._drain(c)


def _server():
    cfg = ServerConfig(psks={IDENT: PSK}, suites=(SUITE,))
    cfg.hide_unknown_psk = True  # as the service sets it
    return ServerConnection(cfg.build())


def _count_raises(monkeypatch, conn):
    """Calls of pyOpenSSL's error mapping (every exception it raises goes
    through it) made for the server side's SSL object."""
    calls = []
    real = SSL.Connection._raise_ssl_error

    def counted(self, ssl, result):
        if self is conn._conn:
            calls.append(result)
        return real(self, ssl, result)

    monkeypatch.setattr(SSL.Connection, "_raise_ssl_error", counted)
    return calls


def test_psk_handshake_raises_nothing_inside(monkeypatch):
    """A whole PSK handshake (RFC 8446 §4.2.11) through feed(): OpenSSL
    waiting for the client's Finished and the empty output BIO are plain
    results, not WantReadError (pyOpenSSL raised one per do_handshake that
    waits and one per drained BIO).  Fails on the code before the change."""
    conn = _server()
    calls = _count_raises(monkeypatch, conn)
    c = _client()
    out = conn.feed(_flight(c))
    assert out and not conn.done
    c.bio_write(out)
    assert conn.feed(_flight(c)) == b""  # tickets=0: both withheld
    assert conn.done and calls == []
    assert conn.export() == c.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN)
    info = conn.info()
    assert info["mode"] == "psk_dhe" and info["psk_identity"] == IDENT
    assert info["group"] == "x25519" and info["suite"] == SUITE


def test_context_with_a_callback_helper_keeps_pyopenssl_calls(monkeypatch):
    """A verify callback (client_ca mode sets one) lives in a pyOpenSSL
    helper that its own calls check: such a context takes pyOpenSSL's
    do_handshake/bio_read, exceptions and all, and still completes."""
    cfg = ServerConfig(psks={IDENT: PSK}, suites=(SUITE,))
    ctx = cfg.build()
    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: True)
    conn = ServerConnection(ctx)
    calls = _count_raises(monkeypatch, conn)
    c = _client()
    c.bio_write(conn.feed(_flight(c)))
    conn.feed(_flight(c))
    assert conn.done and len(calls) >= 2  # WantReadError: handshake waiting, BIO drained
    assert conn.export() == c.export_keying_material(EXPORTER_LABEL, KEY_BLOCK_LEN)


def test_direct_path_keeps_pyopenssl_errors():
    """A wrong binder still fails as before: decrypt_error (51) in a
    plaintext alert record, reason from OpenSSL's error queue."""
    conn = _server()
    with pytest.raises(TLSError) as e:
        conn.feed(_flight(_client(bytes(b ^ 1 for b in PSK))))
    assert e.value.alert == 51 and "binder" in e.value.reason
    assert e.value.outgoing == bytes.fromhex("15030300020233")
    assert conn.failed is e.value and not conn.done


def test_direct_read_app_data_and_close_notify():
    """After the handshake, feed() reads application data and notices the
    peer's close_notify through SSL_read directly."""
    conn = _server()
    c = _client()
    c.bio_write(conn.feed(_flight(c)))
    conn.feed(_flight(c))
    c.send(b"ping")
    assert conn.feed(openssl_peers._drain(c)) == b"" and conn.recv() == b"ping"
    c.shutdown()
    conn.feed(openssl_peers._drain(c))
    assert conn.peer_closed


def test_log_line_format(capsys):
    """One JSON object per line: ts and event first, bytes as hex, a ts
    given by the caller kept in first place."""
    log("handshake_ok", sid=7, peer="127.0.0.1:1", token=b"\x01\xff", ms=None)
    log("tick")
    log("custom", ts=5, n=1)
    lines = capsys.readouterr().err.splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["ts", "event", "sid", "peer", "token", "ms"]
    assert first["event"] == "handshake_ok" and first["token"] == "01ff" and first["ms"] is None
    assert isinstance(first["ts"], float)
    assert list(json.loads(lines[1])) == ["ts", "event"]
    assert json.loads(lines[2]) == {"ts": 5, "event": "custom", "n": 1}
