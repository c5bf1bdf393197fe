"""Device side of pairing with the gateway (docs/PROTOCOL.md §8, version 2).

A device pairs on first boot (no `paired.json`), when asked to (pairing
button held at boot, or `pairing_mode` in device.json), or when its gateway
sent an authenticated NOT_PAIRED.  `DevicePairing` is the sans-I/O machine
(payloads and `now_ms` in, payloads and events out); `ensure_paired` pumps
it over the XBee driver, showing the 6-digit code on the console (the sim
and boards read the "pairing" status line).

States: WAIT_RESPONSE (REQUEST every 2 s) -> COLLECT (the first RESPONSE
came; 1 s more to see whether another gateway answers too: then the
exchange is refused, "conflict", and starts again with new keys) ->
WAIT_ACCEPT (REVEAL every 2 s; PENDING until the person confirms, or at
once in install-code mode) -> PAIRED, or FAILED on an authenticated REJECT.
Only ACCEPT/REJECT carrying the tag under K count; an unauthenticated REJECT
only tells the device to wait (join window closed) or, for reason 5 (the
gateway lost the exchange), to start again.  paired.json keeps K so that
a later NOT_PAIRED from the same gateway is believed and nothing else is.
"""

from atls import pairing as P
from atls import pairing_state
from atls.errors import DecodeError
from atls.pairing_state import STATE_FILE, NotPaired, forget, not_paired_check  # noqa: F401

_REPEAT_MS = 2000
_COLLECT_MS = 1000

WAIT_RESPONSE = "WAIT_RESPONSE"
COLLECT = "COLLECT"
WAIT_ACCEPT = "WAIT_ACCEPT"
PAIRED = "PAIRED"
FAILED = "FAILED"


class PairingError(Exception):
    pass


class DevicePairing:
    def __init__(self, addr64, device_id, service, install_code=None, rng=None):
        from atls.crypto.backend import random_bytes

        self.addr64 = bytes(addr64)
        self.device_id = device_id
        self.service = service
        self.ic = install_code
        self.rng = rng or random_bytes
        self.events = []  # ("code", c) ("conflict",) ("waiting", r) ("paired",) ("rejected", r)
        self.ignored = 0  # unauthenticated or stray pairing packets
        self.key = None
        self.code = None
        self.restart(0)

    def restart(self, now):
        from atls.crypto.x25519 import x25519_base

        self.priv = self.rng(32)
        self.pub = x25519_base(self.priv)
        self.nonce = self.rng(P.NONCE_LEN)
        mode = P.MODE_INSTALL_CODE if self.ic else P.MODE_CODE
        self.request = P.encode_request(
            mode, P.commitment(self.pub, self.nonce), self.device_id, self.service
        )
        self.response = None
        self.reveal = None
        self.state = WAIT_RESPONSE
        self.next_send = now
        self.reason = None

    def poll(self, now):
        """The payloads to send now."""
        if self.state == COLLECT and now - self.t_first >= _COLLECT_MS:
            self._reveal()
            self.next_send = now
        if self.state in (WAIT_RESPONSE, WAIT_ACCEPT) and now >= self.next_send:
            self.next_send = now + _REPEAT_MS
            return [self.request if self.state == WAIT_RESPONSE else self.reveal]
        return []

    def receive(self, payload, now):
        try:
            m = P.decode(payload)
        except DecodeError:
            self.ignored += 1
            return
        kind = m[0]
        st = self.state
        if kind == "response" and st in (WAIT_RESPONSE, COLLECT):
            if self.response is None:
                self.response = bytes(payload)
                self.t_first = now
                self.state = COLLECT
            elif bytes(payload) != self.response:  # two gateways answered
                self.events.append(("conflict",))
                self.restart(now + _REPEAT_MS)
            return
        if kind == "response" and st == WAIT_ACCEPT and bytes(payload) != self.response:
            self.events.append(("conflict",))
            return
        if kind == "reject" and not m[2] and st != PAIRED:
            if m[1] == 5 and st == WAIT_ACCEPT:  # the gateway lost the exchange
                self.restart(now)
            elif m[1] != self.reason:
                self.reason = m[1]
                self.events.append(("waiting", m[1]))
            return
        if st == WAIT_ACCEPT and kind == "accept" and P.same(m[1], P.tag(self.key, b"accept")):
            self.state = PAIRED
            self.events.append(("paired",))
            return
        if (
            st == WAIT_ACCEPT
            and kind == "reject"
            and P.same(m[2], P.tag(self.key, b"reject" + bytes((m[1],))))
        ):
            self.state = FAILED
            self.events.append(("rejected", m[1]))
            return
        self.ignored += 1  # a forged accept, anything out of place

    def _reveal(self):
        from atls.crypto.x25519 import x25519
        from atls.errors import InvalidPointError

        m = P.decode(self.response)
        try:
            shared = x25519(self.priv, m[2])
        except InvalidPointError:  # a low-order share: not a gateway worth answering
            self.restart(self.next_send)
            return
        th = P.transcript(self.addr64, m[3], self.request, self.response, self.pub, self.nonce)
        self.code = P.confirmation_code(th)
        self.key = P.pairing_key(shared, th, self.ic)
        proof = P.tag(self.key, b"device") if self.ic else b""
        self.reveal = P.encode_reveal(self.pub, self.nonce, proof)
        self.state = WAIT_ACCEPT
        self.events.append(("code", self.code))


