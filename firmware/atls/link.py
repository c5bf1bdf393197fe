"""ATLS link state machine (docs/PROTOCOL.md §2-§5), sans-I/O, either role.

A Link never touches a socket or a clock: the caller feeds datagrams
(`receive`), TLS flights (`send_flight`) and messages (`send`) with the
current millisecond tick, transmits `datagrams(now)`, acts on `events()` and
sleeps until `next_timer_ms()`.  now_ms must never go back or wrap (on
MicroPython accumulate time.ticks_diff, not ticks_ms).

Handshake (§2), in this module: our flight is one bytes object plus a
bytearray of "not yet acknowledged" flags, one per mtu-5 byte fragment,
re-sent on exponential backoff (restarted whenever an HS_ACK shows progress)
until HS_ACK bitmaps, any fragment of the peer's next flight or any
authenticated channel packet acknowledge it.  The peer's flight is
reassembled in a dict index -> bytes whose lengths are checked before
storing (equal non-last fragments, last one no longer, total <= max_flight),
then joined once.  Only the last completed peer flight is remembered; its
HS_ACK can be repeated any time (at most once per rto_ms/4 when it only
repeats state).  A client may refuse the service's first flight when its
TLS records do not open (`refuse_flight`: a stale or forged flight).
Channel (§3-§5): the sealed data path (DATA, ACK, CLOSE) is the mixin
atls.link_data.Messages, one object with the Link.
Every bad datagram raises wire.Drop / AuthError inside `receive`, which
counts it in `drops[reason]` and changes nothing else.

ERROR at the device (§5): before it has a session id only ERROR for
session 0 is taken, as a hint (busy): the flight's retransmission backs off,
nothing ends.  Once the service sent an authenticated packet (`confirmed`)
only RESET with the token from the service's HELLO ends the link; any other
ERROR is counted (drops["unauthenticated"]) and ignored.

Events: ("flight", bytes), ("session_id", sid) (a client adopting the
service's), ("hello", bytes), ("message", payload, channel, id),
("delivered", seq), ("rekey",), ("closed", reason) and ("error", reason).
"""

from atls import wire
from atls.errors import AuthError, UsageError
from atls.link_data import Messages, QueueFull, SeqExhausted  # noqa: F401  (re-exported)
from atls.protocol import CLOSE, CLOSE_IDLE, ERROR, HS_ACK, HS_END

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_FAR = const(-(1 << 29))  # "long ago": an HS_ACK due at once

# fmt: off
DROP_REASONS = (
    "not_atls", "version", "truncated", "bad_type", "unknown_session", "bad_fragment",
    "replay", "auth", "bad_ack", "reorder_full", "no_channel", "too_big", "closed",
    "unauthenticated",
)
# fmt: on


class LinkConfig:
    def __init__(
        self,
        mtu=64,
        rto_ms=1000,
        rto_max_ms=8000,
        handshake_timeout_ms=30000,
        window=4,
        queue=16,
        reorder=8,
        idle_timeout_ms=None,
        max_flight=4096,
        rx_mtu=1280,
        replay_window=64,
        peer_timeout_ms=60000,
    ):
        if mtu < 32 or mtu > 65535 or rx_mtu < 32 or replay_window < 64:
            raise UsageError("mtu, rx_mtu >= 32, replay_window >= 64")
        if rto_ms < 1 or rto_max_ms < rto_ms or handshake_timeout_ms < 1 or peer_timeout_ms < 1:
            raise UsageError("bad timers")
        if not (1 <= window <= wire.ACK_SPAN and 0 <= reorder <= wire.ACK_SPAN) or queue < 0:
            raise UsageError("window and reorder must be 1..32, queue >= 0")
        if max_flight < 1 or max_flight > (mtu - 5) * 255:
            raise UsageError("max_flight must fit 255 fragments")
        self.mtu = mtu
        self.rto_ms = rto_ms
        self.rto_max_ms = rto_max_ms
        self.handshake_timeout_ms = handshake_timeout_ms
        self.peer_timeout_ms = peer_timeout_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.window = window
        self.queue = queue
        self.reorder = reorder
        self.max_flight = max_flight
        self.rx_mtu = rx_mtu
        self.replay_window = replay_window


