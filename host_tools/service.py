"""The ATLS service: terminates device sessions with an unmodified OpenSSL
(memory BIOs, host_tools.tls_server), exports the channel keys and runs the
same link and channel code as the device (firmware/atls, imported here).

    python -m host_tools.service --config service.json [--stats stats.json]

Config (JSON; paths relative to the config file):
    {"listen": "127.0.0.1:5684",
     "registry": "devices.json",            # {"devices": {"id": {"psk": "hex"}},
                                            #  "device_ca": "device-ca.pem"}
     "cert": "server.pem", "key": "server.key",        # optional: certificate mode
     "suites": [...], "groups": [...], "tickets": 0,
     "link": {"mtu": 1200, "rto_ms": 1000, ...},       # atls.link.LinkConfig
     "limits": {"max_half_open": 64, "idle_timeout_s": 300,
                "rate_per_s": 200, "rate_burst": 400, "max_sessions": 10000},
     "app": "echo",                          # or "module:Class"
     "http_listen": "127.0.0.1:8080",        # optional: ATLS over HTTP (draft §9),
     "https": {"cert": "h.pem", "key": "h.key"},   #  optionally HTTPS on that listener
     "coap_listen": "127.0.0.1:5683",        # optional: ATLS over CoAP
     "bindings": {"max_body": 16384, "max_wait_ms": 25000}}  # see docs/BINDINGS.md

Application API: an object with on_connect(session), on_message(session,
payload) and on_close(session, reason); `session.send(payload)` queues a
message to the device.  Logs are JSON lines on stderr and never contain keys
or PSKs; counters (`Service.counters`) are written to --stats every second.
"""

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from atls import wire  # noqa: E402
from atls.link import Link, LinkConfig, QueueFull  # noqa: E402
from host_tools.common import log, parse_hostport  # noqa: E402
from host_tools.tls_server import SUITES, ServerConfig, ServerConnection, TLSError  # noqa: E402

LABEL = b"application-layer-tls"
KEY_BLOCK_LEN = 56
DEFAULT_LIMITS = {
    "max_half_open": 64,
    "idle_timeout_s": 300,
    "rate_per_s": 200,
    "rate_burst": 400,
    "max_sessions": 10000,
    "app_queue": 256,
}


class ConfigError(Exception):
    pass


class Registry:
    """Devices the service accepts: PSK per identity and/or a device CA."""

    def __init__(self, path):
        self.path = Path(path)
        self.psks = {}
        self.device_ca = []
        self.reload()

    def reload(self):
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError("registry %s: %s" % (self.path, e))
        psks = {}
        for ident, entry in (data.get("devices") or {}).items():
            try:
                key = bytes.fromhex(entry["psk"]) if "psk" in entry else None
            except (TypeError, ValueError):
                raise ConfigError("registry: device %r has a PSK that is not hex" % ident)
            if key is not None:
                if not 16 <= len(key) <= 64:
                    raise ConfigError("registry: device %r PSK must be 16..64 bytes" % ident)
                psks[ident.encode()] = key
        self.psks.clear()  # the same dict object: OpenSSL's callback reads it live
        self.psks.update(psks)
        ca = data.get("device_ca")
        if ca:
            pem = (self.path.parent / ca).read_bytes()
            self.device_ca = x509.load_pem_x509_certificates(pem)


class Session:
    """One device session as the application sees it."""

    def __init__(self, service, sid, addr, link, tls, now):
        self.service = service
        self.sid = sid
        self.addr = addr
        self.link = link
        self.tls = tls
        self.identity = None
        self.suite = None
        self.started_ms = now
        self.last_seen_ms = now
        self.handshake_ms = None
        self.backlog = deque()  # app messages waiting for window space
        self.seen_drops = {}  # link drop counters already added to the service's
        self.frag0 = None  # first fragment of the device's first flight (ClientHello)
        self.sink = None  # callable(packet): HTTP/CoAP sessions' packets go here, not UDP

    @property
    def up(self):
        return self.link.channel is not None and self.link.state == "open"

    def send(self, payload):
        """Queue a message to the device (exactly-once delivery)."""
        if len(self.backlog) >= self.service.limits["app_queue"]:
            raise QueueFull("application queue full for session %d" % self.sid)
        self.backlog.append(bytes(payload))
        self.service.counters["messages_out"] += 1
        self._flush(self.service.now_ms())

    def _flush(self, now):
        while self.backlog and self.up:
            try:
                self.link.send(self.backlog[0], now)
            except QueueFull:
                return
            self.backlog.popleft()


