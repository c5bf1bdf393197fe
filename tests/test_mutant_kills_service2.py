"""The service's registry on the SQLite store (host_tools.service.registry
with host_tools.registry.Store: any path not ending in .json), behaviour
`make mutants` found no test pinning down: its devices, reloads when another
process commits, contacts recorded without ever failing the caller, and a
store that cannot be read is a ConfigError (the service refuses to start).
And its OpenSSL hooks (host_tools.service.tls_hooks): which alert a Watch
reports, the message callback's ServerHello filter, which never raises
into OpenSSL, the selected PSK identity it reads, and install()'s default."""

import pytest
from OpenSSL import SSL

from host_tools import pki
from host_tools.registry.store import Store
from host_tools.service import tls_hooks
from host_tools.service.errors import ConfigError
from host_tools.service.registry import Registry
from host_tools.service.tls_engine import ServerConfig

PSK = bytes(range(32))


def test_a_sqlite_registry_serves_its_devices_and_notices_other_writers(tmp_path):
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    reg = Registry(path)
    assert reg.psks == {b"dev-a": PSK}
    assert not reg.changed()  # nothing committed since the load
    other = Store(path)  # `python -m host_tools.registry add` in another process
    other.add("dev-b", psk=bytes(16))
    assert reg.changed()
    reg.reload()
    assert reg.psks == {b"dev-a": PSK, b"dev-b": bytes(16)}
    other.revoke("dev-a")
    assert reg.changed()
    reg.reload()
    assert reg.psks == {b"dev-b": bytes(16)}
    listed = {d["id"]: d for d in reg.devices()}  # the store's rows: revoked ones too
    assert set(listed) == {"dev-a", "dev-b"} and listed["dev-a"]["revoked"]
    assert listed["dev-b"]["created"] and listed["dev-b"]["last_seen"] is None


def test_touch_records_a_contact_and_never_fails_the_caller(tmp_path):
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    reg = Registry(path)
    reg.touch("dev-a", firmware="1.2.3")
    [d] = Store(path).devices()
    assert d["last_seen"] and d["firmware"] == "1.2.3"
    reg.store.close()  # the database is gone (a disk error, say)
    reg.touch("dev-a", firmware="1.2.4")  # logged nowhere, raised nowhere


def test_an_unreadable_store_is_a_config_error(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ConfigError):
        Registry(bad)
    path = tmp_path / "registry.db"
    Store(path).add("dev-a", psk=PSK)
    Store(tmp_path / "other.db")  # makes other.db.key, another master key
    with pytest.raises(ConfigError):  # the sealed PSK does not open under it
        Registry(path, key_path=str(tmp_path / "other.db.key"))


def test_valid_psk_is_16_to_64_bytes():
    """The service accepts PSKs of 16..64 bytes (docs/SECURITY.md, the same
    bounds as the device's ClientConfig), both ends included."""
    from host_tools.service.tls_hooks import valid_psk

    assert [valid_psk(bytes(n)) for n in (15, 16, 64, 65)] == [False, True, True, False]
    assert valid_psk(bytearray(16)) and not valid_psk("x" * 16)


def _pump(src, dst):
    """One step of a handshake over memory BIOs: src runs, its bytes go to dst."""
    try:
        src.do_handshake()
    except SSL.WantReadError:
        pass
    try:
        dst.bio_write(src.bio_read(65536))
    except SSL.WantReadError:
        pass


def test_a_close_notify_alone_is_the_alert_sent():
    """A Watch reports the alert the server sent; a close_notify (0) is one
    too when it is the only one (the service's TLS 1.3 context: one alert at
    most per connection)."""
    from atls.tls.client import CONNECTED, ClientConfig, TLSClient

    c = TLSClient(ClientConfig(psk=PSK, psk_identity=b"dev"))
    c.start()
    ctx = ServerConfig(psks={b"dev": PSK}).build()
    tls_hooks._lib.SSL_CTX_set_msg_callback(ctx._context, tls_hooks._on_message_cb)  # PSK only: off
    s = SSL.Connection(ctx, None)
    s.set_accept_state()
    w = tls_hooks.watch(s)
    s.bio_write(c.data_to_send())
    with pytest.raises(SSL.WantReadError):
        s.do_handshake()
    c.receive(s.bio_read(65536))
    s.bio_write(c.data_to_send())  # the client's Finished
    s.do_handshake()
    assert c.state == CONNECTED and w.alert_sent is None
    s.shutdown()
    assert w.alert_sent == 0 and w.callback_error is None


@pytest.fixture(scope="module")
def tls12_server_ctx():
    leaf = pki.make_cert("srv", issuer=pki.make_ca("CA"))
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate(leaf.cert)
    ctx.use_privatekey(leaf.key)
    ctx.set_options(SSL.OP_NO_RENEGOTIATION)
    ctx.keep = tls_hooks.install(ctx, None)
    return ctx


