"""The pairing table (the gateway's allowlist of ZigBee devices, on disk) and
the gateway's side of pairing (docs/PROTOCOL.md §8, version 2).

    {"version": 2,
     "devices": {"<addr64 hex>": {"device": id, "service": name, "paired_at": unix time,
                                  "key": K hex}},
     "revoked": {"<addr64 hex>": {"device": id, "key": K hex}},   # NOT_PAIRED is sent under K
     "preauth": {"<device id | addr64 hex>": {"install_code": hex, "service": name}}}

Written whole to a temporary file (mode 0600: it holds pairing keys and install
codes) and renamed over the old one, so a crash never leaves half a table.
A version-1 table (no keys) loads; its devices keep working, and a device
paired before version 2 cannot be told NOT_PAIRED (no key).

`Pairer` runs the exchange: REQUEST -> RESPONSE (fresh Ng and X25519 share)
-> REVEAL (commit checked, code, K) -> PENDING until confirmed -> ACCEPT
under K.  The gateway refuses to confirm a request while another pending
request shows the same code or claims the same device id (a ground or
copied request is then visible, never silently paired), and `confirm_code`
confirms exactly one request.  In install-code mode (a `preauth` entry for
the device id or address) the device's proof under K (which mixes the
install code) replaces the person: accepted at once, no join window needed.
"""

import json
import os
import time
from pathlib import Path

from atls import pairing as P
from atls.errors import DecodeError
from host_tools.common import log
from host_tools.gateway.config import GatewayError

__all__ = ["PairingTable", "Pairer", "PENDING_TIMEOUT_S", "NOT_PAIRED_INTERVAL_S"]

PENDING_TIMEOUT_S = 120  # a pending exchange without a packet from its device is forgotten
NOT_PAIRED_INTERVAL_S = 5  # at most one NOT_PAIRED per address this often


class PairingTable:
    """The allowlist: 64-bit address -> device id, service, pairing key; the
    keys of unpaired devices (for NOT_PAIRED) and install-code pre-authorisations."""

    def __init__(self, path):
        self.path = Path(path)
        self.devices = {}
        self.revoked = {}
        self.preauth = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.devices = dict(data.get("devices", {}))
                self.revoked = dict(data.get("revoked", {}))
                self.preauth = dict(data.get("preauth", {}))
            except (ValueError, AttributeError) as e:
                raise GatewayError("pairing table %s is corrupt: %s" % (self.path, e))

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        body = {"version": 2, "devices": self.devices}
        if self.revoked:
            body["revoked"] = self.revoked
        if self.preauth:
            body["preauth"] = self.preauth
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(body, indent=1, sort_keys=True))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a table

    def add(self, addr64, device_id, service, key=None):
        e = {"device": device_id, "service": service, "paired_at": int(time.time())}
        if key is not None:
            e["key"] = key.hex()
        self.devices[addr64.hex()] = e
        self.revoked.pop(addr64.hex(), None)
        self.save()

    def remove(self, key):
        """Unpair by 64-bit address (hex) or device id; returns what was removed.
        The pairing key is kept under "revoked" so NOT_PAIRED can be sent."""
        key = key.lower()
        gone = [a for a, d in self.devices.items() if a == key or d["device"].lower() == key]
        for a in gone:
            d = self.devices.pop(a)
            if d.get("key"):
                self.revoked[a] = {"device": d["device"], "key": d["key"]}
        if gone:
            self.save()
        return gone

    def get(self, addr64):
        return self.devices.get(addr64.hex())

    def preauthorise(self, who, install_code, service="default"):
        """Pre-authorise a device id or 64-bit address (hex) by its install
        code (bytes: 16, or 18 with the CRC)."""
        self.preauth[str(who).lower()] = {
            "install_code": bytes(install_code[: P.IC_LEN]).hex(),
            "service": service,
        }
        self.save()

    def preauth_for(self, addr64, device_id):
        for k in (addr64.hex(), device_id.lower()):
            if k in self.preauth:
                return k, self.preauth[k]
        return None, None

    def __len__(self):
        return len(self.devices)


