"""The device application: read the board and device configuration, bring up
the link (UDP over WiFi/loopback, or ZigBee through an XBee module, pairing
with the gateway first when needed), keep an ATLS session with the service,
send a sensor reading every `period_ms`, and print what the service sends.

Configuration is data (docs/BOARDS.md: "Board data" and "make provision";
how the parts fit: docs/ARCHITECTURE.md):
  board_config.json   what the board has: link type, XBee UART and pins, LED, button, WiFi
  device.json         who the device is: id, service, credentials, link overrides, app
Status goes to the console as lines "ATLS {json}" (state changes and counters),
so a person on the serial console, a test or the simulator can follow it.
`load_config` checks both files whole, so a bad one is one ConfigError with
a clear message (never a traceback); main.py runs `run_app` under
atls.supervisor, which restarts it after any failure (docs/BOARDS.md).
Nothing here knows whether it runs on a board, in the unix port or in the
simulator: only the configuration differs.
"""

import json
from binascii import hexlify, unhexlify

from atls.buffers import link_config
from atls.eventloop import Clock, step
from atls.link import LinkConfig, QueueFull
from atls.protocol import GROUPS, SUITE_NAMES, SUITES
from atls.session import DeviceSession
from atls.tls.client import ClientConfig


def _boot_id():
    from atls.crypto.backend import random_bytes

    return hexlify(random_bytes(4)).decode()


BOOT = _boot_id()  # tells this power-up's readings from the previous one's


def unload(*names):
    """Drop modules a phase needed (their heap is freed once nothing refers to
    them; whatever needs one later imports it again).  MicroPython only:
    CPython callers (tests, the host) keep their modules."""
    import sys

    if sys.implementation.name != "micropython":
        return
    pkg = sys.modules.get("atls")
    for name in names:
        if sys.modules.pop(name, None) is not None and name.count(".") == 1:
            try:
                delattr(pkg, name[5:])
            except AttributeError:
                pass


class ConfigError(Exception):
    pass


def status(event, **fields):
    fields["ev"] = event
    print("ATLS " + json.dumps(fields))


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise ConfigError("missing configuration file %s" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)


def _read_blob(value, name):
    """Credentials are hex strings in device.json, or "file:NAME" for a DER file."""
    if not isinstance(value, str):
        raise ConfigError("tls.%s must be a hex string or file:NAME" % name)
    if value.startswith("file:"):
        try:
            with open(value[5:], "rb") as f:
                return f.read()
        except OSError:
            raise ConfigError("tls.%s: cannot read %s" % (name, value[5:]))
    try:
        return unhexlify(value)
    except ValueError:
        raise ConfigError("tls.%s is not valid hex" % name)


def tls_config(dev):
    t = dev.get("tls") or {}
    kw = {}
    try:
        if t.get("suites"):
            kw["suites"] = [SUITES[s] for s in t["suites"]]
        if t.get("groups"):
            kw["groups"] = [GROUPS[g] for g in t["groups"]]
    except KeyError as e:
        raise ConfigError("unknown suite or group %s" % e)
    if t.get("psk"):
        kw["psk"] = _read_blob(t["psk"], "psk")
        kw["psk_identity"] = (t.get("psk_identity") or dev["device_id"]).encode()
    if t.get("ca"):
        if not t.get("server_name"):
            # a CA vouches for names: without one, anyone it certified passes
            raise ConfigError(
                "tls.ca needs tls.server_name (the name in the service's certificate)"
            )
        kw["ca_certs"] = [_read_blob(t["ca"], "ca")]
        kw["server_name"] = t["server_name"]
    if bool(t.get("cert")) != bool(t.get("key")):
        raise ConfigError("tls.cert and tls.key go together")
    if t.get("cert"):
        kw["client_certs"] = [_read_blob(t["cert"], "cert")]
        kw["client_key"] = _read_blob(t["key"], "key")
    try:
        if t.get("time_floor"):
            kw["time_floor"] = int(t["time_floor"])
        return ClientConfig(**kw)
    except (ValueError, TypeError) as e:
        raise ConfigError("tls: %s" % e)


_INTS = ("port", "mtu", "rto_ms", "rto_max_ms", "handshake_timeout_ms", "retry_ms", "retry_max_ms")


