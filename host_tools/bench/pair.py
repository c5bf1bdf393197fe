"""An ATLS pair in one process, for the system sections: the firmware client
(atls.tls.client + atls.link, as atls.session glues them, without its retry
policy) and the service's own `Service` object behind a stand-in transport.
No sockets, no loss, no timers: datagrams move only when `exchange` moves them.
"""

import contextlib
import os
import time

from atls.protocol import TLS_AES_128_CCM_8_SHA256

PSK = bytes(range(32))
IDENTITY = b"dev-01"  # as the simulator names devices (the IETF anchor assumes 1 byte)
CCM8 = TLS_AES_128_CCM_8_SHA256


@contextlib.contextmanager
def quiet_stderr():
    """The service logs a JSON line per handshake: keep the work, drop the text."""
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        yield


class Transport:
    """Stands in for the service's asyncio UDP transport."""

    def __init__(self):
        self.out = []

    def sendto(self, data, addr):
        self.out.append(bytes(data))

    def take(self):
        out, self.out = self.out, []
        return out


def make_service(suite_name, mtu, identity=IDENTITY, app=None):
    """(Service, Transport): the service with one PSK device and no rate limit."""
    from atls.link import LinkConfig
    from host_tools.service import Service
    from host_tools.service.tls_engine import ServerConfig

    svc = Service(
        ServerConfig(psks={identity: PSK}, suites=(suite_name,)),
        LinkConfig(mtu=mtu),
        limits={"rate_per_s": 10**9, "rate_burst": 10**9},
        app=app,
    )
    tr = Transport()
    svc.connection_made(tr)
    return svc, tr


class Device:
    """The firmware client side: TLS client + client Link; records the TLS
    flights (who, bytes) and the messages the channel delivered."""

    def __init__(self, suite, mtu, identity=IDENTITY, discards=0, base=0):
        from atls.link import Link, LinkConfig
        from atls.tls.client import ClientConfig, TLSClient

        cfg = ClientConfig(suites=(suite,), psk=PSK, psk_identity=identity)
        self.tls = TLSClient(cfg, discards=discards)  # atls.session's DISCARDS for a device
        self.stale = 0  # server flights discarded (abuse: stale or forged)
        self.link = Link("client", LinkConfig(mtu=mtu))
        self.flights = []  # ("c"|"s", TLS bytes)
        self.messages = []
        self.base = base  # id of our first message (docs/PROTOCOL.md §4: boot << 32 | counter)

    def start(self, now):
        self.tls.start(now)
        out = self.tls.data_to_send()
        self.flights.append(("c", len(out)))
        self.link.send_flight(out, now)

    def pump(self, now):
        from atls.channel import key_block

        for ev in self.link.events():
            if ev[0] == "flight":
                self.flights.append(("s", len(ev[1])))
                self.tls.receive(ev[1], now)
                out = self.tls.data_to_send()
                if out:
                    self.flights.append(("c", len(out)))
                    self.link.send_flight(out, now)
                if self.tls.connected and self.link.channel is None:
                    self.link.start_channel(key_block(self.tls), self.tls.suite, self.base)
            elif ev[0] == "message":
                self.messages.append(ev[1])

    @property
    def up(self):
        return self.link.channel is not None

    @property
    def settled(self):
        """The channel is open and the service has acknowledged the client's
        last flight (its Finished): the link has no timer left to run."""
        return self.link.channel is not None and self.link.next_timer_ms() is None


def exchange(dev, svc, tr, addr, now=0, server_time=None):
    """Move datagrams both ways until nothing moves (no loss, no timers):
    returns (client->service datagrams, service->client datagrams).  With
    `server_time` (a one-item list), the service's own time is added to it."""
    up, down = [], []
    pc = time.perf_counter
    while True:
        moved = False
        for d in dev.link.datagrams(now):
            up.append(d)
            if server_time is None:
                svc.datagram_received(d, addr)
            else:
                t = pc()
                svc.datagram_received(d, addr)
                server_time[0] += pc() - t
            moved = True
        for d in tr.take():
            down.append(d)
            dev.link.receive(d, now)
            moved = True
        dev.pump(now)
        if not moved:
            return up, down


def total_bytes(datagrams):
    return sum(len(d) for d in datagrams)