class Pairer:
    """The gateway's side of the exchange.  send(addr64, payload) puts a
    pairing packet on the air; join_open() says whether the join window is
    open; counters is the gateway's counter dict (pairing drops go to
    counters["drops"])."""

    def __init__(self, table, config, send, join_open, counters, clock=time.monotonic):
        self.table = table
        self.config = config
        self.send = send
        self.join_open = join_open
        self.counters = counters
        self.clock = clock
        self.addr64 = bytes(8)  # the coordinator's SH+SL once known (cli.run asks)
        self.gateway_id = (getattr(config, "gateway_id", None) or "gateway")[: P.MAX_GATEWAY_ID]
        self.pending = {}  # addr64 -> exchange dict
        self.notified = {}  # addr64 -> last NOT_PAIRED time

    def _drop(self, reason):
        d = self.counters["drops"]
        d[reason] = d.get(reason, 0) + 1

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- packets ------------------------------------------------------------------------
    def on_packet(self, addr64, payload):
        try:
            m = P.decode(payload)
        except DecodeError:
            return self._drop("bad_pairing")
        now = self.clock()
        self._expire(now)
        if m[0] == "request":
            return self._request(addr64, bytes(payload), m, now)
        if m[0] == "reveal":
            return self._reveal(addr64, m, now)
        return self._drop("bad_pairing")

    def _request(self, addr64, raw, m, now):
        _, mode, commit, device_id, service = m
        p = self.pending.get(addr64)
        if p is not None and p["request"] == raw:  # a repeat: the same answer
            p["t"] = now
            return self.send(addr64, p["response"])
        pre = None
        if mode == P.MODE_INSTALL_CODE:
            _, pre = self.table.preauth_for(addr64, device_id)
            if pre is None:
                self._drop("pair_no_install_code")
                return self.send(addr64, P.encode_reply(P.REJECT, 4))
            if pre.get("service", "default") != service:  # the QR code names the service
                return self.send(addr64, P.encode_reply(P.REJECT, 2))
        elif not self.join_open():
            self._drop("join_closed")
            return self.send(addr64, P.encode_reply(P.REJECT, 1))
        if service not in self.config.services:
            return self.send(addr64, P.encode_reply(P.REJECT, 2))
        if p is None and len(self.pending) >= self.config.limits["max_pending_pairings"]:
            # bounded, but nobody is turned away for good: the device repeats
            self._drop("pairing_busy")
            return self.send(addr64, P.encode_reply(P.PENDING, 3))
        from atls.crypto import backend
        from atls.crypto.x25519 import x25519_base

        priv = backend.random_bytes(32)
        response = P.encode_response(
            backend.random_bytes(P.NONCE_LEN), x25519_base(priv), self.addr64, self.gateway_id
        )
        self.pending[addr64] = {
            "request": raw,
            "response": response,
            "priv": priv,
            "commit": commit,
            "device": device_id,
            "service": service,
            "mode": mode,
            "preauth": pre,
            "code": None,
            "key": None,
            "confirmed": False,
            "t": now,
        }
        self.send(addr64, response)

    def _reveal(self, addr64, m, now):
        _, pub, nonce, proof = m
        p = self.pending.get(addr64)
        if p is None:  # e.g. the gateway restarted: the device starts again
            self._drop("pair_unknown_exchange")
            return self.send(addr64, P.encode_reply(P.REJECT, 5))
        p["t"] = now
        if p["key"] is None:
            if P.commitment(pub, nonce) != p["commit"]:
                self._drop("pair_bad_commit")
                del self.pending[addr64]
                return self.send(addr64, P.encode_reply(P.REJECT, 5))
            from atls.crypto.x25519 import x25519
            from atls.errors import InvalidPointError

            try:
                shared = x25519(p["priv"], pub)
            except InvalidPointError:  # a low-order share (RFC 7748 §6.1)
                del self.pending[addr64]
                return self._drop("pair_bad_share")
            th = P.transcript(addr64, self.addr64, p["request"], p["response"], pub, nonce)
            ic = bytes.fromhex(p["preauth"]["install_code"]) if p["preauth"] else None
            p["key"] = P.pairing_key(shared, th, ic)
            p["code"] = P.confirmation_code(th)
            p["proof"] = proof
            if p["mode"] == P.MODE_INSTALL_CODE:
                if not P.same(proof, P.tag(p["key"], b"device")):
                    self._drop("pair_bad_proof")
                    del self.pending[addr64]
                    return self.send(addr64, P.encode_reply(P.REJECT, 2))
                p["confirmed"] = True
                self.table.preauth.pop(self.table.preauth_for(addr64, p["device"])[0], None)
            else:
                log(
                    "pairing_request",
                    addr64=addr64.hex(),
                    device=p["device"],
                    service=p["service"],
                    code=p["code"],
                )
                if self.config.auto_confirm and not self.ambiguous(addr64):
                    p["confirmed"] = True
        elif proof != p["proof"] or P.commitment(pub, nonce) != p["commit"]:
            return self._drop("pair_bad_reveal")
        if p["confirmed"]:
            return self._accept(addr64, p)
        self.send(addr64, P.encode_reply(P.PENDING, 0))

    def _accept(self, addr64, p):
        if self.table.get(addr64) is None or self.table.get(addr64).get("key") != p["key"].hex():
            self.table.add(addr64, p["device"], p["service"], p["key"])
            self._count("paired")
            log("paired", addr64=addr64.hex(), device=p["device"], service=p["service"])
        p["done"] = True  # kept until it expires: a repeated REVEAL gets ACCEPT again
        self.send(addr64, P.encode_reply(P.ACCEPT, tag=P.tag(p["key"], b"accept")))

    def _expire(self, now):
        for a in [a for a, p in self.pending.items() if now - p["t"] > PENDING_TIMEOUT_S]:
            del self.pending[a]

    # -- the person ---------------------------------------------------------------------
    def ambiguous(self, addr64):
        """Why `addr64`'s request must not be confirmed now, or None: another
        pending request shows the same code or claims the same device id."""
        p = self.pending[addr64]
        for a, q in self.pending.items():
            if a == addr64 or q["code"] is None or q.get("done"):
                continue
            if q["code"] == p["code"]:
                return "another request shows the same code %s" % p["code"]
            if q["device"].lower() == p["device"].lower():
                return "another request claims device id %r" % p["device"]
        return None

    def pending_requests(self):
        """The exchanges whose device revealed (they have a code)."""
        return [
            {
                "addr64": a.hex(),
                "device": p["device"],
                "service": p["service"],
                "code": p["code"],
                "confirmed": p["confirmed"],
                "ambiguous": self.ambiguous(a),
            }
            for a, p in self.pending.items()
            if p["code"] is not None and not p.get("done") and p["mode"] == P.MODE_CODE
        ]

    def confirm(self, addr64_hex, code=None, accept=True):
        addr64 = bytes.fromhex(addr64_hex)
        p = self.pending.get(addr64)
        if p is None or p["code"] is None:
            raise GatewayError("no pairing request from %s" % addr64_hex)
        if code is not None and code != p["code"]:
            raise GatewayError("code %s does not match the device's" % code)
        if not accept:
            del self.pending[addr64]
            return
        why = self.ambiguous(addr64)
        if why:
            raise GatewayError("refused: %s; pair again once only one device asks" % why)
        p["confirmed"] = True
        self._accept(addr64, p)

    def confirm_code(self, code):
        """Confirm the one request showing `code`; GatewayError when none or
        several do (nothing is confirmed then)."""
        hits = [p for p in self.pending_requests() if p["code"] == code]
        if len(hits) != 1:
            raise GatewayError(
                "%d pending requests show code %s: confirmed none" % (len(hits), code)
            )
        self.confirm(hits[0]["addr64"], code)
        return hits[0]

    # -- after pairing ------------------------------------------------------------------
    def not_paired(self, addr64):
        """An ATLS packet from an address that is not paired: tell the device,
        under the key of its last pairing, so it pairs again on its own."""
        r = self.table.revoked.get(addr64.hex())
        if r is None or not r.get("key"):
            return
        now = self.clock()
        if now - self.notified.get(addr64, -1e9) < NOT_PAIRED_INTERVAL_S:
            return
        self.notified[addr64] = now
        self._count("not_paired_sent")
        key = bytes.fromhex(r["key"])
        self.send(addr64, P.encode_reply(P.NOT_PAIRED, tag=P.tag(key, b"not paired")))
