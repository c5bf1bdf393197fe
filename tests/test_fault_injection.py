"""Issue 12 "Done when" 1: the real firmware/main.py (unix port, UDP board,
.mpy firmware, a heap too small for the Certificate) against a hostile path
(tests/hostile_peer.py) that answers its handshakes in turn with HRR + plaintext close_notify, random flights, a huge
Certificate, a forged ERROR and garbage: the process never exits, every
attack ends a session and a new one starts, and once the path relays to the
real service the device completes a normal handshake and delivers readings.
Before the fix the first attack ended main.py (UsageError "connection is
closed")."""

import json
import shutil

import hostile_peer
from conftest import ROOT
from e2e import ServiceProc, der_hex
from test_main_config import Device

from host_tools import pki

PSK = bytes(range(32))
# 64-bit unix port: 96K cannot run a PSK session; the Certificate does not fit;
# link v2 (~3 KiB) and the OTA boot path took it from 160K to 184K (issue 17: memory)
HEAP = "184K"
ATTACKS = ["hrr_close", "random", "bigcert", "error", "garbage"]


def test_issue12_main_py_survives_a_hostile_path_then_delivers(mpyc, tmp_path):
    (tmp_path / "svc").mkdir()
    svc = ServiceProc(tmp_path / "svc", {"dev-1": PSK})
    peer, addr, sock = hostile_peer.start(list(ATTACKS), forward_to=svc.addr)
    shutil.copy(ROOT / "boards" / "unix" / "board_config.json", tmp_path / "board_config.json")
    dev = {
        "device_id": "dev-1",
        # a CA too: a path that declines the PSK gets the certificate path parsed
        "tls": {
            "psk": PSK.hex(),
            "psk_identity": "dev-1",
            "ca": der_hex(pki.make_ca("FI CA").cert),
            "server_name": "service.local",
        },
        "link": {
            "host": addr[0],
            "port": addr[1],
            "rto_ms": 200,
            "handshake_timeout_ms": 2000,
            "retry_ms": 200,
            "retry_max_ms": 800,
        },
        "app": {"period_ms": 300, "count": 3, "stats_ms": 100000},
    }
    (tmp_path / "device.json").write_text(json.dumps(dev))
    d = Device(mpyc, tmp_path, heapsize=HEAP)
    try:
        d.wait_for(lambda e: e["ev"] == "up", timeout=45)
        assert peer.done == ATTACKS and peer.forwarding
        # each attack ended a session ("failed"/"down"), or, when it left the
        # heap too fragmented for the next datagram, the whole application
        # (the supervisor's "error" line, then a restart)
        fails = [e for e in d.events if e["ev"] in ("failed", "down", "error")]
        assert len(fails) >= len(ATTACKS), d.events
        reasons = [e.get("reason") or e["error"] for e in fails]
        # the huge Certificate: decrypted, then too big for this heap (MemoryError
        # inside the session, observed at 160K) or refused by the parser
        assert [r for r in reasons if r.startswith(("MemoryError", "tls alert"))], reasons
        d.wait_for(lambda e: e["ev"] == "ack" and e["n"] == 3, timeout=15)

        def echo2(e):
            return e["ev"] == "rx" and '"n":2' in e["data"]

        # the echo may come before that ACK: one the service held for the
        # device from a session an attack ended comes first in the next one
        if not any(echo2(e) for e in d.events):
            d.wait_for(echo2, timeout=15)
        assert d.proc.poll() is None
        assert "Traceback" not in "".join(d.stderr)
        errors = [e["error"] for e in d.events if e["ev"] == "error"]
        assert all(e.startswith("MemoryError") for e in errors), errors
        assert not [e for e in d.events if e["ev"] == "config_error"], d.events
    finally:
        d.stop()
        peer.stop = True
        sock.close()
        svc.stop()
