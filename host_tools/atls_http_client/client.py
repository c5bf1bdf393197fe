"""The ATLS session over an HTTP or CoAP transport: the firmware's TLSClient
and Link under CPython (`AtlsClient`), the CLI's session (`run`) and the CLI
(`main`, run by `python -m host_tools.atls_http_client`).

After the handshake both sides export the key block (docs/PROTOCOL.md §3,
`atls.channel.key_block`) and run the link's channel over packet batches.
"""

import argparse
import asyncio
import json
import os
import ssl
import time
from pathlib import Path

from atls.channel import key_block
from atls.errors import AlertError
from atls.link import Link, LinkConfig, QueueFull
from atls.protocol import TLS_AES_128_CCM_8_SHA256
from atls.tls.client import ClientConfig, TLSClient
from host_tools.atls_http_client.transports import TransportError, make_transport

__all__ = ["AtlsClient", "tls_config_from_args", "run", "main"]


def _now_ms():
    return int(time.monotonic() * 1000)


class AtlsClient:
    """TLSClient + Link over an HTTP or CoAP transport.  After connect(),
    send() queues messages and exchange() moves packets; events() returns
    ("message", bytes), ("delivered", seq), ("closed"|"error", reason).
    When the service lost the session, its refusal of a batch carries its
    RESET (PROTOCOL.md §5, BINDINGS.md): exchange() gives it to the link, a
    valid token ends it with ("error", "reset") and the transport forgets
    the session; connect() starts a new one, whose message ids go on from
    the old session's (boot: the high 32 bits of every id, random by
    default, so that two clients never share ids)."""

    def __init__(self, transport, tls_config, link_config=None, clock=_now_ms, boot=None):
        self.transport = transport
        self.tls_config = tls_config
        self.link_config = link_config or LinkConfig(mtu=1200)
        self.clock = clock
        self.tls = None
        self.link = None
        self.suite = None
        self.handshake_ms = None
        self.flights_sent = []  # exactly what TLSClient wrote, per request
        self.flights_received = []  # exactly what the service answered
        self._ev = []
        # PROTOCOL.md §4: message ids boot << 32 | counter, unique per client (the
        # service de-duplicates by them across sessions and its own restarts)
        if boot is None:
            boot = int.from_bytes(os.urandom(4), "big")
        self._next_id = (boot & 0xFFFFFFFF) << 32

    @property
    def sid(self):
        return self.transport.sid

    async def connect(self, max_flights=6):
        t0 = self.clock()
        tls = self.tls = TLSClient(self.tls_config)
        tls.start(t0)
        out = tls.data_to_send()
        for _ in range(max_flights):
            self.flights_sent.append(out)
            answer = await self.transport.post_flight(out)
            self.flights_received.append(answer)
            was_connected = tls.connected
            if answer:
                tls.receive(answer, self.clock())  # AlertError on any failure
            out = tls.data_to_send()
            if was_connected:  # that was our last flight; the answer held tickets at most
                break
            if not out:
                if tls.connected:
                    break
                raise AlertError(80, "service answered without completing its flight")
        if not tls.connected:
            raise AlertError(80, "handshake did not finish")
        if self.transport.sid is None:
            raise TransportError(200, "no_session_id", "the service named no session id")
        if self.link is not None and self.link.channel is not None:  # a new session
            self._next_id = self.link.first_unacked_id(True)  # ids go on, never reused
        self.link = Link("client", self.link_config, self.transport.sid)
        self.link.start_channel(key_block(tls), tls.suite, self._next_id)
        self.suite = tls.suite
        for _ in range(max_flights):  # v2: both HELLOs (seq 0, control channel) first
            if self.link.peer_base is not None or self.link.state == "failed":
                break
            await self.exchange(wait_ms=500)
        if self.link.state == "failed":  # e.g. the service's RESET: no session
            why = [str(e[1]) for e in self._ev if e[0] == "error"]
            raise TransportError(200, "session_ended", why[-1] if why else "failed")
        if self.link.peer_base is not None:
            await self.exchange()  # the ACK of the service's HELLO, so it is not resent
        self.handshake_ms = self.clock() - t0

    def send(self, payload):
        """Queue a message (raises QueueFull when the link's queue is full)."""
        return self.link.send(payload, self.clock())

    def events(self):
        ev = self._ev
        self._ev = []
        return ev

    async def exchange(self, wait_ms=0):
        """Send what the link has (maybe nothing: a poll) and take in the
        answer.  wait_ms lets the service hold an otherwise empty answer."""
        out = self.link.datagrams(self.clock())
        try:
            answer = await self.transport.post_packets(out, 0 if out else wait_ms)
        except TransportError as e:
            if not e.packets:
                raise
            # the service lost the session and answered with its RESET (PROTOCOL.md
            # §5): the link checks the token; a valid one ends it ("error", "reset")
            now = self.clock()
            for p in e.packets:
                self.link.receive(p, now)
            self._ev.extend(self.link.events())
            if self.link.state != "failed":
                raise  # not our token: the refusal stands
            self.transport.reset()
            return len(out), len(e.packets)
        now = self.clock()
        for p in answer:
            self.link.receive(p, now)
        self._ev.extend(self.link.events())
        return len(out), len(answer)

    async def close(self, timeout_s=5.0):
        """Close the channel (CLOSE both ways, PROTOCOL.md §5)."""
        if self.link is None:
            return
        self.link.close(0)
        end = time.monotonic() + timeout_s
        while self.link.state not in ("closed", "failed") and time.monotonic() < end:
            await self.exchange(wait_ms=200)


