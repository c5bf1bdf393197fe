"""The attackers of section `abuse` (bench.abuse), each a child process so
that they do not share the honest devices' interpreter lock:

    python -m host_tools.bench.abuse_flood spoof    --target H:P --seconds S --rate R
                                                    --sources N --ips K --out F.json
    python -m host_tools.bench.abuse_flood longpoll --url URL --identity ID --polls N
                                                    --seconds S --out F.json

spoof: N UDP sockets bound to K loopback addresses (127.0.2.x / --ip-base)
stand for N spoofed sources; they send R replayed first flights per second (ClientHellos
made by the firmware client, some with a registered PSK identity, some with
an unknown one) and malformed packets (junk, truncated, a non-final fragment
of flight 0, DATA with a made-up session id; one per 10 first flights, on
top), and count what comes back to each.  Every other first flight is a
replay as it is (a ClientHello with the registered identity has a valid
binder: a whole handshake if the service does not spot the replay), the
others get a fresh random (RFC 8446 §4.1.2 offset 16 of the datagram), so
they are new ClientHellos whose binder fails: the service must run TLS up to
the binder check to know.  Another 100 "probe" sockets (on 10 addresses
of their own) send one
ClientHello each (its own, with the registered identity and a valid binder:
a whole handshake) at the start and only listen: bytes received / bytes sent
per address is the reflection amplification (retransmissions included, for
as long as the run lasts).  Only 127.0.0.0/8 is ever used.

longpoll: one session over the service's HTTP binding (AtlsClient), then N
concurrent long-polls (ATLS-Wait 15 s) kept open, each renewed when answered.
"""

import argparse
import json
import os
import select
import socket
import sys
import time

PROBES = 100


def _loopback(host):
    if not host.startswith("127."):
        raise SystemExit("abuse_flood: loopback (127.0.0.0/8) only, not %s" % host)
    return host


def first_flights(n=8, identity=None):
    """ClientHello datagrams (flight 0, sid 0), half with a registered
    identity (dev-00), half with an unknown one (or all with `identity`)."""
    from host_tools.bench.pair import CCM8, Device

    out = []
    for i in range(n):
        ident = identity or (b"dev-00" if i % 2 else b"nobody-%d" % i)
        d = Device(CCM8, 1200, identity=ident)
        d.start(0)
        out.extend(d.link.datagrams(0))
    return out


def malformed():
    return [
        b"\xa0",  # one byte
        b"\xa0\x00\x00\x00\x00\x00",  # a non-final 1-byte fragment of flight 0 (issue 14 item 1)
        b"\xa3\x12\x34\x00\x01" + os.urandom(24),  # DATA, made-up session id
        os.urandom(40),  # junk
        b"\xa6\x00\x00\x01",  # ERROR unknown_session
    ]


