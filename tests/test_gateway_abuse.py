"""The gateway under flood (issue 14, item 2): junk and spoofed first flights
from many source ports must not fill the flow table, lock out paired ZigBee
devices or honest WiFi devices, or cost a file descriptor each; flows expire
when idle.  The Gateway runs in process against a real UDP "service" socket."""

import asyncio
import json
import os
import socket

from atls import wire

FIRST = wire.encode_hs(0, 0, 0, b"\x01client-hello-ish", last=True)  # HS_END, sid 0, flight 0


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _config(tmp_path, svc_port, limits=None):
    from host_tools.gateway import Config

    cfg = tmp_path / "gateway.json"
    cfg.write_text(
        json.dumps(
            {
                "services": {"default": "127.0.0.1:%d" % svc_port},
                "state_dir": "gw",
                "auto_confirm": True,
                "limits": dict({"max_devices": 1000}, **(limits or {})),
            }
        )
    )
    return Config(cfg)


def _service_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _drain(s):
    got = []
    while True:
        try:
            got.append(s.recvfrom(4096))
        except BlockingIOError:
            return got


def test_junk_from_1000_ports_creates_no_flow_and_no_fd(tmp_path):
    """~1000 one-byte / junk datagrams from distinct ports: no flow, no socket;
    a paired ZigBee device and an honest WiFi device still get through."""
    from host_tools.gateway import Gateway

    svc = _service_socket()
    cfg = _config(tmp_path, svc.getsockname()[1])
    zb = bytes.fromhex("0013a20000000001")

    async def go():
        gw = Gateway(cfg)
        gw.table.add(zb, "dev-zb", "default")
        fds0 = _fds()
        for i in range(1000):
            junk = (b"\xa0", b"\xa3\x00\x07\x00\x01" + b"x" * 20, b"\xa0\x00\x00\x00")[i % 3]
            gw.upstream(("udp", ("10.0.%d.%d" % (i >> 8, i & 255), 1024 + i)), junk)
        fds1 = _fds()
        st = gw.stats()
        gw.upstream(("zb", zb), FIRST)
        gw.upstream(("udp", ("10.9.9.9", 4000)), FIRST)
        await asyncio.sleep(0.05)
        return gw, st, fds1 - fds0, gw.stats()

    gw, st, extra_fds, after = asyncio.run(go())
    assert st["flows"] == 0 and extra_fds == 0
    assert "too_many_flows" not in after["drops"]
    assert after["flows"] == 2 and after["up_packets"] == 2
    assert len(_drain(svc)) == 2
    svc.close()


def test_spoofed_first_flights_from_one_ip_do_not_lock_out_others(tmp_path):
    """1000 well-formed first flights from 1000 ports of one address: that
    address holds a bounded number of flows (and sockets); a paired ZigBee
    device and WiFi devices on other addresses still get flows."""
    from host_tools.gateway import Gateway

    svc = _service_socket()
    cfg = _config(tmp_path, svc.getsockname()[1], {"max_devices": 100})
    zb = bytes.fromhex("0013a20000000002")

    async def go():
        gw = Gateway(cfg)
        gw.table.add(zb, "dev-zb", "default")
        fds0 = _fds()
        for i in range(1000):
            gw.upstream(("udp", ("10.1.1.1", 1024 + i)), FIRST)
        held = gw.stats()["flows"]
        extra = _fds() - fds0
        gw.upstream(("zb", zb), FIRST)
        for i in range(20):
            gw.upstream(("udp", ("10.2.0.%d" % (i + 1), 5000)), FIRST)
        st = gw.stats()
        gw.close_flows()
        return held, extra, st

    held, extra, st = asyncio.run(go())
    assert held <= 16 and extra <= 16
    assert st["flows"] == held + 21
    svc.close()