def tls_config_from_args(a):
    kw = {}
    if a.psk:
        kw["psk"] = bytes.fromhex(a.psk)
        kw["psk_identity"] = a.psk_id.encode()
    if a.ca:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certs = x509.load_pem_x509_certificates(Path(a.ca).read_bytes())
        kw["ca_certs"] = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        if not a.server_name:
            raise ValueError("--ca needs --server-name (the service's name in its certificate)")
        kw["server_name"] = a.server_name
        kw["check_hostname"] = True
    if a.suites:
        kw["suites"] = [int(s, 0) for s in a.suites.split(",")]
    return ClientConfig(**kw)


async def run(
    transport,
    tls_config,
    count=10,
    prefix=b"atls-http-client message ",
    timeout_s=60.0,
    out=None,
    link_config=None,
    size=0,
    client=None,
):
    """Connect, send `count` messages (prefix, number, padded with '.' to
    `size` bytes), wait for each echo, close; return a summary dict.
    `out(line)` gets one line per echo; pass `client` to inspect it after."""
    client = client or AtlsClient(transport, tls_config, link_config)
    t0 = time.monotonic()
    summary = {
        "ok": False,
        "sent": 0,
        "delivered": 0,
        "received": 0,
        "in_order": True,
        "duplicates": 0,
        "error": None,
    }
    got = []
    try:
        await client.connect()
        summary.update(
            suite=client.suite,
            sid=client.sid,
            handshake_ms=client.handshake_ms,
            flights=len(client.flights_sent),
        )
        expected = [(prefix + b"%05d" % i).ljust(size, b".") for i in range(count)]
        sent = delivered = 0
        end = t0 + timeout_s
        while (len(got) < count or delivered < count) and time.monotonic() < end:
            while sent < count:
                try:
                    client.send(expected[sent])
                except QueueFull:
                    break
                sent += 1
            await client.exchange(wait_ms=500)
            for ev in client.events():
                if ev[0] == "message":
                    got.append(bytes(ev[1]))
                    if out:
                        text = bytes(ev[1]).decode("utf-8", "replace")
                        out("echo %d: %s" % (len(got) - 1, text))
                elif ev[0] == "delivered":
                    delivered += 1
                elif ev[0] in ("error", "closed"):
                    raise TransportError("link", ev[0], str(ev[1]))
        await client.close()
        summary.update(
            sent=sent,
            delivered=delivered,
            received=len(got),
            in_order=got == expected[: len(got)],
            duplicates=len(got) - len(set(got)),
            closed=client.link.state == "closed",
        )
        summary["ok"] = got == expected and delivered == count
    except Exception as e:  # TransportError, AlertError, aiohttp/aiocoap errors: report
        summary["error"] = "%s: %s" % (type(e).__name__, e)
        summary["received"] = len(got)
    finally:
        await transport.close()
    summary["requests"] = transport.requests
    summary["elapsed_s"] = round(time.monotonic() - t0, 3)
    if client.link is not None:
        summary["link"] = {k: v for k, v in client.link.counters.items() if k != "drops"}
        summary["drops"] = {k: v for k, v in client.link.drops.items() if v}
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.atls_http_client",
        description="ATLS over HTTP(S)/CoAP client (draft §3.1)",
    )
    ap.add_argument(
        "--url", required=True, help="http(s)://host:port/atls or coap://host:port/.well-known/atls"
    )
    ap.add_argument("--psk-id", help="PSK identity")
    ap.add_argument("--psk", help="PSK (hex)")
    ap.add_argument("--ca", help="PEM CA certificate(s) for the service's ATLS certificate")
    ap.add_argument("--server-name", help="name the service's certificate must carry")
    ap.add_argument(
        "--suites",
        help="comma-separated suite code points, e.g. 0x%04x" % TLS_AES_128_CCM_8_SHA256,
    )
    ap.add_argument("--count", type=int, default=10, help="messages to send (default 10)")
    ap.add_argument("--size", type=int, default=0, help="pad messages to this many bytes")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--https-ca", help="PEM CA for the HTTPS leg (a middlebox's CA)")
    ap.add_argument(
        "--https-insecure",
        action="store_true",
        help="do not verify the HTTPS leg (ATLS still authenticates the service)",
    )
    ap.add_argument("--quiet", action="store_true", help="print the summary only")
    a = ap.parse_args(argv)
    if bool(a.psk) != bool(a.psk_id) or not (a.psk or a.ca):
        ap.error("give --psk-id with --psk, and/or --ca")
    https_ssl = None
    if a.https_insecure:
        https_ssl = False
    elif a.https_ca:
        https_ssl = ssl.create_default_context(cafile=a.https_ca)
    try:
        cfg = tls_config_from_args(a)
        transport = make_transport(a.url, https_ssl)
    except Exception as e:
        ap.error(str(e))
    summary = asyncio.run(
        run(
            transport,
            cfg,
            a.count,
            timeout_s=a.timeout,
            size=a.size,
            out=None if a.quiet else print,
        )
    )
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1