class EchoApp:
    """Sends every message straight back to the device that sent it."""

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        session.send(payload)

    def on_close(self, session, reason):
        pass


def load_app(spec):
    if spec in (None, "", "echo"):
        return EchoApp()
    mod, _, cls = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)()
    except (ImportError, AttributeError) as e:
        raise ConfigError("app %r: %s" % (spec, e))


class Service(asyncio.DatagramProtocol):
    def __init__(self, tls_config, link_config=None, limits=None, app=None):
        self.ctx = tls_config.build()
        self.link_config = link_config or LinkConfig(mtu=1200)
        self.limits = dict(DEFAULT_LIMITS, **(limits or {}))
        self.app = app or EchoApp()
        self.sessions = {}  # sid -> Session
        self.pending = {}  # addr -> sid of a session still in its first flight
        self.buckets = {}  # addr -> [tokens, last_ms]
        self.transport = None
        self._t0 = time.monotonic()
        self.counters = {
            "datagrams_in": 0,
            "datagrams_out": 0,
            "sessions_active": 0,
            "sessions_total": 0,
            "handshakes_ok": 0,
            "handshakes_failed": 0,
            "messages_in": 0,
            "messages_out": 0,
            "drops": {},
        }

    def now_ms(self):
        return int((time.monotonic() - self._t0) * 1000)

    def drop(self, reason, n=1):
        d = self.counters["drops"]
        d[reason] = d.get(reason, 0) + n

    # -- asyncio protocol -----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.counters["datagrams_in"] += 1
        now = self.now_ms()
        if not self._rate_ok(addr, now):
            return self.drop("rate")
        try:
            ptype, sid = _peek(data)
        except wire.Drop as e:
            return self.drop(e.reason)
        if sid == 0:
            sess = self._first_flight(addr, ptype, data, now)
            if sess is None:
                return
        else:
            sess = self.sessions.get(sid)
            if sess is None or sess.addr != addr:
                self.drop("unknown_session")
                if ptype != wire.ERROR:
                    self._send(wire.encode(wire.ERROR, sid, b"\x01"), addr)
                return
        self.deliver(sess, (data,), now)

    def deliver(self, sess, packets, now):
        """Feed link packets from the session's peer (one UDP datagram, or a
        batch from an HTTP/CoAP request), run the app, transmit the answers."""
        sess.last_seen_ms = now
        before = sum(sess.link.drops.values())
        for data in packets:
            sess.link.receive(data, now)
        self._absorb_drops(sess, before)
        self._pump(sess, now)
        self._transmit(sess, now)

    def _absorb_drops(self, sess, before):
        """Add the link's new drops (by reason) to the service counters."""
        if sum(sess.link.drops.values()) != before:
            seen = sess.seen_drops
            for reason, n in sess.link.drops.items():
                if n > seen.get(reason, 0):
                    self.drop(reason, n - seen.get(reason, 0))
                    seen[reason] = n

    def _rate_ok(self, addr, now):
        rate, burst = self.limits["rate_per_s"], self.limits["rate_burst"]
        b = self.buckets.get(addr)
        if b is None:
            if len(self.buckets) > 4 * self.limits["max_sessions"]:
                self.buckets.clear()  # bounded: forget everyone rather than grow
            b = self.buckets[addr] = [burst, now]
        b[0] = min(burst, b[0] + (now - b[1]) * rate / 1000.0)
        b[1] = now
        if b[0] < 1:
            return False
        b[0] -= 1
        return True

    def _first_flight(self, addr, ptype, data, now):
        if ptype not in (wire.HS, wire.HS_END) or len(data) < 6:
            self.drop("unknown_session")
            return None
        sid = self.pending.get(addr)
        if sid is not None and sid in self.sessions:
            sess = self.sessions[sid]
            # fragment 0 of a *different* first flight: the device restarted its
            # handshake (e.g. it rebooted); a retransmission repeats the same bytes
            if data[4] == 0 and sess.frag0 is not None and bytes(data[5:]) != sess.frag0:
                self._end(sess, "device restarted its handshake")
            else:
                if data[4] == 0 and sess.frag0 is None:
                    sess.frag0 = bytes(data[5:])
                return sess
        if self.at_capacity():
            self.drop("busy")
            self._send(wire.encode(wire.ERROR, 0, b"\x03"), addr)
            return None
        sess = self.new_session(addr, now)
        if data[4] == 0:
            sess.frag0 = bytes(data[5:])
        self.pending[addr] = sess.sid
        return sess

    def at_capacity(self):
        """True when no new session may start (max_half_open, max_sessions)."""
        half_open = sum(1 for s in self.sessions.values() if not s.up)
        return (
            half_open >= self.limits["max_half_open"]
            or len(self.sessions) >= self.limits["max_sessions"]
        )

    def new_session(self, addr, now):
        """A new half-open session with a fresh session id (any transport)."""
        sid = self._new_sid()
        link = Link("server", self.link_config, sid)
        sess = Session(self, sid, addr, link, ServerConnection(self.ctx), now)
        self.sessions[sid] = sess
        self.counters["sessions_total"] += 1
        self.counters["sessions_active"] = len(self.sessions)
        return sess

    def _new_sid(self):
        while True:
            sid = int.from_bytes(os.urandom(2), "big")
            if sid and sid not in self.sessions:
                return sid

    def _pump(self, sess, now):
        for ev in sess.link.events():
            kind = ev[0]
            if kind == "flight":
                self._on_flight(sess, ev[1], now)
            elif kind == "message":
                self.counters["messages_in"] += 1
                try:
                    self.app.on_message(sess, ev[1])
                except QueueFull as e:
                    log("app_queue_full", sid=sess.sid, error=str(e))
                except Exception as e:  # the application must not take the service down
                    log("app_error", sid=sess.sid, error=repr(e))
            elif kind in ("error", "closed"):
                self._end(sess, "link %s: %s" % (kind, ev[1]))
                return
        sess._flush(now)

    def _on_flight(self, sess, data, now):
        if sess.link.channel is not None:
            return
        try:
            out = sess.tls.feed(data)
        except TLSError as e:
            self.handshake_failed(sess, e)
            if e.outgoing:
                try:
                    sess.link.send_flight(e.outgoing, now)
                    self._transmit(sess, now)
                except Exception:
                    pass
            sess.link.abort(2)
            self._transmit(sess, now)
            self._end(sess, "handshake failed")
            return
        if out:
            sess.link.send_flight(out, now)
        if sess.tls.done:
            self.established(sess, now)

    def handshake_failed(self, sess, e):
        """Count and log a TLS failure (e: TLSError); the caller ends the session."""
        self.counters["handshakes_failed"] += 1
        log(
            "handshake_failed",
            sid=sess.sid,
            peer=_peer(sess.addr),
            reason=e.reason,
            alert=e.alert_name,
        )

    def established(self, sess, now):
        """TLS is done: identity, exporter -> channel keys, app on_connect."""
        info = sess.tls.info()
        sess.suite = info["suite"]
        if info["psk_identity"] is not None:
            sess.identity = info["psk_identity"].decode("utf-8", "replace")
        elif info["client_cert"] is not None:
            cn = info["client_cert"].subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
            sess.identity = cn[0].value if cn else "certificate"
        sess.link.start_channel(sess.tls.export(LABEL, KEY_BLOCK_LEN), SUITES[sess.suite])
        sess.handshake_ms = now - sess.started_ms
        self.pending.pop(sess.addr, None)
        self.counters["handshakes_ok"] += 1
        for other in [
            s
            for s in self.sessions.values()
            if s is not sess and s.identity == sess.identity and s.identity
        ]:
            self._end(other, "replaced by a new session")
        log(
            "handshake_ok",
            sid=sess.sid,
            peer=_peer(sess.addr),
            identity=sess.identity,
            suite=sess.suite,
            mode=info["mode"],
            group=info["group"],
            ms=sess.handshake_ms,
        )
        try:
            self.app.on_connect(sess)
        except Exception as e:
            log("app_error", sid=sess.sid, error=repr(e))

    def _end(self, sess, reason):
        if self.sessions.pop(sess.sid, None) is None:
            return
        if self.pending.get(sess.addr) == sess.sid:
            del self.pending[sess.addr]
        self.counters["sessions_active"] = len(self.sessions)
        log("session_end", sid=sess.sid, identity=sess.identity, reason=reason)
        try:
            self.app.on_close(sess, reason)
        except Exception as e:
            log("app_error", sid=sess.sid, error=repr(e))

    def _send(self, data, addr):
        if self.transport is not None:
            self.transport.sendto(data, addr)
            self.counters["datagrams_out"] += 1

    def _transmit(self, sess, now):
        for d in sess.link.datagrams(now):
            if sess.sink is not None:
                sess.sink(d)
            else:
                self._send(d, sess.addr)

    def tick(self):
        """Timers: retransmissions, acks, handshake and idle timeouts."""
        now = self.now_ms()
        idle = self.limits["idle_timeout_s"] * 1000
        for sess in list(self.sessions.values()):
            self._transmit(sess, now)
            self._pump(sess, now)
            if sess.sid in self.sessions and now - sess.last_seen_ms > idle:
                self._end(sess, "idle")

    async def run_timers(self, period_ms=10):
        while True:
            await asyncio.sleep(period_ms / 1000)
            self.tick()


