"""One device session as the application sees it, and the echo application.

`Session.send(payload, channel=0)` queues a message to the device; it is
delivered exactly once: within the session by the link, across sessions
because the service moves every queued and unacknowledged message to the
session that replaces this one (same identity) and the device de-duplicates
by message id (docs/PROTOCOL.md §4).  `last_msg_id` is the id of the message
being delivered (set before the application's on_message; the per-device
id the service also de-duplicates by, so an application that forwards
messages can hand it on, e.g. to suppress duplicates after its own restart).
"""

from collections import deque

from atls.link import QueueFull
from host_tools.service.admission import Budget

__all__ = ["Session", "EchoApp"]


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
        self.backlog = deque()  # (payload, channel) waiting for window space
        self.seen_drops = {}  # link drop counters already added to the service's
        self.frag0 = None  # first fragment of the device's first flight (ClientHello)
        self.sink = None  # callable(packet): HTTP/CoAP sessions' packets go here, not UDP
        self.budget = Budget(service.limits["amplification"])  # until the address is validated
        self.credential = None  # ("psk", key digest) or ("cert", fingerprint), once up
        self.auth = None  # "psk" | "cert": the identity's namespace
        self.last_msg_id = None  # id of the message being delivered (§4)
        self.device_hello = None  # what the device's HELLO carried after its id base

    @property
    def up(self):
        return self.link.channel is not None and self.link.state == "open"

    @property
    def key(self):
        """The device identity (auth namespace, identity) once authenticated."""
        return (self.auth, self.identity)

    def send(self, payload, channel=0):
        """Queue a message to the device on `channel` (0: the application's;
        2: firmware update), exactly-once delivery."""
        if len(self.backlog) >= self.service.limits["app_queue"]:
            raise QueueFull("application queue full for session %d" % self.sid)
        self.backlog.append((bytes(payload), channel))
        self.service.counters["messages_out"] += 1
        self.flush(self.service.now_ms())

    def flush(self, now):
        """Move queued app messages into the link while its window has room."""
        while self.backlog and self.up:
            p, ch = self.backlog[0]
            try:
                self.link.send(p, now, ch)
            except QueueFull:
                return
            self.backlog.popleft()

    def take_unsent(self):
        """Every message not yet acknowledged by the device, in order
        (unacknowledged in the link, then queued): the replacing session's."""
        out = []
        if self.link.channel is not None:
            out = self.link.unacked(True)
        out.extend(self.backlog)
        self.backlog.clear()
        return out


class EchoApp:
    """Sends every message straight back to the device that sent it."""

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        session.send(payload)

    def on_close(self, session, reason):
        pass
