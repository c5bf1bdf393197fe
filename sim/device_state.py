"""What one simulated device reported on its console: the firmware prints
events as "ATLS {json}" lines (sim/fleet.py reads them from its stdout)."""

import threading
import time


class DeviceState:
    """What one device reported on its console ("ATLS {json}" lines)."""

    def __init__(self, name):
        self.name = name
        self.status = "booting"
        self.code = None
        self.address = None
        self.paired = False
        self.handshakes_ok = 0
        self.handshake_ms = []
        self.boot = None
        self.sent = 0
        self.acked = 0
        self.received = 0
        self.retransmissions = 0
        self.failures = 0
        self.boots = []  # (boot id, sent, acked, handshakes started) per boot
        self.lines = 0
        self.last_error = None
        self.lock = threading.Lock()
        self.trace = []  # (wall time, event) of tx, ack, boot, up and ota_* lines

    TRACED = ("tx", "ack", "boot", "up")

    def feed(self, ev):
        kind = ev.get("ev")
        with self.lock:
            self.lines += 1
            if kind in self.TRACED or str(kind).startswith("ota_"):
                self.trace.append((time.time(), ev))
            if kind == "boot":
                self.boot = ev.get("boot")
                self.boots.append({"boot": self.boot, "sent": 0, "acked": 0, "handshakes": 0})
                self.status = "booting"
            elif kind == "xbee":
                self.address = ev.get("address")
            elif kind == "pairing":
                self.status = "pairing"
                self.code = ev.get("code")
            elif kind == "paired":
                self.paired = True
            elif kind == "handshaking":
                self.status = "handshaking"
                self.paired = self.paired or self.address is not None
            elif kind == "up":
                self.status = "up"
                self.handshakes_ok += 1
                if ev.get("handshake_ms") is not None:
                    self.handshake_ms.append(ev["handshake_ms"])
            elif kind == "tx":
                self.sent += 1
                if self.boots:
                    self.boots[-1]["sent"] = ev.get("n", 0)
            elif kind == "ack":
                self.acked += 1
                if self.boots:
                    self.boots[-1]["acked"] = ev.get("n", 0)
            elif kind == "rx":
                self.received += 1
            elif kind == "stats":
                self.retransmissions = ev.get("retransmissions", self.retransmissions)
            elif kind in ("down", "failed"):
                self.status = "down" if kind == "down" else "failed"
                self.last_error = ev.get("reason")
                if kind == "failed":
                    self.failures += 1
            elif kind in ("config_error", "pairing_rejected", "crash", "error", "reset"):
                self.status = kind
                self.last_error = ev.get("error") or ev.get("reason")
            if kind in ("up", "stats") and self.boots and ev.get("handshakes"):
                b = self.boots[-1]
                b["handshakes"] = max(b["handshakes"], ev["handshakes"])
