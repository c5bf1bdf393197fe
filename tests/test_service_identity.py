"""The service refuses a PSK identity it does not know and another device's
identity, over each way in: UDP (a MicroPython device), ATLS over HTTP and
over CoAP (the host client), against the real service process, without the
openssl CLI.

Registry: device-1 (key K1) and device-2 (key K2).  Refused, all with the
same alert, decrypt_error (51, RFC 8446 §4.2.11: the binder does not verify),
so that a probe cannot tell a registered identity from an unknown one (issue
14 item 7; the service answers an unknown identity with a key that no device
has): an unknown identity with K1 (another device's valid key) or with a
dummy key; device-2's identity with device-1's key, and device-1's identity
with device-2's key.  No refused attempt reaches
the application (no handshake_ok, no session for that identity), and a
session device-1 already has is not replaced by one."""

import asyncio
import json

import pytest
from e2e import ServiceProc, run_device
from test_bindings import Svc

from atls.tls.client import ClientConfig
from host_tools import atls_http_client as hc

K1 = bytes(range(32))  # test_bindings.Svc's registry: device-1 = K1, device-2 = K2
K2 = K1[::-1]
DUMMY = bytes(32)

# (name, identity, key, alert OpenSSL sends, its name in the service's log)
BAD = [
    ("unknown identity, another device's key", b"nobody", K1, 51, "decrypt_error"),
    ("unknown identity, dummy key", b"device-3", DUMMY, 51, "decrypt_error"),
    ("device-2's identity, device-1's key", b"device-2", K1, 51, "decrypt_error"),
    ("device-1's identity, device-2's key", b"device-1", K2, 51, "decrypt_error"),
]
IDS = [b[0] for b in BAD]


def handshake_events(svc):
    out = []
    for line in svc.logs().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") in ("handshake_ok", "handshake_failed"):
            out.append(ev)
    return out


def check_refused(svc, attempts, alert_name, ok_before=0):
    c = svc.counters()
    assert c["handshakes_ok"] == ok_before, c
    assert c["handshakes_failed"] == attempts, c
    evs = handshake_events(svc)
    assert [e["identity"] for e in evs if e["event"] == "handshake_ok"] == ["device-1"] * ok_before
    failed = [e for e in evs if e["event"] == "handshake_failed"]
    assert [e["alert"] for e in failed] == [alert_name] * attempts, failed
    logs = svc.logs()
    for key in (K1, K2, DUMMY):
        assert key.hex() not in logs


# ---- UDP: the firmware device under MicroPython ---------------------------------------


@pytest.mark.parametrize("name,identity,key,alert,alert_name", BAD, ids=IDS)
def test_udp_device_with_a_foreign_identity_is_refused(
    mpyc, tmp_path, name, identity, key, alert, alert_name
):
    svc = ServiceProc(tmp_path, devices={"device-1": K1, "device-2": K2})
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": svc.addr[0],
                "port": svc.addr[1],
                "psk": key.hex(),
                "psk_identity": identity.decode(),
                "count": 1,
                "timeout_ms": 20000,
            },
        )
        assert not s["ok"] and s["ups"] == 0 and s["received"] == 0, s
        assert s["failed"] == "tls alert %d" % alert, s
        check_refused(svc, 1, alert_name)
    finally:
        svc.stop()


# ---- HTTP and CoAP: the host client -----------------------------------------------------


def _connect(url, transport, identity, key):
    """Handshake only; returns the TransportError's text or "connected"."""

    async def go():
        tr = transport(url)
        client = hc.AtlsClient(tr, ClientConfig(psk=key, psk_identity=identity))
        try:
            await client.connect()
            await client.close()
            return "connected"
        except hc.TransportError as e:
            return str(e)
        finally:
            await tr.close()

    return asyncio.run(go())


@pytest.fixture(params=["http", "coap"])
def binding(request, tmp_path):
    svc = Svc(tmp_path)
    yield svc, request.param
    svc.stop()


def _url(svc, kind):
    if kind == "http":
        return svc.http, hc.HttpTransport
    return svc.coap, hc.CoapTransport


@pytest.mark.parametrize("name,identity,key,alert,alert_name", BAD, ids=IDS)
def test_binding_with_a_foreign_identity_is_refused(
    binding, name, identity, key, alert, alert_name
):
    svc, kind = binding
    url, transport = _url(svc, kind)
    err = _connect(url, transport, identity, key)
    # 400 / 4.00 handshake_failed, with the alert OpenSSL sent
    assert ("400" if kind == "http" else "4.00 Bad Request") in err, err
    assert err.rstrip().endswith("handshake_failed: %s" % alert_name), err
    check_refused(svc, 1, alert_name)
    c = svc.counters()
    assert c[kind]["rejected"] == {"handshake_failed": 1}


def test_binding_session_survives_impersonation_attempts(binding):
    """device-1 holds a session; every way of claiming its identity (or any
    other) without its key is refused, and device-1's session carries on."""
    svc, kind = binding
    url, transport = _url(svc, kind)

    async def go():
        tr = transport(url)
        good = hc.AtlsClient(tr, ClientConfig(psk=K1, psk_identity=b"device-1"))
        await good.connect()
        refused = [
            await asyncio.get_running_loop().run_in_executor(
                None, _connect, url, transport, identity, key
            )
            for _, identity, key, _, _ in BAD
        ]
        good.send(b"still here")
        got = []
        for _ in range(20):
            await good.exchange(wait_ms=200)
            got += [bytes(ev[1]) for ev in good.events() if ev[0] == "message"]
            if got:
                break
        await good.close()
        await tr.close()
        return refused, got

    refused, got = asyncio.run(go())
    assert all("handshake_failed: " in r for r in refused), refused
    assert got == [b"still here"]  # the service's echo application answered
    c = svc.counters()
    assert c["handshakes_ok"] == 1 and c["handshakes_failed"] == len(BAD)
    evs = handshake_events(svc)
    assert [e["identity"] for e in evs if e["event"] == "handshake_ok"] == ["device-1"]
    assert "replaced by a new session" not in svc.logs()


def test_control_the_right_keys_connect(binding):
    """The same service accepts both devices with their own keys, so the
    refusals above are about identity and key, not a broken setup."""
    svc, kind = binding
    url, transport = _url(svc, kind)
    assert _connect(url, transport, b"device-1", K1) == "connected"
    assert _connect(url, transport, b"device-2", K2) == "connected"
    c = svc.counters()
    assert c["handshakes_ok"] == 2 and c["handshakes_failed"] == 0