def _peek(data):
    """(type, sid) of a datagram, or wire.Drop: the service looks only at
    the clear header before choosing a session."""
    if len(data) < 3:
        raise wire.Drop("truncated")
    b0 = data[0]
    if (b0 & 0xF0) != wire.MARKER:
        raise wire.Drop("not_atls")
    if b0 & 0x08:
        raise wire.Drop("version")
    return b0 & 7, (data[1] << 8) | data[2]


def _peer(addr):
    return "%s:%d" % (addr[0], addr[1])


def _split_hostport(s):
    try:
        return parse_hostport(s, "0.0.0.0")
    except ValueError:
        raise ConfigError("listen must be host:port, got %r" % s)


def build_from_config(path):
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("config %s: %s" % (path, e))
    base = path.parent
    registry = Registry(base / cfg.get("registry", "devices.json"))
    cert_chain = key = None
    if cfg.get("cert"):
        cert_chain = x509.load_pem_x509_certificates((base / cfg["cert"]).read_bytes())
        key = serialization.load_pem_private_key((base / cfg["key"]).read_bytes(), None)
    # devices offer CCM_8 first (smallest tag on the radio); the service agrees
    kw = {
        "suites": ("TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_GCM_SHA256")
    }
    for name in ("suites", "groups", "tickets"):
        if name in cfg:
            kw[name] = tuple(cfg[name]) if isinstance(cfg[name], list) else cfg[name]
    try:
        tls_cfg = ServerConfig(
            psks=registry.psks,
            cert_chain=cert_chain,
            key=key,
            client_ca=registry.device_ca or None,
            **kw,
        )
        link_cfg = LinkConfig(**dict({"mtu": 1200}, **cfg.get("link", {})))
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e))
    service = Service(tls_cfg, link_cfg, cfg.get("limits"), load_app(cfg.get("app")))
    service.registry = registry
    service.binding_config = _binding_config(cfg, base)
    return service, _split_hostport(cfg.get("listen", "127.0.0.1:5684"))


