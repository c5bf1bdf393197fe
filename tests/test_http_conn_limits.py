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
from host_tools.service.conn_limits import ConnTable

PSK = bytes(range(32))


def test_conn_table_evicts_idle_before_refusing():
    t = ConnTable(max_total=4, max_per_ip=2)
    assert t.open("a1", "A") == (True, []) and t.open("a2", "A") == (True, [])
    t.busy("a1")
    assert t.open("a3", "A") == (True, ["a2"])  # a1 is busy: the idle a2 goes
    t.busy("a3")
    assert t.open("a4", "A") == (False, [])  # both busy: the new one is refused
    assert t.open("b1", "B") == (True, []) and t.open("b2", "B") == (True, [])
    assert t.open("c1", "C") == (True, ["b1"])  # in all: the oldest idle of B (2, A's busy)
    t.idle("a1")  # a1 answered: idle, the most recently active
    assert t.open("d1", "D") == (True, ["a1"])  # A holds the most (2) with an idle one
    assert set(t.conns) == {"a3", "b2", "c1", "d1"}
    t.closed("a3")
    assert t.per_ip == {"B": 1, "C": 1, "D": 1}
    assert t.counters["refused"] == 1 and t.counters["evicted"] == 3


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
    nobody got in.  Now an IP holds at most max_connections_per_ip, the
    service max_connections, the oldest idle ones are closed, and a device
    still opens a session and long-polls through 20 idle connections."""
    limits = {"max_connections_per_ip": 4, "max_connections": 6, "http_idle_timeout_s": 2}
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
        time.sleep(0.3)
        open_now = [not _closed(s) for s in socks]
        assert open_now == [False] * 16 + [True] * 4  # the newest 4 of that IP
        other = [_connect(addr, "127.0.0.3") for _ in range(3)]
        time.sleep(0.3)  # 7 > 6 in all: the busiest IP's oldest idle one went
        assert [not _closed(s) for s in socks[16:]] == [False, True, True, True]
        assert not any(_closed(s) for s in other)
        socks += other

        async def device():
            tr = hc.HttpTransport("http://%s/atls" % http)
            await hc.AtlsClient(tr, ClientConfig(psk=PSK, psk_identity=b"dev-1")).connect()
            await tr.post_packets([], wait_ms=500)
            await tr.close()

        asyncio.run(asyncio.wait_for(device(), 20))
        # idle past http_idle_timeout_s: closed by the service
        assert all(_closed(s, wait=4.0) for s in socks[17:])
        c = svc.counters(settle=1.2)["http"]["connections"]
        assert c["max_open"] <= 6 and c["evicted"] >= 17
    finally:
        for s in socks:
            s.close()
        svc.stop()


def test_new_connection_refused_503_only_when_all_are_busy(tmp_path):
    """When every connection of an IP carries a request (here: headers sent,
    body awaited), a new one is not evicting anything: it gets 503 busy with
    Retry-After and is closed; a connection of another IP still gets in."""
    from host_tools import http_binding as hb

    limits = {"max_connections_per_ip": 2}
    svc = ServiceProc(
        tmp_path, devices={"dev-1": PSK}, limits=limits, extra={"http_listen": "127.0.0.1:0"}
    )
    host, port = json.loads((svc.tmp / "service.ready.json").read_text())["http"].rsplit(":", 1)
    addr = (host, int(port))
    socks = []
    try:
        for _ in range(2):
            s = _connect(addr, "127.0.0.2")
            s.sendall(
                b"POST /atls HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                b"Content-Length: 10\r\n\r\n" % hb.CT_DATA.encode()
            )
            socks.append(s)
        time.sleep(0.5)
        third = _connect(addr, "127.0.0.2")
        socks.append(third)
        third.settimeout(5)
        answer = third.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 10" in answer
        assert b"ATLS-Error: busy" in answer and third.recv(4096) == b""
        assert not any(_closed(s) for s in socks[:2])  # the busy ones stay
        other = _connect(addr, "127.0.0.3")
        socks.append(other)
        time.sleep(0.3)
        assert not _closed(other)
        c = svc.counters(settle=1.2)["http"]["connections"]
        assert c["refused"] == 1 and c["evicted"] == 0
    finally:
        for s in socks:
            s.close()
        svc.stop()