def _hex(b):
    from binascii import hexlify

    return hexlify(b).decode()


def _state(dev):
    return pairing_state.load(dev)


def _save(dev, addr_hex, key):
    pairing_state.save(dev, addr_hex, _hex(key))


def secure(drv, cfg):
    """ZigBee network security as the gateway runs it (docs/BOARDS.md): cfg
    {"link_key": 32 hex} joins with that trust-center link key (KY), or
    {"install_code": true} with the key derived from the module's own install
    code (DC bit 0; the gateway registers I?).  Writes EE=1 (only when it was
    0: the module then leaves and joins the encrypted network), EO=2, KY or
    DC, WR, and reads NP again.  Called before an exchange only, so a paired
    device does not rewrite its keys at every boot."""
    from binascii import unhexlify

    steps = [(b"EO", b"\x02")]
    if drv.at(b"EE") != b"\x01":
        steps.insert(0, (b"EE", b"\x01"))
        drv.joined = False
    if cfg.get("install_code"):
        steps.append((b"DC", b"\x00\x01"))
    else:
        steps.append((b"KY", unhexlify(cfg["link_key"])))
    steps.append((b"WR", b""))
    for cmd, value in steps:
        drv.at(cmd, value)
    drv.mtu = int.from_bytes(drv.at(b"NP"), "big")  # 66 with EE=1
    return True


def _install_code(dev):
    ic = dev.get("install_code")
    if not ic:
        return None
    from binascii import unhexlify

    return unhexlify(ic.replace("-", "").replace(" ", ""))[: P.IC_LEN]


def ensure_paired(drv, dev, clock, status, force=False, timeout_ms=300000, rng=None):
    """Return once the device is paired with the gateway (or was already)."""
    if not force and pairing_state.hook_if_paired(drv, dev):
        return False
    sec = (dev.get("link") or {}).get("xbee", {}).get("zigbee_security")
    if sec:
        secure(drv, sec)  # the network's link key (or install code) before joining
        if sec.get("install_code"):  # for `gateway pair --zigbee-install-code`
            status("zigbee_install_code", install_code=_hex(drv.at(b"I?")))
    service = dev.get("service", "default")
    start = clock()
    p = DevicePairing(drv.address64, dev["device_id"], service, _install_code(dev), rng)
    p.next_send = start
    status("pairing_start", address=_hex(drv.address64), service=service)  # the code comes later
    while clock() - start < timeout_ms:
        if not drv.joined:
            drv.wait_joined(1000)  # the gateway's join window is not open yet
            continue
        for out in p.poll(clock()):
            drv.send(out)
        for payload in drv.recv(50):
            p.receive(payload, clock())
        while p.events:
            ev = p.events.pop(0)
            if ev[0] == "code":
                status("pairing", code=ev[1], address=_hex(drv.address64), service=service)
            elif ev[0] == "conflict":
                status("pairing_conflict")
            elif ev[0] == "waiting":
                status("pairing_waiting", reason=P.REASONS.get(ev[1], ev[1]))
            elif ev[0] == "paired":
                _save(dev, _hex(drv.address64), p.key)
                drv.pairing_hook = not_paired_check(p.key)
                status("paired", service=service)
                return True
            else:
                reason = P.REASONS.get(ev[1], ev[1])
                status("pairing_rejected", reason=reason)
                raise PairingError("gateway refused pairing: %s" % reason)
    raise PairingError("pairing timed out")
