"""The bridge: ZigBee devices behind an XBee coordinator (serial, API frames)
and WiFi devices on UDP, forwarded to the ATLS service per device.

It sees only ciphertext and holds no keys: it forwards packets that carry the
ATLS marker (docs/PROTOCOL.md §1) from paired devices, drops and counts
everything else, and pairs devices (§8) into the pairing table.  Each device
has one flow toward its service: a UDP socket of its own (so the service sees
one source address per device) or a relay.RelayFlow for an HTTP(S)/CoAP
service.  Which source gets a flow, for how long, and who is evicted under
flood is flows.FlowTable's business: a WiFi source only for a plausible
first flight, separate quotas for ZigBee and WiFi/UDP, per-IP limits, idle
expiry; the socket is opened when a flow is admitted and closed when it
ends.  Limits (config "limits"): a token bucket per device, the flow
quotas, a bound on pending pairing requests, the ZigBee payload size.
Counters: `Gateway.stats()`, also what the control socket's "stats" answers.
"""

import asyncio
import socket
import time

from atls import pairing, protocol, xbee
from atls.errors import DecodeError
from host_tools.common import log
from host_tools.gateway import relay
from host_tools.gateway.capture import DOWN, SERIAL_IN, SERIAL_OUT, UP, Capture
from host_tools.gateway.config import GatewayError, is_relay
from host_tools.gateway.flows import FlowTable, plausible_first_flight
from host_tools.gateway.pairing_table import Pairer, PairingTable
from host_tools.ratelimit import TokenBuckets
from host_tools.udp_reader import BatchReader

__all__ = ["Gateway", "Flow"]


class Flow:
    """One device's UDP flow toward its service: its own socket, so the
    service sees one source address per device."""

    def __init__(self, key, sock):
        self.key = key  # ("zb", addr64 bytes) or ("udp", (ip, port))
        self.sock = sock
        self.born = self.last = 0.0
        self.sid = 0  # the session id in the service's latest packet to the device

    def send(self, data):
        try:
            self.sock.send(data)
        except OSError:
            pass  # e.g. ECONNREFUSED while the service restarts: the link retransmits