def load_config(board_path="board_config.json", device_path="device.json"):
    """(board, dev) from the two files, checked whole: raises ConfigError."""
    board = load_json(board_path)
    dev = load_json(device_path)
    if not isinstance(board, dict) or not isinstance(dev, dict):
        raise ConfigError("%s and %s must hold JSON objects" % (board_path, device_path))
    if not isinstance(dev.get("device_id"), str) or not dev["device_id"]:
        raise ConfigError("device.json needs device_id")
    tls_config(dev)
    try:
        for part in (board.get("link") or {}, dev.get("link") or {}, dev.get("app") or {}):
            for k in _INTS + ("period_ms", "stats_ms", "count", "watchdog_ms"):
                if part.get(k) is not None:
                    int(part[k])
        if board.get("watchdog_ms") is not None:
            int(board["watchdog_ms"])
    except (ValueError, TypeError, AttributeError):
        raise ConfigError("%s: link, app and watchdog_ms values must be numbers" % device_path)
    ota = dev.get("ota")
    if ota is not None:  # {"release_key": hex of the Ed25519 public key} (docs/OTA.md)
        key = ota.get("release_key") if isinstance(ota, dict) else None
        try:
            if not isinstance(key, str) or len(unhexlify(key)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError("%s: ota.release_key must be 64 hex digits" % device_path)
    return board, dev


def open_link(board, dev, clock):
    """(transport, mtu) for the configured link."""
    link, x = link_config(board, dev)
    kind = link.get("type", "udp")
    if kind == "udp":
        from atls.drivers import wifi
        from atls.drivers.udp import UDPTransport

        if not link.get("host"):
            raise ConfigError("udp link needs link.host and link.port")
        station = wifi.start(board.get("wifi"))  # None: no ssid, or the unix port
        try:
            udp = UDPTransport(link["host"], int(link.get("port", 5684)), wifi=station)
        except OSError as e:  # the name does not resolve (lookups were retried)
            raise ConfigError("cannot reach link.host %s (%s)" % (link["host"], e))
        return udp, int(link.get("mtu", 1200))
    if kind == "xbee":
        from atls import pairing_state

        if x.get("tcp"):  # an emulated module (sim/radio.py) instead of a UART
            host, port = x["tcp"].rsplit(":", 1)
            from atls.drivers.xbee_tcp import open_tcp

            drv = open_tcp(host, int(port), escaped=x.get("ap", 1) == 2)
        else:
            from atls.drivers.xbee import from_board

            drv = from_board(x)
        drv.wait_ready(int(x.get("ready_timeout_ms", 15000)))
        status("xbee", address=hexlify(drv.address64).decode(), mtu=drv.mtu)
        force = bool(dev.get("pairing_mode")) or _button_held(board.get("button"))
        if force or not pairing_state.hook_if_paired(drv, dev):
            from atls.pairing_client import ensure_paired

            ensure_paired(drv, dev, clock, status, force=True)
        unload("atls.pairing_client", "atls.pairing")  # the hook keeps K's tag only
        return drv, min(drv.mtu, int(link.get("mtu", drv.mtu)))
    raise ConfigError("unknown link type %r" % kind)


def _button_held(button):
    """The pairing button, held at boot, forces pairing mode (boards only)."""
    if not button:
        return False
    try:
        from machine import Pin
    except ImportError:
        return False
    pull = Pin.PULL_UP if button.get("pull", "up") == "up" else Pin.PULL_DOWN
    pin = Pin(button["pin"], Pin.IN, pull)
    return pin.value() == (0 if button.get("active_low", True) else 1)


class Halt(Exception):
    """The device must not go on (its entropy sources failed): main() returns
    to the REPL instead of restarting, so no handshake uses weak keys."""


def boot(board, dev, first=True):
    """After the configuration loaded: the boot line, the CPU frequency (one
    the CPU cannot run at is a ConfigError) and, once per power-up (`first`),
    the seeding of the DRBG behind random_bytes (a stuck source: Halt)."""
    if first:
        status("boot", device=dev["device_id"], board=board.get("name", "?"), boot=BOOT)
    _cpu_freq(board.get("cpu_freq_mhz"))
    if first:
        from atls import entropy

        failure = entropy.start(board, dev)
        if failure is not None:  # a stuck noise source: no handshake with weak keys
            status("entropy_failed", **failure)
            raise Halt(failure)


def _cpu_freq(mhz):
    from atls.drivers.cpu import apply_freq

    try:
        got = apply_freq(mhz)
    except (ValueError, TypeError):
        raise ConfigError("board_config cpu_freq_mhz %r is not a frequency this CPU runs at" % mhz)
    if got is not None:
        status("cpu", mhz=got)


def run_app(board, dev, clock=None, until=None, watchdog=None):
    """Run the application; `watchdog` (atls.supervisor.Watchdog) starts once
    the link is open and is fed from the loop and inside handshakes."""
    clock = clock or Clock()
    transport, mtu = open_link(board, dev, clock)
    try:
        return _run(board, dev, clock, until, watchdog, transport, mtu)
    finally:
        close = getattr(transport, "close", None)
        if close is not None:
            close()


def _version():
    """The running version, without keeping atls.ota loaded when nothing else
    needs it (main.py's boot code dropped it)."""
    import sys

    loaded = "atls.ota" in sys.modules
    from atls.ota import running_version

    v = running_version()
    if not loaded:
        unload("atls.ota")
    return v


def _run(board, dev, clock, until, watchdog, transport, mtu):
    feed = None
    if watchdog is not None:
        watchdog.start(status)
        feed = watchdog.feed
    lk = dev.get("link") or {}
    link_cfg = LinkConfig(
        mtu=mtu,
        rto_ms=int(lk.get("rto_ms", 1000)),
        rto_max_ms=int(lk.get("rto_max_ms", 8000)),
        handshake_timeout_ms=int(lk.get("handshake_timeout_ms", 30000)),
    )
    session = DeviceSession(
        tls_config(dev),
        link_cfg,
        retry_ms=int(lk.get("retry_ms", 1000)),
        retry_max_ms=int(lk.get("retry_max_ms", 30000)),
        feed=feed,
        boot=int(BOOT, 16),  # the high half of this boot's message ids (PROTOCOL.md §4)
    )
    session.preload()  # nothing loads mid-handshake (issue 12)
    session.hello = _version().encode()  # the v2 HELLO reports it (docs/OTA.md)
    ota = None
    if (dev.get("ota") or {}).get("release_key"):  # updates on channel 2 (atls.ota.agent)
        from atls.ota.agent import Agent

        ota = Agent(dev["ota"]["release_key"], board.get("name", "unix"), status, clock())
    app = dev.get("app") or {}
    period = int(app.get("period_ms", 10000))
    stats_every = int(app.get("stats_ms", 10000))
    limit = app.get("count")
    state = {"n": 0, "next": 0, "received": 0, "delivered": 0, "stats": 0}
    boot = BOOT.encode()
    unacked = []  # [reading number, payload] sent, not yet acknowledged

    def on_event(ev):
        kind = ev[0]
        if kind == "message" and len(ev) > 2:  # another channel: 2 is the update's
            reply = ota.on_message(ev[1]) if ota is not None and ev[2] == 2 else None
            if reply is not None:
                session.send(reply, clock(), 2)
        elif kind == "up":
            if ota is not None:
                ota.on_up()  # a completed handshake confirms a version on trial
            status(
                "up",
                suite=SUITE_NAMES.get(ev[1], ev[1]),
                handshake_ms=session.last_handshake_ms,
                handshakes=session.handshakes,
            )
        elif kind == "message":
            state["received"] += 1
            status("rx", n=state["received"], data=bytes(ev[1]).decode("utf-8", "replace"))
        elif kind == "delivered":
            # which readings: those no longer pending (acks need not come in order)
            pend = session.pending()
            for e in [e for e in unacked if e[1] not in pend]:
                unacked.remove(e)
                state["delivered"] += 1
                status("ack", n=state["delivered"], id=e[0])
        elif kind in ("down", "failed"):
            status(kind, reason=ev[1])
        elif kind == "rebase":  # the clock went back by ev[1] ms: so do our timers
            state["next"] = max(0, state["next"] - ev[1])
            state["stats"] = max(0, state["stats"] - ev[1])

    session.connect(clock())
    status("handshaking")
    while until is None or not until(state):
        now = clock()
        if (limit is None or state["n"] < limit) and now >= state["next"]:
            reading = b'{"dev":"%s","boot":"%s","n":%d,"t":%d}' % (
                dev["device_id"].encode(),
                boot,
                state["n"],
                now,
            )
            try:
                session.send(reading, now)
                unacked.append([state["n"], reading])
                state["n"] += 1
                status("tx", n=state["n"])
            except QueueFull:
                status("queue_full", n=state["n"])
            state["next"] = now + period
        step(session, transport, clock, on_event, feed=feed)
        if ota is not None and ota.reset_due(now, not session.pending()):
            from atls.ota.agent import reset

            reset()  # into the new version, or back through the boot count
        if now >= state["stats"]:
            state["stats"] = now + stats_every
            lc = session.link.counters if session.link is not None else {}
            status(
                "stats",
                retransmissions=session.counters["retransmissions"] + lc.get("retransmissions", 0),
                handshakes=session.handshakes,
                pending=len(session.pending()),
                state=session.state,
            )
        if (
            limit is not None
            and state["n"] >= limit
            and not session.pending()
            and state["received"] >= limit
            and app.get("exit_when_done")
        ):
            status(
                "done",
                sent=state["n"],
                delivered=state["delivered"],
                received=state["received"],
                counters=session.counters,
            )
            return state
    return state


def main(board_path="board_config.json", device_path="device.json"):
    """The application under the supervisor (what firmware/main.py runs)."""
    from atls.supervisor import main as supervised

    return supervised(board_path, device_path)
