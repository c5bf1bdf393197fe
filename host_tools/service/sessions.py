"""One device session as the application sees it, and the echo application.

`Session.send(payload, channel=0)` queues a message to the device; it is
delivered exactly once: within the session by the link, across sessions
because the service moves every queued and unacknowledged message to the
session that replaces this one (same identity) and the device de-duplicates
by message id (docs/PROTOCOL.md §4).  `last_msg_id` is the id of the message
being delivered (set before the application's on_message; the per-device
id the service also de-duplicates by, so an application that forwards
messages can hand it on, e.g. to suppress duplicates after its own restart).
`send(..., on_delivered=f)` calls f() once the device acknowledged the
message, in whichever session that happens (the callback moves with it).
An application with `hold_acks = True` may return an awaitable from
on_message: the link acknowledges the message once it is done
(host_tools.service.hold).
"""

from collections import deque

from atls import protocol, wire
from atls.link import QueueFull
from host_tools.common import log
from host_tools.service.admission import Budget
from host_tools.service.hold import hold_ack

__all__ = ["Session", "EchoApp", "Continuity"]


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
        self.backlog = deque()  # (payload, channel, on_delivered) waiting for window space
        self.seen_drops = {}  # link drop counters already added to the service's
        self.frag0 = None  # first fragment of the device's first flight (ClientHello)
        self.sink = None  # callable(packet): HTTP/CoAP sessions' packets go here, not UDP
        self.budget = Budget(service.limits["amplification"])  # until the address is validated
        self.credential = None  # ("psk", key digest) or ("cert", fingerprint), once up
        self.auth = None  # "psk" | "cert": the identity's namespace
        self.last_msg_id = None  # id of the message being delivered (§4)
        self.granted = 0  # channels granted in our HELLO (bit n: channel n)
        self.device_hello = None  # what the device's HELLO carried after its id base
        self.on_delivered = {}  # link seq -> callback of send(on_delivered=)
        self.held = None  # hold_acks apps: (awaitable or None, msg id) per delivered message
        self.due = None  # when the service's timer tick visits it next (service.timers)
        self.shared = None  # service.state_store.Shared once stored in Redis
        self.key_block = None  # (stored sessions) the channel's exporter key block
        self.loaded = False  # this worker took the session over (no handshake here)
        self.unsent_taken = False  # take_unsent() ran: its messages belong to another session

    @property
    def up(self):
        return self.link.channel is not None and self.link.state == "open"

    @property
    def key(self):
        """The device identity (auth namespace, identity) once authenticated."""
        return (self.auth, self.identity)

    def send(self, payload, channel=0, on_delivered=None):
        """Queue a message to the device on `channel` (0: the application's;
        2: firmware update), exactly-once delivery; on_delivered() is called
        once the device acknowledged it."""
        if len(self.backlog) >= self.service.limits["app_queue"]:
            raise QueueFull("application queue full for session %d" % self.sid)
        self.backlog.append((bytes(payload), channel, on_delivered))
        if self.shared is not None:  # replayed if a commit finds a newer record
            self.shared.journal.append(self.backlog[-1])
        self.service.counters["messages_out"] += 1
        self.flush(self.service.now_ms())
        # the tick sends it, unless a datagram's answer does first (service.timers)
        self.service.timers.wake(self, self.service.now_ms())

    def flush(self, now):
        """Move queued app messages into the link while its window has room."""
        while self.backlog and self.up:
            p, ch, cb = self.backlog[0]
            try:
                seq = self.link.send(p, now, ch)
            except QueueFull:
                return
            self.backlog.popleft()
            if cb is not None:
                self.on_delivered[seq] = cb

    def delivered(self, seq):
        """The link's "delivered" event: the device acknowledged `seq`."""
        cb = self.on_delivered.pop(seq, None)
        if cb is not None:
            cb()

    def callbacks(self):
        """The on_delivered callbacks of the messages this session still
        carries (unacknowledged or queued, those moved to it included)."""
        return list(self.on_delivered.values()) + [e[2] for e in self.backlog if e[2]]

    def take_unsent(self):
        """Every message not yet acknowledged by the device, in order
        (unacknowledged in the link, then queued) as (payload, channel,
        on_delivered): the replacing session's.  Once only: a second call (the
        replaced session's end) returns [], else those messages would be held
        for the device's next session as well and reach it twice, under new
        ids."""
        if self.unsent_taken:
            return []
        self.unsent_taken = True
        out = []
        link = self.link
        if link.channel is not None:
            un = link.unacked(True)
            seq = link.first_unacked_id() - link.base + 1  # the first of them (contiguous)
            cbs = self.on_delivered
            out = [(p, ch, cbs.pop(seq + i, None)) for i, (p, ch) in enumerate(un)]
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