class Gateway:
    """Devices in through `upstream(key, payload)`, services' packets out
    through `downstream(flow, data)` (a subclass may override both, as the
    simulator's evil gateway does); keys are ("zb", addr64) or ("udp", addr)."""

    def __init__(self, config):
        self.config = config
        self.limits = config.limits
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.table = PairingTable(config.pairing_path)
        self.decoder = xbee.FrameDecoder(escaped=config.escaped)
        self.serial = None
        self.table_flows = FlowTable(self.limits)
        self.flows = self.table_flows.flows  # key -> flow (read-only view)
        self.next_sweep = 0.0
        # the table is cleared when a new device finds more than 4 x max_devices in it
        self.buckets = TokenBuckets(
            self.limits["rate_per_s"], self.limits["rate_burst"], 4 * self.limits["max_devices"] + 1
        )
        self.join_until = 0.0
        self.frame_id = 0
        self.at_waiters = {}
        self.udp = None
        self.capture = Capture(config.capture) if config.capture else None
        self.relay_clients = None  # shared HTTP session / CoAP context, made on first use
        self.counters = {
            "frames_in": 0,
            "frames_out": 0,
            "up_packets": 0,
            "up_bytes": 0,
            "down_packets": 0,
            "down_bytes": 0,
            "tx_failures": 0,
            "tx_too_large": 0,
            "paired": 0,
            "unpaired": 0,
            "expired": 0,
            "evicted": 0,
            "drops": {},
            "relay": {},
        }
        self.pairing = Pairer(
            self.table,
            config,
            self._pair_send,
            lambda: time.monotonic() <= self.join_until,
            self.counters,
        )
        self.pending = self.pairing.pending  # addr64 -> exchange (read-only view)

    def _capture(self, kind, data):
        if self.capture is not None:
            self.capture.record(kind, data)

    def drop(self, reason):
        d = self.counters["drops"]
        d[reason] = d.get(reason, 0) + 1

    # -- ZigBee side ----------------------------------------------------------------
    def open_serial(self):
        import serial  # pyserial

        try:
            self.serial = serial.serial_for_url(
                self.config.serial, baudrate=self.config.baudrate, timeout=0
            )
        except (serial.SerialException, ValueError) as e:
            raise GatewayError("cannot open %s: %s" % (self.config.serial, e))
        asyncio.get_running_loop().add_reader(self.serial.fileno(), self._serial_readable)

    def _serial_readable(self):
        try:
            data = self.serial.read(4096)
        except Exception as e:  # device unplugged: keep running, say so
            log("serial_error", error=str(e))
            return
        self._capture(SERIAL_IN, data)
        for frame in self.decoder.feed(data):
            self.counters["frames_in"] += 1
            try:
                self._on_frame(xbee.parse(frame))
            except DecodeError:
                self.drop("bad_frame")

    def _next_frame_id(self):
        self.frame_id = self.frame_id % 255 + 1
        return self.frame_id

    def _write_frame(self, frame_data):
        if self.serial is None:
            return
        raw = xbee.encode_frame(frame_data, self.config.escaped)
        self._capture(SERIAL_OUT, raw)
        self.serial.write(raw)
        self.counters["frames_out"] += 1

    async def at(self, command, parameter=b"", timeout=2.0):
        """Send an AT command to the coordinator and wait for its response."""
        fid = self._next_frame_id()
        fut = asyncio.get_running_loop().create_future()
        self.at_waiters[fid] = fut
        self._write_frame(xbee.at_command(fid, command, parameter))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise GatewayError("coordinator did not answer AT %s" % command.decode())
        finally:
            self.at_waiters.pop(fid, None)

    def _on_frame(self, f):
        kind = f[0]
        if kind == "rx":
            _, src64, _src16, _opts, payload = f
            self.upstream(("zb", bytes(src64)), bytes(payload))
        elif kind == "at_response":
            fut = self.at_waiters.get(f[1])
            if fut is not None and not fut.done():
                fut.set_result((f[3], bytes(f[4])))
        elif kind == "tx_status":
            delivery = f[4]
            if delivery == xbee.PAYLOAD_TOO_LARGE:
                self.counters["tx_too_large"] += 1
            elif delivery != xbee.DELIVERY_SUCCESS:
                self.counters["tx_failures"] += 1
        elif kind == "modem_status":
            log("modem_status", status=f[1])
        else:
            self.drop("unknown_frame")

    # -- WiFi side --------------------------------------------------------------------
    async def open_udp(self, local_addr):
        """Listen for WiFi devices on UDP at (host, port)."""
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _WifiSide(self), local_addr=local_addr
        )

    # -- forwarding ---------------------------------------------------------------------
    def upstream(self, key, payload):
        """A packet from a device (ZigBee or WiFi UDP)."""
        if not payload:
            return self.drop("empty")
        if key[0] == "zb" and pairing.is_pairing(payload):
            return self._on_pairing(key[1], payload)
        if not protocol.is_atls(payload):
            return self.drop("not_atls")
        if len(payload) > self.limits["max_payload"] and key[0] == "zb":
            return self.drop("too_big")
        service = "default"
        if key[0] == "zb":
            entry = self.table.get(key[1])
            if entry is None:
                self.pairing.not_paired(key[1])
                return self.drop("unpaired")
            service = (
                self.config.routes.get(key[1].hex())
                or self.config.routes.get(str(entry["device"]).lower())
                or entry["service"]
            )
        now = self.now()
        if now >= self.next_sweep:
            self.expire(now)
        flow = self.flows.get(key)
        if flow is None and key[0] == "udp":
            if self.table_flows.refuses_new(key, now):
                return self.drop("new_flow_rate")  # a flood's usual case: nothing parsed
            if not plausible_first_flight(payload):
                return self.drop("no_flow")  # before any bucket: junk creates no state
            # a source without a flow has no bucket worth keeping: the per-IP new-flow
            # bucket in admit() is its limit (one table lookup less per spoofed packet)
        elif not self.buckets.allow(key, now):
            return self.drop("rate")
        if flow is None:
            target = self.config.services.get(service)
            if target is None:
                return self.drop("unknown_service")
            ok, evicted, reason = self.table_flows.admit(key, now)
            for old in evicted:
                self.counters["evicted"] += 1
                self._close_flow(old)
            if not ok:
                return self.drop(reason)
            flow = self._open_flow(key, target)
            self.table_flows.add(key, flow, now)
            if key[0] == "udp":
                self.buckets.allow(key, now)  # its first packet, from a full bucket
        elif len(payload) > 2 and self.table_flows.is_pending(key):
            sid = (payload[1] << 8) | payload[2]
            if sid and sid == getattr(flow, "sid", 0):
                self.table_flows.validate(key)  # it saw the service's answer
        self.counters["up_packets"] += 1
        self.counters["up_bytes"] += len(payload)
        flow.last = now
        self._capture(UP, payload)
        flow.send(payload)

    def _open_flow(self, key, target):
        if is_relay(target):  # HTTP(S) / CoAP toward the service: keyless relay
            if self.relay_clients is None:
                self.relay_clients = relay.Clients(2 * self.limits["max_devices"] + 16)
            counters = self.counters["relay"].setdefault(target.kind, relay.new_counters())
            mtu = self.limits["max_payload"] if key[0] == "zb" else 1200
            return relay.RelayFlow(key, target, self.downstream, self.relay_clients, counters, mtu)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(target)
        flow = Flow(key, sock)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._flow_readable, flow)
        return flow

    @staticmethod
    def now():
        """The gateway's clock for flows and buckets (seconds, monotonic)."""
        return time.monotonic()

    def expire(self, now=None):
        """Close the flows idle past idle_timeout_s and the unvalidated ones
        older than pending_timeout_s (runs at most once a second from
        upstream, and every second from `run`)."""
        now = self.now() if now is None else now
        self.next_sweep = now + 1.0
        for flow in self.table_flows.expired(now):
            if flow is not None:
                self.counters["expired"] += 1
                self._close_flow(flow)

    def close_flows(self):
        """Close every flow (their sockets; relay flows too)."""
        for key in list(self.flows):
            self._close_flow(self.table_flows.remove(key))

    def _flow_readable(self, flow):
        for _ in range(64):
            try:
                data = flow.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP unreachable reported on the socket: nothing to read
            self.downstream(flow, data)

    def _close_flow(self, flow):
        if isinstance(flow, relay.RelayFlow):
            return flow.close()
        if flow.sock.fileno() < 0:
            return
        try:
            asyncio.get_running_loop().remove_reader(flow.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        flow.sock.close()

    def downstream(self, flow, data):
        """A packet from the service for one device."""
        self._capture(DOWN, data)
        if not protocol.is_atls(data):
            return self.drop("not_atls_down")
        key = flow.key
        if self.flows.get(key) is not flow:
            return self.drop("closed_flow")  # a relay answer after expiry or eviction
        flow.last = self.now()
        if len(data) > 2:
            flow.sid = (data[1] << 8) | data[2]  # a RelayFlow gets it here too
        if key[0] == "zb":
            if self.table.get(key[1]) is None:
                return self.drop("unpaired")  # unpaired since: cut off both ways
            if len(data) > self.limits["max_payload"]:
                return self.drop("too_big_down")
            self._write_frame(xbee.tx_request(self._next_frame_id(), key[1], data))
        elif self.udp is not None:
            self.udp.sendto(data, key[1])
        self.counters["down_packets"] += 1
        self.counters["down_bytes"] += len(data)

    # -- pairing ----------------------------------------------------------------------------
    def open_join(self, seconds):
        self.join_until = time.monotonic() + seconds
        nj = max(1, min(254, int(seconds)))
        if self.serial is not None:
            try:  # the coordinator's NJ follows the window (the control socket runs in the loop)
                asyncio.get_running_loop().create_task(self._set_nj(nj))
            except RuntimeError:  # a synchronous caller (tests): no loop to write NJ from
                log("join_window_nj_skipped", nj=nj)
        log("join_window_open", seconds=seconds)

    def close_join(self):
        self.join_until = 0

    async def _set_nj(self, nj):
        try:
            await self.at(b"NJ", bytes((nj,)))
        except GatewayError as e:
            log("join_window_error", error=str(e))

    def _on_pairing(self, addr64, payload):
        self.pairing.on_packet(addr64, payload)

    def _pair_send(self, addr64, payload):
        self._write_frame(xbee.tx_request(self._next_frame_id(), addr64, payload))

    def pending_requests(self):
        """The pairing requests awaiting confirmation (no nonces)."""
        return self.pairing.pending_requests()

    def confirm(self, addr64_hex, code=None, accept=True):
        self.pairing.confirm(addr64_hex, code, accept)

    def unpair(self, key):
        gone = self.table.remove(key)
        for a in gone:
            flow = self.table_flows.remove(("zb", bytes.fromhex(a)))
            if flow is not None:
                self._close_flow(flow)
        self.counters["unpaired"] += len(gone)
        return gone

    # -- ending, counters -----------------------------------------------------------------
    async def close_relays(self):
        for flow in list(self.flows.values()):
            if isinstance(flow, relay.RelayFlow):
                flow.close()
        if self.relay_clients is not None:
            await self.relay_clients.close()
            self.relay_clients = None

    def stats(self):
        c = dict(self.counters)
        c["frame_errors"] = dict(self.decoder.counters)
        c["flows"] = len(self.flows)
        c["flow_counts"] = self.table_flows.counts()
        c["limits"] = dict(self.table_flows.lim, max_devices=self.table_flows.max_zb)
        c["paired_devices"] = len(self.table.devices)
        return c


def _nothing():
    pass


class _WifiSide(asyncio.DatagramProtocol):
    def __init__(self, gw):
        self.gw = gw

    def connection_made(self, transport):
        self.gw.udp = transport
        # drain the socket in batches: one datagram per loop turn loses a flood's worth
        self.reader = BatchReader.attach(transport, self.datagram_received, _nothing)

    def datagram_received(self, data, addr):
        self.gw.upstream(("udp", addr), data)