def spoof(a):
    host, port = a.target.rsplit(":", 1)
    target = (_loopback(host), int(port))
    ip_base = a.ip_base.rstrip(".")
    socks = []
    poller = select.epoll()
    for i in range(a.sources + PROBES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        # the probes on 10 addresses of their own, after the flood's
        k = i % a.ips if i < a.sources else a.ips + (i - a.sources) % 10
        s.bind((_loopback("%s.%d" % (ip_base, 1 + k)), 0))
        s.setblocking(False)
        socks.append(s)
        poller.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    sent = [0] * len(socks)
    got = [0] * len(socks)
    good, bad = first_flights(), malformed()
    fresh = [first_flights(1, b"dev-00")[0] for _ in range(PROBES)]  # valid binders
    n_sent = n_bad = n_fresh = errors = 0
    probes = socks[a.sources :]
    for j, s in enumerate(probes):
        p = fresh[j]  # each its own ClientHello: a replay of the flood's would be dropped
        s.sendto(p, target)
        sent[a.sources + j] += len(p)
    t0 = time.monotonic()
    end = t0 + a.seconds
    tick = 0.01
    k = 0
    nxt = t0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= nxt:
            due = int(a.rate * tick) if a.rate else 200
            for _ in range(due):  # `rate` first flights, and one malformed packet per 10 more
                i = k % a.sources
                k += 1
                p = good[k % len(good)]
                if k & 1:
                    p = p[:16] + os.urandom(32) + p[48:]
                    n_fresh += 1
                try:
                    socks[i].sendto(p, target)
                    sent[i] += len(p)
                    n_sent += 1
                    if k % 10 == 0:
                        j = (i + 1) % a.sources
                        p = bad[(k // 10) % len(bad)]
                        socks[j].sendto(p, target)
                        sent[j] += len(p)
                        n_bad += 1
                except OSError:
                    errors += 1
            nxt += tick
            if nxt < now - 1.0:  # behind by a second: do not try to catch up
                nxt = now
        for fd, _ in poller.poll(0 if a.rate else 0.001):
            i = by_fd[fd]
            while True:
                try:
                    got[i] += len(socks[i].recv(4096))
                except (BlockingIOError, OSError):
                    break
    wall = time.monotonic() - t0
    amps = [got[i] / sent[i] for i in range(len(socks)) if sent[i]]
    res = {
        "sent": n_sent,
        "malformed": n_bad,
        "fresh": n_fresh,  # first flights with a fresh random (the rest are replays)
        "send_errors": errors,
        "seconds": round(wall, 2),
        "rate_achieved": round(n_sent / wall, 1) if wall else 0,  # first flights per second
        "malformed_rate_achieved": round(n_bad / wall, 1) if wall else 0,
        "sources": a.sources,
        "ips": a.ips,
        "max_amplification": round(max(amps), 2) if amps else 0.0,
        "probe_max_amplification": round(max(amps[a.sources :]), 2) if amps else 0.0,
        "flood_max_amplification": round(max(amps[: a.sources]), 2) if amps else 0.0,
        "bytes_sent": sum(sent),
        "bytes_received": sum(got),
    }
    for s in socks:
        s.close()
    return res


async def _longpoll(a):
    import asyncio

    import aiohttp

    from atls.tls.client import ClientConfig
    from host_tools.atls_http_client import transports
    from host_tools.atls_http_client.client import AtlsClient
    from host_tools.atls_http_client.transports import HttpTransport

    backoff_s = getattr(transports, "backoff_s", None)  # None: a client without backoff
    from host_tools.bench.pair import CCM8, PSK

    _loopback(a.url.split("//", 1)[1].split(":", 1)[0])
    conn = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.DummyCookieJar())
    res = {"polls": a.polls, "answered": 0, "errors": 0, "handshake": False, "max_open": 0}
    tr = HttpTransport(a.url, session=session, timeout_s=30.0)
    cfg = ClientConfig(suites=(CCM8,), psk=PSK, psk_identity=a.identity.encode())
    client = AtlsClient(tr, cfg)
    end = time.monotonic() + a.seconds
    open_now = [0]
    errs = {}
    try:
        await asyncio.wait_for(client.connect(), 20)
        res["handshake"] = True
        with open(a.out + ".up", "w") as f:
            f.write("up\n")
    except Exception as e:  # noqa: BLE001 - the figure says what happened
        res["handshake_error"] = "%s: %s" % (type(e).__name__, e)

    async def poll():
        while time.monotonic() < end:
            open_now[0] += 1
            res["max_open"] = max(res["max_open"], open_now[0])
            try:
                left = max(0.5, end - time.monotonic())
                await asyncio.wait_for(tr.post_packets([], wait_ms=15000), left + 1)
                res["answered"] += 1
            except asyncio.TimeoutError:
                pass  # the run ended while this poll was held: not an error
            except Exception as e:  # noqa: BLE001
                res["errors"] += 1
                name = type(e).__name__
                if hasattr(e, "status"):  # TransportError: the HTTP status and reason
                    name = "%s %s" % (e.status, getattr(e, "reason", ""))
                errs[name] = errs.get(name, 0) + 1
                # the client already waited out `retries` refusals: wait once more, as asked
                wait = getattr(e, "retry_after", None)
                wait = 0.2 if wait is None or backoff_s is None else backoff_s(wait, tr.retries)
                await asyncio.sleep(max(0.0, min(wait, end - time.monotonic())))
            finally:
                open_now[0] -= 1

    if res["handshake"]:
        await asyncio.gather(*(poll() for _ in range(a.polls)))
    res["error_kinds"] = errs
    res["requests"] = tr.requests
    res["backoffs"] = getattr(tr, "backoffs", None)  # refusals waited out (Retry-After)
    await session.close()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.abuse_flood")
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("spoof")
    p.add_argument("--target", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--rate", type=int, default=10000, help="0: as fast as it goes")
    p.add_argument("--sources", type=int, default=2000)
    p.add_argument("--ips", type=int, default=20)
    p.add_argument("--ip-base", default="127.0.2")
    p.add_argument("--out", required=True)
    q = sub.add_parser("longpoll")
    q.add_argument("--url", required=True)
    q.add_argument("--identity", required=True)
    q.add_argument("--polls", type=int, default=1000)
    q.add_argument("--seconds", type=float, required=True)
    q.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.mode == "spoof":
        res = spoof(a)
    else:
        import asyncio

        res = asyncio.run(_longpoll(a))
    with open(a.out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