class Continuity:
    """The part of core.Service that keeps a device's messages across
    sessions (docs/PROTOCOL.md §4-§5): de-duplication before the application,
    RESET for lost sessions, a session's move to a new address.  A mixin of
    Service (it uses its counters, peers, per_ip, app, _pump, transmit)."""

    def _message(self, sess, payload, channel, msg_id):
        # §4: a message delivered in an earlier session is not delivered again
        # (hold_acks apps: the mark is raised once the message is safe, hold.py)
        key = sess.key
        r = None
        if msg_id is not None and self.peers.duplicate(key, msg_id):
            self.counters["duplicates_suppressed"] += 1
            msg_id = None
        elif channel > 7 or (channel > 1 and not (sess.granted >> channel) & 1):
            self.counters["channel_refused"] += 1  # acknowledged, never delivered
        elif channel == 0 or channel > 1:
            sess.last_msg_id = msg_id
            self.counters["messages_in"] += 1
            try:
                if channel == 0:
                    r = self.app.on_message(sess, payload)
                elif hasattr(self.app, "on_channel_message"):
                    r = self.app.on_channel_message(sess, channel, payload)
            except QueueFull as e:
                r = e
                log("app_queue_full", sid=sess.sid, error=str(e))
            except Exception as e:  # the application must not take the service down
                r = e
                log("app_error", sid=sess.sid, error=repr(e))
        if sess.held is not None:
            hold_ack(self, sess, r, msg_id)
        elif msg_id is not None:
            self.peers.delivered(key, msg_id)

    def _unknown(self, ptype, sid, data, addr, known=False):
        out = self.unknown_answer(ptype, sid, data, known)
        if out is not None:
            self._send(out, addr)

    def unknown_answer(self, ptype, sid, data, known=False):
        """The answer to a packet for a session id we do not have (None: no
        answer); `known`: the id is live elsewhere (never its RESET).  §5: a
        sealed packet gets RESET || token (20 bytes, only for a longer
        packet); others ERROR (4 bytes, for >= 4).  Also the HTTP/CoAP
        bindings' answer to a batch for a session they no longer have."""
        n = len(data)
        if ptype >= protocol.DATA and ptype != protocol.ERROR and not known:
            tok = self.peers.reset_token(sid)  # the previous run's sessions only
            if tok is not None and n > protocol.HEADER_LEN + 1 + protocol.RESET_TOKEN_LEN:
                self.counters["resets_sent"] += 1
                return wire.encode(protocol.ERROR, sid, bytes((protocol.RESET,)) + tok)
        if ptype != protocol.ERROR and n > protocol.HEADER_LEN:
            return wire.encode(protocol.ERROR, sid, bytes((protocol.UNKNOWN_SESSION,)))
        return None

    def _moved(self, sess, ptype, sid, data, addr, now):
        # a live session's id from another address: the device's address changed
        # (NAT, a gateway restart) if a new authenticated message comes from it;
        # anything else gets ERROR(unknown_session) - never the RESET token
        link = sess.link
        got = link.counters["messages_in"]
        if ptype in (protocol.DATA, protocol.CDATA) and sess.up and sess.sink is None:
            link.receive(data, now)
            if link.counters["messages_in"] > got and self._committed(sess, data, now):
                self._readdress(sess, addr)
                sess.last_seen_ms = now
                self._pump(sess, now)
                self.transmit(sess, now)
                self.timers.schedule(sess, now)
                return
            self._absorb_drops(sess)
        self.drop("unknown_session")
        self._unknown(ptype, sid, data, addr, known=True)

    def _committed(self, sess, data, now):
        """Shared state: the message `data` brought is committed before the
        session moves or the application sees it (state_store.received).  A
        stale copy reloads the newer record, where it may be a replay: the
        session moves all the same (the packet was authentic and newer than
        our copy) so the device at its new address gets the ACK."""
        if self.store is not None:
            self.store.received(self, sess, (data,), now)
        return self.is_live(sess)

    def _readdress(self, sess, addr):
        old = self.per_ip[sess.addr[0]]
        old[0] -= 1
        if not old[0]:
            del self.per_ip[sess.addr[0]]
        self.per_ip.setdefault(addr[0], [0, 0])[0] += 1
        log("session_moved", sid=sess.sid, peer="%s:%s" % addr)
        sess.addr = addr