def _binding_config(cfg, base):
    """HTTP/CoAP bindings (host_tools.bindings) from the config, or None."""
    if not (cfg.get("http_listen") or cfg.get("coap_listen")):
        if cfg.get("https"):
            raise ConfigError("https needs http_listen")
        return None
    out = {"http_listen": None, "coap_listen": None, "ssl_context": None}
    for key in ("http_listen", "coap_listen"):
        if cfg.get(key):
            out[key] = _split_hostport(cfg[key])
    https = cfg.get("https")
    if https:
        if not out["http_listen"] or not isinstance(https, dict) or "cert" not in https:
            raise ConfigError('https must be {"cert": ..., "key": ...} with http_listen')
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(
                base / https["cert"], base / https["key"] if https.get("key") else None
            )
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("https: %s" % e)
        out["ssl_context"] = ctx
    extra = cfg.get("bindings") or {}
    if (
        not isinstance(extra, dict)
        or set(extra) - {"max_body", "max_wait_ms"}
        or not all(isinstance(v, int) and v > 0 for v in extra.values())
    ):
        raise ConfigError("bindings: only max_body and max_wait_ms, positive integers")
    out.update(extra)
    return out


async def serve(service, host, port, stats=None, ready=None):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: service, local_addr=(host, port))
    bound = transport.get_extra_info("sockname")
    log("listening", addr="%s:%d" % bound[:2])
    bindings = None
    if getattr(service, "binding_config", None):
        from host_tools.bindings import Bindings  # aiohttp/aiocoap only when configured

        bindings = Bindings(service, **service.binding_config)
        addrs = await bindings.start()
        if ready:  # written before the ready file: once that exists, all are listening
            _write_json(str(ready) + ".json", dict(addrs, udp="%s:%d" % bound[:2]))
    if ready:
        Path(ready).write_text("%s:%d\n" % bound[:2])
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    timers = asyncio.ensure_future(service.run_timers())

    async def write_stats():
        while True:
            if stats:
                _write_stats(service, stats)
            await asyncio.sleep(1)

    st = asyncio.ensure_future(write_stats())
    try:
        await stop.wait()
    finally:
        timers.cancel()
        st.cancel()
        if bindings is not None:
            await bindings.stop()
        if stats:
            _write_stats(service, stats)
        transport.close()
        log("stopped", **{k: v for k, v in service.counters.items() if k != "drops"})