@pytest.mark.parametrize("then", ["close_notify", "fatal"])
def test_the_last_alert_is_reported_and_a_close_notify_never_hides_another(tls12_server_ctx, then):
    """After a warning alert (TLS 1.2, the version where one connection sends
    more than one alert: a refused renegotiation sends no_renegotiation, 100,
    and the connection goes on) a later fatal alert is
    the one reported (bad_record_mac, 20, for a record that does not
    decrypt), but a close_notify does not hide the earlier alert."""
    cctx = SSL.Context(SSL.TLS_METHOD)
    cctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    s, c = SSL.Connection(tls12_server_ctx, None), SSL.Connection(cctx, None)
    s.set_accept_state()
    c.set_connect_state()
    w = tls_hooks.watch(s)
    for _ in range(3):
        _pump(c, s)
        _pump(s, c)
    assert s.get_protocol_version_name() == "TLSv1.2" and w.alert_sent is None
    assert c.renegotiate()
    _pump(c, s)
    with pytest.raises(SSL.WantReadError):
        s.recv(100)
    assert w.alert_sent == 100  # SSL_AD_NO_RENEGOTIATION, a warning
    if then == "close_notify":
        s.shutdown()
        assert w.alert_sent == 100
    else:
        s.bio_write(b"\x17\x03\x03\x00\x40" + bytes(64))  # does not decrypt
        with pytest.raises(SSL.Error):
            s.recv(100)
        assert w.alert_sent == 20


def _server_hello(s, msg):
    """Call the message callback as OpenSSL does (through its C pointer) with
    `msg` as a ServerHello the server wrote."""
    buf = tls_hooks._ffi.new("unsigned char[]", msg)
    ptr = tls_hooks._ffi.cast("void *", buf)
    tls_hooks._on_message_cb(1, SSL.TLS1_3_VERSION, 22, ptr, len(msg), s._ssl, tls_hooks._ffi.NULL)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_the_server_hello_filter_reads_the_fixed_part_and_never_raises():
    """The message callback parses a ServerHello only from 38 bytes on (type,
    length, version, random: enough to tell a HelloRetryRequest); one that
    ends right after a plain random is a parse error recorded in the Watch,
    never an exception into OpenSSL (cffi would report it as unraisable)."""
    s = SSL.Connection(ServerConfig(psks={b"dev": PSK}).build(), None)
    head = bytes((2, 0, 0, 34, 3, 3))
    w = tls_hooks.watch(s)
    _server_hello(s, head + bytes(31))  # 37 bytes: not parsed
    assert (w.hrr, w.callback_error, w.selected_identity) == (False, None, None)
    _server_hello(s, head + tls_hooks._HRR_RANDOM)
    assert w.hrr and w.callback_error is None
    w = tls_hooks.watch(s)
    _server_hello(s, head + bytes(range(32)))
    assert not w.hrr and w.callback_error.startswith("IndexError")


def _hello_with(exts, after=b""):
    """A ServerHello (not a HelloRetryRequest) whose extensions block is
    `exts`, followed by `after` outside that block."""
    body = b"\x03\x03" + bytes(range(32)) + b"\x00\x13\x01\x00"
    body += len(exts).to_bytes(2, "big") + exts + after
    return b"\x02" + len(body).to_bytes(3, "big") + body


def test_the_selected_identity_is_read_from_pre_shared_key_within_the_block():
    """RFC 8446 §4.2.11: the Watch's selected_identity is the 2-byte
    pre_shared_key extension only (not supported_versions, also 2 bytes) and
    only inside the declared extensions block."""
    s = SSL.Connection(ServerConfig(psks={b"dev": PSK}).build(), None)
    versions, psk1 = b"\x00\x2b\x00\x02\x03\x04", b"\x00\x29\x00\x02\x00\x01"
    for exts, after, want in (
        (psk1 + versions, b"", 1),
        (versions, b"", None),  # a certificate handshake
        (versions, psk1, None),  # bytes beyond the block are not an extension
    ):
        w = tls_hooks.watch(s)
        _server_hello(s, _hello_with(exts, after))
        assert (w.selected_identity, w.callback_error) == (want, None), (exts, after)


def test_install_without_hide_unknown_gives_unknown_identities_no_key():
    """install(ctx, psks) on its own (hide_unknown off) does not hide: an
    unknown identity gets no session, so OpenSSL falls back to a certificate
    handshake (here it has none for a client without signature_algorithms:
    missing_extension, 109), not a stand-in key's binder failure (51)."""
    from atls.tls.client import ClientConfig, TLSClient

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.keep = tls_hooks.install(ctx, {b"dev": PSK})
    s = SSL.Connection(ctx, None)
    s.set_accept_state()
    w = tls_hooks.watch(s)
    c = TLSClient(ClientConfig(psk=bytes(32), psk_identity=b"other"))
    c.start()
    s.bio_write(c.data_to_send())
    with pytest.raises(SSL.Error):
        s.do_handshake()
    assert (w.psk_calls, w.alert_sent, w.callback_error) == ([None], 109, None)