def test_flood_from_many_ips_keeps_honest_and_zigbee_flows(tmp_path):
    """First flights from 5000 addresses fill the unvalidated quota; validated
    WiFi flows and ZigBee flows keep working and new honest devices still get
    a flow (the flooder's oldest unvalidated flows are evicted)."""
    from host_tools.gateway import Gateway

    svc = _service_socket()
    cfg = _config(tmp_path, svc.getsockname()[1])
    zb = bytes.fromhex("0013a20000000003")
    honest = ("udp", ("10.3.0.1", 6000))

    async def go():
        gw = Gateway(cfg)
        gw.table.add(zb, "dev-zb", "default")
        gw.upstream(honest, FIRST)
        # the service answers and the device goes on with its session id: validated
        flow = gw.flows[honest]
        gw.downstream(flow, wire.encode_hs(7, 1, 0, b"server", last=True))
        gw.upstream(honest, wire.encode_hs(9, 2, 0, b"guessed", last=True))
        assert gw.table_flows.is_pending(honest)  # a guessed session id does not validate
        gw.upstream(honest, wire.encode_hs(7, 2, 0, b"finished", last=True))
        assert not gw.table_flows.is_pending(honest)
        fds0 = _fds()
        for i in range(5000):
            gw.upstream(("udp", ("10.4.%d.%d" % (i >> 8, i & 255), 7000)), FIRST)
        extra = _fds() - fds0
        mid = gw.stats()
        gw.upstream(honest, wire.encode(wire.DATA, 7, b"\x00\x01" + b"m" * 12))
        gw.upstream(("zb", zb), FIRST)
        gw.upstream(("udp", ("10.5.0.1", 6001)), FIRST)
        st = gw.stats()
        keys = set(gw.flows)
        gw.close_flows()
        return extra, mid, st, keys

    extra, mid, st, keys = asyncio.run(go())
    lim = mid["limits"]
    assert mid["flows"] <= lim["max_udp_pending"] + 1 and extra <= lim["max_udp_pending"]
    assert honest in keys and ("zb", zb) in keys and ("udp", ("10.5.0.1", 6001)) in keys
    assert "too_many_flows" not in st["drops"]
    svc.close()


def test_flows_expire_when_idle_and_close_their_socket(tmp_path):
    from host_tools.gateway import Gateway

    svc = _service_socket()
    cfg = _config(tmp_path, svc.getsockname()[1], {"idle_timeout_s": 5, "pending_timeout_s": 2})
    zb = bytes.fromhex("0013a20000000004")

    async def go():
        gw = Gateway(cfg)
        gw.table.add(zb, "dev-zb", "default")
        fds0 = _fds()
        gw.upstream(("zb", zb), FIRST)
        gw.upstream(("udp", ("10.6.0.1", 1)), FIRST)
        n0 = gw.stats()["flows"]
        gw.expire(gw.now() + 3)  # the unvalidated UDP flow goes, ZigBee stays
        n1 = gw.stats()["flows"]
        gw.expire(gw.now() + 6)
        return n0, n1, gw.stats(), _fds() - fds0

    n0, n1, st, extra = asyncio.run(go())
    assert (n0, n1, st["flows"], extra) == (2, 1, 0, 0)
    assert st["expired"] == 2
    svc.close()


def test_non_first_packet_from_unknown_source_creates_no_flow(tmp_path):
    """DATA, HS_ACK, flight 2 or a non-zero session id from a source without a
    flow is not a first flight: dropped as no_flow."""
    from host_tools.gateway import Gateway

    svc = _service_socket()
    cfg = _config(tmp_path, svc.getsockname()[1])
    pkts = [
        wire.encode(wire.DATA, 5, b"\x00\x01" + b"z" * 12),
        wire.encode_hs(5, 0, 0, b"ch", last=True),
        wire.encode_hs(0, 2, 0, b"fin", last=True),
        wire.encode(wire.HS_ACK, 0, b"\x00\x80"),
    ]

    async def go():
        gw = Gateway(cfg)
        for i, p in enumerate(pkts):
            gw.upstream(("udp", ("10.7.0.1", 100 + i)), p)
        return gw.stats()

    st = asyncio.run(go())
    assert st["flows"] == 0 and st["drops"] == {"no_flow": 4}
    svc.close()


def test_new_flow_precheck_agrees_with_admit_and_evicts_the_heaviest_ip():
    """refuses_new (the test before a packet is parsed) refuses exactly what
    admit would refuse for the IP's new-flow rate, and nothing else; at the
    unvalidated bound the oldest flow of the IP holding the most goes."""
    from types import SimpleNamespace

    from host_tools.gateway.flows import FlowTable

    lim = {"max_devices": 10, "new_flows_per_ip_per_s": 1, "new_flows_per_ip_burst": 3}
    t = FlowTable(dict(lim, max_udp_pending=4))
    now = 100.0
    keys = [("udp", ("192.0.2.1", p)) for p in range(4)]
    for k in keys:
        pre = t.refuses_new(k, now)
        ok, evicted, reason = t.admit(k, now)
        assert pre == (reason == "new_flow_rate") and evicted == []
        if ok:
            t.add(k, SimpleNamespace(), now)
    assert [k in t.flows for k in keys] == [True, True, True, False]
    assert not t.refuses_new(("udp", ("192.0.2.2", 1)), now)  # another IP: its own bucket
    assert not t.refuses_new(("zb", b"\x00" * 8), now)
    b = ("udp", ("192.0.2.2", 1))
    t.add(b, SimpleNamespace(), now)  # 4 unvalidated: the bound
    ok, evicted, _ = t.admit(("udp", ("192.0.2.3", 1)), now)
    assert ok and len(evicted) == 1 and keys[0] not in t.flows and b in t.flows