class Link(Messages):
    def __init__(self, role, config=None, session_id=0):
        if role != "client" and role != "server":
            raise UsageError("role must be client or server")
        if session_id < 0 or session_id > 0xFFFF or (role == "server" and not session_id):
            raise UsageError("a server link needs a non-zero 16-bit session id")
        self.role = role
        self._odd = role == "client"  # §2: the peer's flights are odd for a client
        self.config = config or LinkConfig()
        self.session_id = session_id
        self.state = "handshake"  # handshake | open | closing | closed | failed
        self.channel = None
        d = self.drops = {}
        for r in DROP_REASONS:
            d[r] = 0
        # fmt: off
        self.counters = {
            "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0,
            "retransmissions": 0, "flights_in": 0, "flights_out": 0, "messages_in": 0,
            "messages_out": 0, "duplicates": 0, "hints": 0, "drops": d,
        }
        # fmt: on
        self._ev = []
        self._now = 0
        self._hs_end = None  # handshake deadline
        self._tx_f = -1  # number of our latest flight
        self._tx = None  # while unacknowledged: [bytes, unacked flags, left, due, rto]
        self._sent = None  # a client's flight 0 (the same list) until it sends flight 2
        self._refused = ()  # session ids of refused flights: dropped from now on
        self._rx_done = -1  # last completed peer flight and its fragment count
        self._rx_n = 0
        self._rx = None  # flight being reassembled: [flight, frags, size, end, end_len, max]
        self._hs_ack = -1  # flight to HS_ACK and when
        self._hs_ack_at = 0
        self._last_rep = _FAR  # when we last repeated an HS_ACK / ACK / CLOSE
        self._init_messages()
        self._error = None  # ERROR packet to send (service)

    # -- entry points ----------------------------------------------------------
    def events(self):
        ev = self._ev
        self._ev = []
        return ev

    def send_flight(self, data, now_ms):
        """Queue our next TLS flight (bytes); it goes out with datagrams()."""
        self._now = now_ms
        f = self._rx_done + 1  # §2: flights alternate, device even, service odd
        if self.state != "handshake" or self.channel or (f & 1) == self._odd or f <= self._tx_f:
            raise UsageError("no flight is due from this side")
        n = len(data)
        size = self.config.mtu - 5
        if n == 0 or n > self.config.max_flight:
            raise UsageError("flight size out of range")
        if self._hs_ack == self._rx_done:
            self._hs_ack = -1  # our flight acknowledges the peer's implicitly
        self._tx_f = f
        count = (n + size - 1) // size
        self._tx = [bytes(data), bytearray(b"\x01" * count), count, None, self.config.rto_ms]
        self._sent = self._tx if f == 0 else None
        self.counters["flights_out"] += 1
        if self._hs_end is None:
            self._hs_end = now_ms + self.config.handshake_timeout_ms

    def flight_pending(self):
        """True while our latest flight is not yet acknowledged: once the
        channel is up and this is False, the peer has completed TLS too."""
        return self._tx is not None

    def refuse_flight(self, now_ms):
        """Client: the service's first flight just delivered was not for our
        ClientHello (its TLS records did not open: atls.tls.client).  Forget
        it as if never received, and the session id it taught us (a packet
        carrying that id is dropped from now on: unknown_session); our
        ClientHello is retransmitted again, rto_ms after now."""
        tx = self._sent
        if tx is None or self._rx_done != 1 or self._tx_f:
            raise UsageError("no first flight to refuse")
        self._refused += (self.session_id,)
        self.session_id, self._rx_done, self._hs_ack = 0, -1, -1
        n, rto = len(tx[1]), self.config.rto_ms
        tx[1], tx[2], tx[3], tx[4] = bytearray(b"\x01" * n), n, now_ms + rto, rto
        self._tx = tx

    def abort(self, reason):
        """Service only: fail the link and send ERROR(reason) (§5)."""
        if self._odd:
            raise UsageError("only the service sends ERROR")
        from atls.protocol import ERROR_NAMES

        self._error = wire.encode(ERROR, self.session_id, bytes((reason,)))
        self._stop("failed", ERROR_NAMES.get(reason, "error_%d" % reason))

    def receive(self, datagram, now_ms):
        self._now = now_ms
        c = self.counters
        c["packets_in"] += 1
        c["bytes_in"] += len(datagram)
        try:
            ch = self.channel
            p = wire.decode(datagram, ch.tag_len if ch else None, self.config.rx_mtu)
            t, psid = p[0], p[1]
            st = self.state
            if st == "failed" or (st == "closed" and t != CLOSE):
                raise wire.Drop("closed")
            sid = self.session_id
            learn = False
            if psid != sid:
                if self._odd:  # client: adopt the service's sid from its first packets
                    if sid or (t > HS_ACK and t != ERROR) or psid in self._refused:
                        raise wire.Drop("unknown_session")
                    learn = t != ERROR
                elif psid or t > HS_END or p[2]:  # service: sid 0 only on flight 0
                    raise wire.Drop("unknown_session")
            elif not sid and t != ERROR:
                raise wire.Drop("unknown_session")  # §1: the service never uses sid 0
            n = len(self._ev)
            if t <= HS_END:
                self._fragment(p)
            elif t == HS_ACK:
                self._hs_acked(p[2], p[4])
            elif t == ERROR:
                self._error_in(p)
            else:
                self._sealed_in(p)
            if learn:  # the packet was good: adopt its sid, reported first
                self.session_id = psid
                self._ev.insert(n, ("session_id", psid))
        except wire.Drop as e:
            self.drops[e.reason] += 1
        except AuthError:
            self.drops["auth"] += 1

    def datagrams(self, now_ms):
        self._now = now = now_ms
        cfg = self.config
        st = self.state
        out = []
        if st != "failed" and st != "closed":  # timers
            if self._hs_end is not None and now >= self._hs_end:
                self._stop("failed", "handshake_timeout")
            elif self._inflight and now >= (self._progress or now) + cfg.peer_timeout_ms:
                self._stop("failed", "peer_timeout")
            elif self._close and now >= self._close[2]:
                self._stop("closed", self._reason)
            elif (
                st == "open"
                and cfg.idle_timeout_ms is not None
                and now >= self._activity + cfg.idle_timeout_ms
            ):
                self.close(CLOSE_IDLE)
            st = self.state
        if self._error:
            out.append(self._error)
            self._error = None
        if st == "closed":
            self._close_reply(now, out)
        elif st != "failed":
            self._flights_out(now, out)
            if self.channel:
                self._channel_out(now, out)
        c = self.counters
        for d in out:
            c["packets_out"] += 1
            c["bytes_out"] += len(d)
        return out

    def next_timer_ms(self):
        now = self._now
        st = self.state
        if st == "failed":
            return now if self._error else None
        if st == "closed":
            return self._reply_at
        tx = self._tx
        if tx is not None and tx[3] is None:
            return now
        ts = [self._hs_end, self._ack_at]
        if self._hs_ack >= 0:
            ts.append(self._hs_ack_at)
        if tx is not None:
            ts.append(tx[3])
        self._data_timers(ts, now, st)
        t = None
        for x in ts:
            if x is not None and (t is None or x < t):
                t = x
        return t

    # -- handshake in (§2) -----------------------------------------------------
    def _fragment(self, p):
        t, _, f, i, data = p
        c = self.counters
        if (f & 1) != self._odd:
            raise wire.Drop("bad_fragment")
        if f == self._rx_done:  # §2: a lost HS_ACK heals
            c["duplicates"] += 1
            self._ack_hs(f, self._last_rep)
            return
        if f <= self._tx_f:  # a flight older than ours: stale copy
            c["duplicates"] += 1
            return
        if f != self._tx_f + 1 or self.channel:
            raise wire.Drop("bad_fragment")
        rx = self._rx
        if rx is None or rx[0] != f:
            rx = self._rx = [f, {}, 0, -1, 0, -1]
        _, frags, size, end, end_len, top = rx
        if i in frags:
            c["duplicates"] += 1
            self._ack_hs(f, self._last_rep)  # partial: the sender retransmits
            return
        n = len(data)
        mf = self.config.max_flight
        if t == HS_END:
            if end >= 0 or i < top or (size and n > size):
                raise wire.Drop("bad_fragment")
            if (i * size + n if size else (i + 1) * n) > mf:
                raise wire.Drop("too_big")
            rx[3] = end = i
            rx[4] = n
        else:
            if (end >= 0 and i > end) or i >= 254 or (size and n != size) or end_len > n:
                raise wire.Drop("bad_fragment")
            if (i + 1) * n >= mf or (end >= 0 and end * n + end_len > mf):
                raise wire.Drop("too_big")
            rx[2] = n
            if i > top:
                rx[5] = i
        self._tx_acked()  # the peer answers our flight: it has all of it
        frags[i] = bytes(data)
        if end >= 0:
            if len(frags) <= end:
                self._ack_hs(f, _FAR if t == HS_END else self._last_rep)
                return
            self._rx = None
            self._rx_done = f
            self._rx_n = end + 1
            self._hs_ack = -1
            self._ack_hs(f, _FAR)
            c["flights_in"] += 1
            self._ev.append(("flight", b"".join([frags[k] for k in range(end + 1)])))

    def _ack_hs(self, f, last):
        # HS_ACK flight f at once (last = _FAR) or rto/4 after the last repeat
        at = max(self._now, last + self.config.rto_ms // 4)
        if self._hs_ack != f or at < self._hs_ack_at:
            self._hs_ack = f
            self._hs_ack_at = at

    def _hs_acked(self, f, bm):
        tx = self._tx
        if f != self._tx_f or tx is None:
            if f <= self._tx_f and (f & 1) != self._odd:
                self.counters["duplicates"] += 1  # a late ack of an acknowledged flight
                return
            raise wire.Drop("bad_ack")
        un = tx[1]
        count = len(un)
        spare = 8 * len(bm) - count
        if spare > 0 and int.from_bytes(bytes(bm), "big") & ((1 << spare) - 1):
            raise wire.Drop("bad_ack")  # a bit beyond the flight's last fragment
        left = tx[2]
        for i in range(count if spare >= 0 else 8 * len(bm)):
            if un[i] and bm[i >> 3] & (0x80 >> (i & 7)):
                un[i] = 0
                tx[2] -= 1
        if not tx[2]:
            self._tx_acked()
        elif tx[2] < left:  # progress: the path works, restart the backoff
            tx[4] = self.config.rto_ms
            tx[3] = self._now + tx[4]

    def _tx_acked(self):
        self._tx = None
        if self.channel:
            self._hs_end = None

    # -- handshake out (§2) ----------------------------------------------------
    def _flights_out(self, now, out):
        # the HS_ACK that is due (partial for the flight in reassembly), then
        # our flight's unacknowledged fragments when they are due
        sid = self.session_id
        f = self._hs_ack
        if f >= 0 and now >= self._hs_ack_at:
            self._hs_ack = -1
            self._last_rep = now
            rx = self._rx
            bm = None
            if f == self._rx_done:
                bm = wire.make_bitmap(range(self._rx_n), self._rx_n)
            elif rx is not None and rx[0] == f:  # partial, for the flight in reassembly
                fr = rx[1]
                bm = wire.make_bitmap(fr, rx[3] + 1 if rx[3] >= 0 else max(fr) + 1)
            if bm:
                out.append(wire.encode(HS_ACK, sid, bytes((f,)) + bm))
        tx = self._tx
        if tx is not None and (tx[3] is None or now >= tx[3]):
            cfg = self.config
            size = cfg.mtu - 5
            data, un = tx[0], tx[1]
            n = len(un)
            for i in range(n):
                if un[i]:
                    out.append(
                        wire.encode_hs(
                            sid, self._tx_f, i, data[i * size : (i + 1) * size], i == n - 1
                        )
                    )
                    if tx[3] is not None:
                        self.counters["retransmissions"] += 1
            if tx[3] is not None:
                tx[4] = min(tx[4] * 2, cfg.rto_max_ms)
            tx[3] = now + tx[4]

    def _stop(self, state, reason):
        self.state = state
        self._hs_end = self._ack_at = self._tx = None
        self._ev.append(("error" if state == "failed" else "closed", reason))
