"""TCP connections of the HTTP binding are bounded (issue 14,
host_tools.service.conn_limits, docs/SECURITY.md): per client IP and in all,
the least recently active idle one closed first, a new one refused (503
busy, Retry-After) only when all are busy, and idle ones closed after
http_idle_timeout_s.  The service is a real process; clients are real
sockets on loopback addresses."""

import asyncio
import json
import socket
import time

from e2e import ServiceProc

from atls.tls.client import ClientConfig
from host_tools import atls_http_client as hc
from host_tools.service.conn_limits import REFUSED_S, ConnTable

PSK = bytes(range(32))


def test_conn_table_refuses_past_the_ip_bound_evicts_idle_past_the_total():
    t = ConnTable(max_total=4, max_per_ip=2)
    assert t.open("a1", "A") == (True, []) and t.open("a2", "A") == (True, [])
    assert t.open("a3", "A") == (False, []) and t.refused == {"a3"}  # A's own bound
    t.closed("a3")
    t.busy("a1")
    assert t.open("b1", "B") == (True, []) and t.open("c1", "C") == (True, [])
    assert t.open("d1", "D") == (True, ["a2"])  # in all: the oldest idle of the IP holding most
    for k in ("b1", "c1", "d1"):
        t.busy(k)
    assert t.open("e1", "E") == (False, [])  # none idle: refused
    t.idle("b1")  # answered: idle, the most recently active
    assert t.open("e2", "E") == (True, ["b1"])
    assert set(t.conns) == {"a1", "c1", "d1", "e2"} and t.refused == {"e1"}
    t.closed("e1"), t.closed("a1")
    assert t.per_ip == {"C": 1, "D": 1, "E": 1} and not t.refused
    assert t.counters["refused"] == 2 and t.counters["evicted"] == 2


def _closed(sock, wait=0.0):
    """True if the peer closed `sock` (EOF or reset) within `wait` seconds."""
    sock.settimeout(wait or 0.01)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def _connect(addr, src):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(addr)
    return s


def test_idle_connections_capped_per_ip_and_in_all_a_device_still_gets_in(tmp_path):
    """Idle keep-alive connections were never closed (aiohttp's keep-alive
    timeout is an hour): 1,000 of them from one address held 1,000 file
    descriptors (fds_max 1,009 in the abuse bench) and at the process limit
    nobody got in.  Now an IP holds at most max_connections_per_ip (more are
    refused and closed within REFUSED_S), the service max_connections (the
    busiest IP's oldest idle one goes), and a device from another address
    still opens a session and long-polls through 20 idle connections."""
    limits = {"max_connections_per_ip": 4, "max_connections": 6, "http_idle_timeout_s": 8}
    svc = ServiceProc(
        tmp_path, devices={"dev-1": PSK}, limits=limits, extra={"http_listen": "127.0.0.1:0"}
    )
    http = json.loads((svc.tmp / "service.ready.json").read_text())["http"]
    host, port = http.rsplit(":", 1)
    addr = (host, int(port))
    socks = []
    try:
        for _ in range(20):  # one address, no request: idle from the start
            socks.append(_connect(addr, "127.0.0.2"))
            time.sleep(0.02)
        time.sleep(REFUSED_S + 0.5)
        assert [not _closed(s) for s in socks] == [True] * 4 + [False] * 16
        other = [_connect(addr, "127.0.0.3") for _ in range(3)]
        time.sleep(0.3)  # 7 > 6 in all: the busiest IP's oldest idle one went
        assert [not _closed(s) for s in socks[:4]] == [False, True, True, True]
        assert not any(_closed(s) for s in other)
        socks += other

        async def device():
            tr = hc.HttpTransport("http://%s/atls" % http)
            await hc.AtlsClient(tr, ClientConfig(psk=PSK, psk_identity=b"dev-1")).connect()
            await tr.post_packets([], wait_ms=500)
            await tr.close()

        asyncio.run(asyncio.wait_for(device(), 20))
        # idle past http_idle_timeout_s: closed by the service
        assert all(_closed(s, wait=10.0) for s in socks[2:4] + other)
        c = svc.counters(settle=1.2)["http"]["connections"]
        assert c["max_open"] <= 6 and c["refused"] == 16 and c["evicted"] >= 1
    finally:
        for s in socks:
            s.close()
        svc.stop()


def test_refused_connection_is_answered_503_busy_not_reset(tmp_path):
    """A connection past its IP's bound (here: 2 connections with a request
    in progress each) gets its request answered 503 busy with Retry-After
    and Connection: close, then EOF: a reset made clients reconnect at once.
    A connection of another IP still gets in."""
    from host_tools import http_binding as hb

    post = (
        b"POST /atls HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
        b"Content-Length: 10\r\n\r\n" % hb.CT_DATA.encode()
    )
    svc = ServiceProc(
        tmp_path,
        devices={"dev-1": PSK},
        limits={"max_connections_per_ip": 2},
        extra={"http_listen": "127.0.0.1:0"},
    )
    host, port = json.loads((svc.tmp / "service.ready.json").read_text())["http"].rsplit(":", 1)
    addr = (host, int(port))
    socks = []
    try:
        for _ in range(2):  # headers sent, body awaited: a request in progress
            socks.append(_connect(addr, "127.0.0.2"))
            socks[-1].sendall(post)
        time.sleep(0.5)
        third = _connect(addr, "127.0.0.2")
        socks.append(third)
        third.sendall(post + b"0123456789")
        third.settimeout(5)
        answer = b""
        while True:
            chunk = third.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 10" in answer
        assert b"ATLS-Error: busy" in answer and b"Connection: close" in answer
        assert not any(_closed(s) for s in socks[:2])  # the busy ones stay
        other = _connect(addr, "127.0.0.3")
        socks.append(other)
        time.sleep(0.3)
        assert not _closed(other)
        c = svc.counters(settle=1.2)["http"]
        assert c["connections"]["refused"] == 1 and c["rejected"]["busy"] == 1
    finally:
        for s in socks:
            s.close()
        svc.stop()