def _write_stats(service, path):
    _write_json(path, service.counters)


def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="ATLS service (UDP, and HTTP/CoAP if configured)")
    ap.add_argument("--config", required=True, help="service config (JSON)")
    ap.add_argument("--listen", help="host:port, overrides the config")
    ap.add_argument("--http-listen", help="host:port for ATLS over HTTP (draft §9)")
    ap.add_argument("--coap-listen", help="host:port for ATLS over CoAP")
    ap.add_argument("--stats", help="write counters (JSON) here every second")
    ap.add_argument("--ready-file", help="write the bound address here once listening")
    a = ap.parse_args(argv)
    try:
        service, (host, port) = build_from_config(a.config)
        if a.listen:
            host, port = _split_hostport(a.listen)
        if a.http_listen or a.coap_listen:
            bc = service.binding_config or {
                "http_listen": None,
                "coap_listen": None,
                "ssl_context": None,
            }
            if a.http_listen:
                bc["http_listen"] = _split_hostport(a.http_listen)
            if a.coap_listen:
                bc["coap_listen"] = _split_hostport(a.coap_listen)
            service.binding_config = bc
    except ConfigError as e:
        print("service: %s" % e, file=sys.stderr)
        return 2
    asyncio.run(serve(service, host, port, a.stats, a.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
