"""Link protocol v2 over the HTTP and CoAP bindings (docs/PROTOCOL.md §5,
docs/BINDINGS.md "Errors and limits"): a batch for a session the service no
longer has is refused `unknown_session` *with* the service's RESET for that
session id (token from service.dedupe.PeerTable, the service's reset.key),
under exactly UDP's rule (a sealed packet longer than the RESET, an id the
service does not hold); the client library (host_tools.atls_http_client)
hands the RESET to its link, which ends the session on it; nothing else the
service or a forger sends ends an established session.  Real service
processes, loopback only."""

import asyncio
import json
import socket

import aiocoap.error
import aiohttp
import pytest
from e2e import ServiceProc

from atls import protocol, wire
from atls.tls.client import ClientConfig
from host_tools import atls_http_client as hc
from host_tools.service.dedupe import stored_reset_keys, token_under
from host_tools.toolchain import free_port

pytestmark = pytest.mark.timeout(120)

PSK = bytes(range(32))
NET_ERRORS = (aiohttp.ClientError, aiocoap.error.NetworkError)
LONG = b"a message longer than a RESET"  # its DATA packet is > 20 bytes


class Svc(ServiceProc):
    """The service with its HTTP and CoAP listeners on fixed ports, so a
    restarted one (same directory: same reset.key) is found again."""

    def __init__(self, tmp, http, coap):
        ServiceProc.__init__(
            self,
            tmp,
            devices={"device-1": PSK},
            extra={"http_listen": "127.0.0.1:%d" % http, "coap_listen": "127.0.0.1:%d" % coap},
        )
        addrs = json.loads((self.tmp / "service.ready.json").read_text())
        self.urls = {
            "http": "http://%s/atls" % addrs["http"],
            "coap": "coap://%s/.well-known/atls" % addrs["coap"],
        }


def _ports():
    return free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)


def _client(url):
    tr = hc.make_transport(url)
    return tr, hc.AtlsClient(tr, ClientConfig(psk=PSK, psk_identity=b"device-1"))


def _reset(tmp, sid):
    # the running (restarted) service answers with the previous run's key
    token = token_under(stored_reset_keys(tmp / "service-state")[1], sid)
    return wire.encode(wire.ERROR, sid, bytes((protocol.RESET,)) + token)


@pytest.mark.parametrize("kind", ["http", "coap"])
def test_client_session_ends_on_the_restarted_services_reset(tmp_path, kind):
    """§5: the service restarts (it lost the session); the client's next
    batch is refused unknown_session carrying RESET(sid) || token, the
    client's link checks the token and ends ("error", "reset"), the
    transport forgets the session, and a new session works."""
    http, coap = _ports()
    svc = Svc(tmp_path, http, coap)
    url = svc.urls[kind]

    async def go():
        nonlocal svc
        tr, client = _client(url)
        try:
            await client.connect()
            sid = client.sid
            client.send(b"before")
            for _ in range(20):
                await client.exchange(wait_ms=200)
                if any(e[0] == "message" for e in client.events()):
                    break
            svc.stop()
            svc = Svc(tmp_path, http, coap)
            client.send(LONG)
            with_reset = None
            events = []
            for _ in range(5):  # the link resends after a pooled connection broke
                try:
                    await client.exchange()
                except hc.TransportError as e:  # must not happen: the RESET is for the link
                    with_reset = e
                    break
                except NET_ERRORS:  # the old connection / the port was closed: again
                    await asyncio.sleep(1.2)  # after the link's rto (an empty poll is
                    continue  # a plain unknown_session: there is nothing to reset)
                events += client.events()
                if client.link.state == "failed":
                    break
                await asyncio.sleep(0.1)
            state = client.link.state
            forgot = (tr.cookie if kind == "http" else tr.location) is None
            got = []
            again_tr, again = _client(url)  # another client of the same device, later
            try:
                # a new session of the same client: its ids go on from the old one's;
                # then the other client (one identity: sessions one after the other)
                for c in (client, again):
                    await c.connect()
                    c.send(LONG)
                    for _ in range(20):
                        await c.exchange(wait_ms=200)
                        echoed = [bytes(e[1]) for e in c.events() if e[0] == "message"]
                        got += echoed
                        if echoed:
                            break
                    await c.close()
            finally:
                await again_tr.close()
            return sid, with_reset, events, state, forgot, got
        finally:
            await tr.close()

    try:
        sid, with_reset, events, state, forgot, got = asyncio.run(go())
        c = svc.counters()
    finally:
        svc.stop()
    assert with_reset is None
    assert ("error", "reset") in events and state == "failed" and forgot
    assert got == [LONG, LONG]  # both delivered: no id taken for a duplicate
    assert c["resets_sent"] == 1 and c[kind]["rejected"] == {"unknown_session": 1}
    assert c[kind]["resets"] == 1 and c["handshakes_ok"] == 2
    assert c["duplicates_suppressed"] == 0 and c["messages_in"] == 2
    assert sid and _reset(tmp_path, sid)[3] == protocol.RESET


def test_http_reset_only_for_ids_the_service_does_not_hold(tmp_path):
    """A forged or lost cookie: the RESET comes back only for a session id the
    service does not hold (its token must not leak for a live session), only
    for a sealed packet longer than the RESET (never more bytes out than in),
    and it is the one in service-state/reset.key's HMAC; a cookieless batch
    gets the RESET under the same rule, else missing_cookie."""
    http, coap = _ports()
    Svc(tmp_path, http, coap).stop()  # a run before: its key is what a RESET may carry
    svc = Svc(tmp_path, http, coap)

    async def go():
        tr, client = _client(svc.urls["http"])
        try:
            await client.connect()
            live = client.sid
            dead = (live + 1) & 0xFFFF or 1
            out = {}
            for name, sid, size, cookie in (
                ("live", live, 30, "00" * 16),
                ("dead", dead, 30, "00" * 16),
                ("short", dead, 20, "00" * 16),
                ("ack", dead, 30, "00" * 16),
                ("nocookie", dead, 30, None),
                ("nocookie_live", live, 30, None),
            ):
                t = protocol.ACK if name == "ack" else protocol.DATA
                body = bytes((protocol.MARKER | protocol.VERSION_BIT | t,))
                body += sid.to_bytes(2, "big") + bytes(size - 3)
                probe = hc.HttpTransport(svc.urls["http"])
                probe.cookie = cookie
                try:
                    await probe.post_packets([body])
                    out[name] = None
                except hc.TransportError as e:
                    out[name] = (e.status, e.reason, e.packets)
                finally:
                    await probe.close()
            client.send(LONG)  # the live session is untouched
            got = []
            for _ in range(20):
                await client.exchange(wait_ms=200)
                got += [e for e in client.events() if e[0] == "message"]
                if got:
                    break
            await client.close()
            return live, dead, out, got
        finally:
            await tr.close()

    try:
        live, dead, out, got = asyncio.run(go())
        c = svc.counters()
    finally:
        svc.stop()
    reset = _reset(tmp_path, dead)
    assert out["live"] == (403, "unknown_session", [])
    assert out["dead"] == (403, "unknown_session", [reset])
    assert out["short"] == (403, "unknown_session", [])
    assert out["ack"] == (403, "unknown_session", [reset])
    assert out["nocookie"] == (403, "unknown_session", [reset])
    assert out["nocookie_live"] == (400, "missing_cookie", [])
    assert [bytes(e[1]) for e in got] == [LONG]
    assert c["resets_sent"] == 3 and c["http"]["resets"] == 3
