"""End to end over loopback UDP: a device process in the MicroPython unix
port and the service process (OpenSSL) complete PSK+ECDHE and certificate
sessions for each suite, then exchange 200 messages each way, every one
exactly once and in order (the service echoes)."""

import os

import pytest
from e2e import Relay, ServiceProc, der_hex, run_device

from atls.protocol import SUITES  # the device's suites: name -> code point
from host_tools import pki


@pytest.fixture(scope="module")
def creds():
    ca = pki.make_ca("E2E CA")
    dev_ca = pki.make_ca("E2E Device CA")
    return {
        "ca": ca,
        "server": pki.make_cert("service.local", issuer=ca),
        "dev_ca": dev_ca,
        "device": pki.make_cert("device-7", issuer=dev_ca, client=True),
    }


def _check(summary, count):
    assert summary["ok"], summary
    assert summary["received"] == count and summary["in_order"] and summary["duplicates"] == 0
    assert summary["delivered"] == count


@pytest.mark.parametrize("suite", list(SUITES))
def test_psk_session_200_each_way(mpyc, tmp_path, suite):
    psk = os.urandom(32)
    svc = ServiceProc(tmp_path, devices={"device-1": psk})
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": svc.addr[0],
                "port": svc.addr[1],
                "psk": psk.hex(),
                "psk_identity": "device-1",
                "suites": [SUITES[suite]],
                "count": 200,
            },
        )
        _check(s, 200)
        assert s["suite"] == SUITES[suite]
        c = svc.counters()
        assert c["handshakes_ok"] == 1 and c["messages_in"] == 200 and c["messages_out"] == 200
    finally:
        svc.stop()
    assert psk.hex() not in svc.logs()


@pytest.mark.parametrize("suite", list(SUITES))
def test_certificate_session_200_each_way(mpyc, tmp_path, creds, suite):
    dev = creds["device"]
    svc = ServiceProc(
        tmp_path, server=creds["server"], device_ca=creds["dev_ca"], certs={"device-7": dev.cert}
    )
    key = dev.key.private_numbers().private_value.to_bytes(32, "big")
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": svc.addr[0],
                "port": svc.addr[1],
                "ca": der_hex(creds["ca"].cert),
                "server_name": "service.local",
                "cert": der_hex(dev.cert),
                "key": key.hex(),
                "suites": [SUITES[suite]],
                "count": 200,
            },
        )
        _check(s, 200)
        c = svc.counters()
        assert c["handshakes_ok"] == 1 and c["messages_in"] == 200
        assert '"identity": "device-7"' in svc.logs()
    finally:
        svc.stop()


def test_mtu_64_with_20_percent_loss_both_ways(mpyc, tmp_path):
    psk = os.urandom(32)
    link = {"mtu": 64, "rto_ms": 200, "rto_max_ms": 1000}
    svc = ServiceProc(tmp_path, devices={"device-1": psk}, link=link)
    relay = Relay(tmp_path, svc.addr, loss=0.2, seed=4)
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": relay.addr[0],
                "port": relay.addr[1],
                "psk": psk.hex(),
                "psk_identity": "device-1",
                "mtu": 64,
                "rto_ms": 200,
                "rto_max_ms": 1000,
                "count": 200,
                "timeout_ms": 120000,
            },
            timeout=180,
        )
        _check(s, 200)
        assert s["link"]["retransmissions"] > 0
        c = svc.counters()
        assert c["messages_in"] == 200
    finally:
        relay.stop()
        svc.stop()


def test_wrong_psk_is_refused_and_counted(mpyc, tmp_path):
    svc = ServiceProc(tmp_path, devices={"device-1": os.urandom(32)})
    try:
        s = run_device(
            mpyc,
            tmp_path,
            {
                "host": svc.addr[0],
                "port": svc.addr[1],
                "psk": os.urandom(32).hex(),
                "psk_identity": "device-1",
                "count": 1,
                "timeout_ms": 20000,
            },
        )
        assert not s["ok"] and s["failed"] and s["received"] == 0
        c = svc.counters()
        assert c["handshakes_failed"] >= 1 and c["handshakes_ok"] == 0
    finally:
        svc.stop()
