"""Section `zigbee` (issue 5): frames and bytes on the air (sim.radio's
medium) for a handshake and per message; then the real gateway process
against a plain asyncio UDP relay (bench.gateway_relay)."""

from atls import xbee as X
from atls.protocol import SUITE_NAMES
from host_tools.bench.gateway_relay import gateway_vs_relay
from host_tools.bench.pair import CCM8, Device, make_service, quiet_stderr

AIR_OVERHEAD = 30  # sim.radio: PHY 6 + MAC 11 + NWK 8 + APS 5 bytes per frame
DATA_OVERHEAD_CCM8 = 12  # DATA (v2): 3-byte header + 1-byte seq + 8-byte tag (PROTOCOL.md §3)

NOTE = (
    "air = payload + 30 B/frame (PHY+MAC+NWK+APS, sim/radio.py); gateway and relay "
    "are separate processes, driven by this process over a pty / loopback UDP"
)


class Air:
    """One device module and the coordinator on sim.radio's Medium (virtual
    clock, no loss), each end speaking API frames through atls.xbee."""

    def __init__(self, ee):
        from sim.radio import COORDINATOR_BASE, DEVICE_BASE, Medium, Module, VirtualClock

        self.clock = VirtualClock()
        self.medium = Medium(self.clock, loss=0.0, latency_ms=5.0, seed=1)
        self.coord = self.medium.add(
            Module(self.medium, COORDINATOR_BASE + 1, coordinator=True, ee=ee)
        )
        self.dev = self.medium.add(Module(self.medium, DEVICE_BASE + 1, ee=ee, joined=True))
        self.np = self.coord.max_payload()
        self.rx = {"coord": [], "dev": []}
        self.uart = {"coord": 0, "dev": 0}
        for name, mod in (("coord", self.coord), ("dev", self.dev)):
            dec = X.FrameDecoder(False)
            mod.attach(lambda data, n=name, d=dec: self._uart_out(n, d, data))
        self.fid = 0

    def _uart_out(self, name, dec, data):
        for fd in dec.feed(data):
            f = X.parse(fd)
            if f[0] == "rx":
                self.rx[name].append(f[4])

    def send(self, frm, payload):
        self.fid = self.fid % 255 + 1
        if frm == "dev":
            raw = X.encode_frame(X.tx_request(self.fid, X.COORDINATOR64, payload))
            self.dev.serial_in(raw)
        else:
            raw = X.encode_frame(X.tx_request(self.fid, self.dev.addr64, payload))
            self.coord.serial_in(raw)
        self.uart[frm] += len(raw)
        self.clock.run_until_idle()

    def take(self, name):
        out, self.rx[name] = self.rx[name], []
        return out

    def snapshot(self):
        return dict(self.medium.totals)


class QuietApp:
    """The service's application, silenced: no echo mixes the two directions."""

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        pass

    def on_close(self, session, reason):
        pass


def _carry(air, dev, svc, tr, addr):
    """Move datagrams over the air both ways until nothing moves."""
    while True:
        moved = False
        for d in dev.link.datagrams(0):
            air.send("dev", d)
            moved = True
        for d in air.take("coord"):
            with quiet_stderr():
                svc.datagram_received(d, addr)
            moved = True
        for d in tr.take():
            air.send("coord", d)
            moved = True
        for d in air.take("dev"):
            dev.link.receive(d, 0)
            moved = True
        dev.pump(0)
        if not moved:
            return


def air_handshake(ee):
    """A full PSK+ECDHE (CCM_8) handshake with every link datagram carried as
    one ZigBee frame; then one 16-byte message each way."""
    air = Air(ee)
    mtu = air.np
    with quiet_stderr():
        svc, tr = make_service(SUITE_NAMES[CCM8], mtu, app=QuietApp())
    dev = Device(CCM8, mtu)
    dev.start(0)
    addr = ("10.9.9.9", 1)
    _carry(air, dev, svc, tr, addr)
    if not dev.up:
        raise RuntimeError("handshake over the emulated radio failed")
    res = {}
    t = air.snapshot()
    mods = {n: dict(m.counters) for n, m in (("dev", air.dev), ("coord", air.coord))}
    k = "np%d_" % mtu
    res[k + "hs_frames_on_air"] = t["frames"]
    res[k + "hs_frames_up"] = mods["dev"]["tx_frames"]
    res[k + "hs_frames_down"] = mods["coord"]["tx_frames"]
    res[k + "hs_payload_bytes"] = t["bytes"]
    res[k + "hs_air_bytes"] = t["air_bytes"]
    res[k + "hs_airtime_ms"] = round(t["airtime_ms"], 2)
    res[k + "hs_uart_bytes_device"] = air.uart["dev"] + mods["dev"]["serial_out_bytes"]
    # one 16-byte message device -> service (DATA up, ACK down), then one
    # service -> device (DATA down, ACK up)
    sess = next(iter(svc.sessions.values()))
    for direction in ("up", "down"):
        before = air.snapshot()
        if direction == "up":
            dev.link.send(bytes(16), 0)
        else:
            sess.send(bytes(16))
            with quiet_stderr():
                svc.tick()  # the service's timer pass sends what is queued
            for d in tr.take():
                air.send("coord", d)
        _carry(air, dev, svc, tr, addr)
        after = air.snapshot()
        res[k + "msg16_%s_frames" % direction] = after["frames"] - before["frames"]
        res[k + "msg16_%s_air_bytes" % direction] = after["air_bytes"] - before["air_bytes"]
        res[k + "msg16_%s_airtime_ms" % direction] = round(
            after["airtime_ms"] - before["airtime_ms"], 2
        )
    res[k + "msg_max_payload_bytes"] = mtu - DATA_OVERHEAD_CCM8
    return res


def zigbee(quick=False):
    res = {}
    for ee in (1, 0):  # NP 66 (network encryption, as the simulator runs) and 84
        res.update(air_handshake(ee))
    res.update(gateway_vs_relay(quick))
    # for scale (computed, not measured): a full 66-byte Receive Packet is 16 + 66
    # bytes on the coordinator's UART (8N1: 10 bits a byte) and 66 + 30 on the air
    res["bound_uart_115200_frames_per_s_66B"] = round(115200 / (10.0 * (16 + 66)))
    res["bound_air_250k_frames_per_s_66B"] = round(250000 / (8.0 * (66 + AIR_OVERHEAD)))
    return res
