"""ATLS link state machine (docs/PROTOCOL.md §2-§5), sans-I/O, either role."""

# Theory of operation.  A Link never touches a socket or a clock: the caller
# feeds datagrams (`receive`), TLS flights (`send_flight`) and messages
# (`send`) with the current millisecond tick, transmits `datagrams(now)`,
# acts on `events()` and sleeps until `next_timer_ms()`.  now_ms must never
# go back or wrap (on MicroPython accumulate time.ticks_diff, not ticks_ms).
# Handshake (§2): our flight is one bytes object plus a bytearray of "not yet
# acknowledged" flags, one per mtu-5 byte fragment, re-sent on exponential
# backoff (restarted whenever an HS_ACK shows progress) until HS_ACK bitmaps,
# any fragment of the peer's next flight or any authenticated channel packet
# acknowledge it.  The peer's flight is reassembled in a dict index -> bytes
# whose lengths are checked before storing (equal non-last fragments, last
# one no longer, total <= max_flight), then joined once.  Only the last
# completed peer flight is remembered; its HS_ACK can be repeated any time.
# Channel (§3-§5): messages get seqs at send(); up to `window` are sealed and
# in flight as [seq, packet, due, rto, state] (the sealed bytes are all that
# is kept: unacked() decrypts them), `queue` more wait as plaintext.  The
# receiver delivers in seq order, holds up to `reorder` early ones (within
# the ACK's 32-seq bitmap) and ACKs with next + bitmap.  Answers that only
# repeat state (HS_ACK, ACK or CLOSE after a duplicate) wait rto_ms/4 after
# the previous such answer, so replayed packets cannot burn the counters.
# Every bad datagram raises wire.Drop / AuthError inside `receive`, which
# counts it in `drops[reason]` and changes nothing else.
# Comments rather than docstrings keep the compiled module small (32 KiB heap).
from atls import wire
from atls.channel import Channel
from atls.errors import ATLSError, AuthError, UsageError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


DROP_REASONS = (
    "not_atls",
    "version",
    "truncated",
    "bad_type",
    "unknown_session",
    "bad_fragment",
    "replay",
    "auth",
    "bad_ack",
    "reorder_full",
    "no_channel",
    "too_big",
    "closed",
)

_HS_END = const(1)  # wire packet types (§1)
_HS_ACK = const(2)
_DATA = const(3)
_ACK = const(4)
_CLOSE = const(5)
_ERROR = const(6)
_SPAN = const(32)  # §4: the ACK bitmap covers next+1 .. next+32
_SENT = const(1)  # in-flight message states (0 = not sent yet)
_SACKED = const(2)
_FAR = const(-(1 << 29))


class QueueFull(ATLSError):
    pass


class SeqExhausted(QueueFull):
    pass  # seq 65534 was used: start a new session (the link said rekey)


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
        if window < 1 or window > _SPAN or queue < 0 or reorder < 0 or reorder > _SPAN:
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


class Link:
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
        self.counters = {
            "packets_in": 0,
            "packets_out": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "retransmissions": 0,
            "flights_in": 0,
            "flights_out": 0,
            "messages_in": 0,
            "messages_out": 0,
            "duplicates": 0,
            "drops": d,
        }
        self._ev = []
        self._now = 0
        self._hs_end = None  # handshake deadline
        self._tx_f = -1  # number of our latest flight
        self._tx = None  # while unacknowledged: [bytes, unacked flags, left, due, rto]
        self._rx_done = -1  # last completed peer flight and its fragment count
        self._rx_n = 0
        self._rx = None  # flight being reassembled: [flight, frags, size, end, end_len, max]
        self._hs_ack = -1  # flight to HS_ACK and when
        self._hs_ack_at = 0
        self._last_rep = _FAR  # when we last repeated an HS_ACK / ACK / CLOSE
        self._seq = 0  # next seq to give a message
        self._sealed = 0  # seqs below this have been sealed (sent)
        self._queue = []  # (seq, plaintext) waiting for the window
        self._inflight = []  # [seq, packet, due, rto, state]
        self._progress = 0  # when the in-flight messages last moved
        self._rx_next = 0  # every seq below was delivered
        self._held = {}  # seq -> plaintext, early arrivals
        self._ack_at = None
        self._activity = 0
        self._reason = 0  # CLOSE reason
        self._peer_closed = False
        self._close = None  # once our CLOSE is sent: [due, rto, deadline]
        self._reply_at = None  # closed: answer a repeated CLOSE then
        self._error = None  # ERROR packet to send (service)

    # -- entry points ----------------------------------------------------------
    def events(self):
        ev = self._ev
        self._ev = []
        return ev

    def send_flight(self, data, now_ms):
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
        self.counters["flights_out"] += 1
        if self._hs_end is None:
            self._hs_end = now_ms + self.config.handshake_timeout_ms

    def start_channel(self, key_block, suite):
        if self.state != "handshake":
            raise UsageError("channel already started or link ended")
        self.channel = Channel(key_block, suite, self.role, self.config.replay_window)
        self.state = "open"
        self._activity = self._now
        if self._tx is None:
            self._hs_end = None
        self._fill()

    def send(self, payload, now_ms):
        self._now = now_ms
        if self.state != "handshake" and self.state != "open":
            raise UsageError("link is closing or closed")
        if self._seq > wire.MAX_SEQ:
            raise SeqExhausted("seq space used up: start a new session")
        cfg = self.config
        if len(self._queue) + len(self._inflight) >= cfg.window + cfg.queue:
            raise QueueFull("message queue full")
        if len(payload) > cfg.mtu - (self.channel.overhead if self.channel else 21):
            raise UsageError("message larger than mtu - DATA overhead")
        seq = self._seq
        self._seq = seq + 1
        self._queue.append((seq, bytes(payload)))
        if seq == wire.MAX_SEQ:
            self._ev.append(("rekey",))
        self._activity = now_ms
        self._fill()
        return seq

    def close(self, reason=0):
        st = self.state
        if st == "handshake" or st == "open":
            self._reason = reason
            if self.channel is None:
                self._stop("closed", reason)
            else:
                self.state = "closing"

    def abort(self, reason):
        if self._odd:
            raise UsageError("only the service sends ERROR")
        self._error = wire.encode(_ERROR, self.session_id, bytes((reason,)))
        self._stop("failed", wire.ERROR_NAMES.get(reason, "error_%d" % reason))

    def unacked(self):
        out = [self.channel.open(wire.decode(e[1]), True) for e in self._inflight]
        for e in self._queue:
            out.append(e[1])
        return out

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
            if st == "failed" or (st == "closed" and t != _CLOSE):
                raise wire.Drop("closed")
            sid = self.session_id
            learn = False
            if psid != sid:
                if self._odd:  # client: adopt the service's sid from its first packets
                    if sid or (t > _HS_ACK and t != _ERROR):
                        raise wire.Drop("unknown_session")
                    learn = t != _ERROR
                elif psid or t > _HS_END or p[2]:  # service: sid 0 only on flight 0
                    raise wire.Drop("unknown_session")
            elif not sid and t != _ERROR:
                raise wire.Drop("unknown_session")  # §1: the service never uses sid 0
            n = len(self._ev)
            if t <= _HS_END:
                self._fragment(p)
            elif t == _HS_ACK:
                self._hs_acked(p[2], p[4])
            elif t == _ERROR:
                if not self._odd:
                    raise wire.Drop("bad_type")  # §1: ERROR is service -> device
                self._stop("failed", wire.ERROR_NAMES.get(p[2], "error_%d" % p[2]))
            else:
                self._sealed_in(p)
            if learn:  # the packet was good: adopt its sid, reported first
                self.session_id = psid
                self._ev.insert(n, ("session_id", psid))
        except wire.Drop as e:
            self.drops[e.reason] += 1
        except AuthError:
            self.drops["auth"] += 1

    # -- handshake in ----------------------------------------------------------
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
        if t == _HS_END:
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
                self._ack_hs(f, _FAR if t == _HS_END else self._last_rep)
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

    # -- channel in ------------------------------------------------------------
    def _sealed_in(self, p):
        ch = self.channel
        if ch is None:
            raise wire.Drop("no_channel")
        t, _, seq, b, _ = p
        now = self._now
        try:
            pt = ch.open(p)
        except wire.Drop:  # replayed DATA: repeat our ACK (rate-limited)
            if self._ack_at is None:
                self._ack_at = max(now, self._last_rep + self.config.rto_ms // 4)
            raise
        self._tx_acked()  # authenticated: the peer has finished TLS
        if t == _DATA:
            held = self._held
            nxt = self._rx_next
            if seq < nxt or seq in held:  # (the window already said so)
                raise wire.Drop("replay")
            if seq == nxt:
                ch.accept(seq)
                while True:
                    self.counters["messages_in"] += 1
                    self._ev.append(("message", pt))
                    nxt += 1
                    if nxt not in held:
                        break
                    pt = held.pop(nxt)
                self._rx_next = nxt
                self._activity = now
            else:
                if seq - nxt > _SPAN or len(held) >= self.config.reorder:
                    raise wire.Drop("reorder_full")  # not acknowledged: it comes again
                ch.accept(seq)
                held[seq] = pt
            self._ack_at = now
        elif t == _ACK:
            nxt = b >> 32
            b &= 0xFFFFFFFF
            m = self._sealed - 1 - nxt  # how many seqs after next were sent
            if nxt > self._sealed or (m < _SPAN and b & ((1 << (_SPAN - m)) - 1)):
                raise wire.Drop("bad_ack")  # acknowledges something never sent
            keep = []
            for e in self._inflight:
                s = e[0]
                if s < nxt:
                    self.counters["messages_out"] += 1
                    self._ev.append(("delivered", s))
                else:
                    if s > nxt and s - nxt <= _SPAN and (b >> (_SPAN - s + nxt)) & 1:
                        e[4] = _SACKED
                    keep.append(e)
            if len(keep) < len(self._inflight):  # progress: restart the backoff
                rto = self.config.rto_ms
                for e in keep:
                    e[3] = rto
                    if e[2] > now + rto:
                        e[2] = now + rto
                self._inflight = keep
                self._progress = now
                self._fill()
        elif self.state == "closed":  # CLOSE again: our answer was lost
            if self._reply_at is None:
                self._reply_at = max(now, self._last_rep + self.config.rto_ms // 4)
        else:
            self._peer_closed = True
            if self.state == "open":
                self._reason = b
                self.state = "closing"
            elif self._close:
                self._stop("closed", self._reason)

    # -- out -------------------------------------------------------------------
    def _fill(self):
        ch = self.channel
        if ch is None or (self.state != "open" and self.state != "closing"):
            return
        q = self._queue
        inflight = self._inflight
        while q and len(inflight) < self.config.window:
            seq, pt = q.pop(0)
            if not inflight:
                self._progress = self._now
            inflight.append(
                [seq, ch.seal(_DATA, self.session_id, seq, 0, pt), self._now, self.config.rto_ms, 0]
            )
            self._sealed = seq + 1

    def datagrams(self, now_ms):
        self._now = now = now_ms
        cfg = self.config
        st = self.state
        out = []
        if st != "failed" and st != "closed":  # timers
            if self._hs_end is not None and now >= self._hs_end:
                self._stop("failed", "handshake_timeout")
            elif self._inflight and now >= self._progress + cfg.peer_timeout_ms:
                self._stop("failed", "peer_timeout")
            elif self._close and now >= self._close[2]:
                self._stop("closed", self._reason)
            elif (
                st == "open"
                and cfg.idle_timeout_ms is not None
                and now >= self._activity + cfg.idle_timeout_ms
            ):
                self.close(2)  # §5 reason 2: idle
            st = self.state
        if self._error:
            out.append(self._error)
            self._error = None
        sid = self.session_id
        ch = self.channel
        if st == "closed":
            if self._reply_at is not None and now >= self._reply_at:
                self._reply_at = None
                if ch.close_seq <= wire.MAX_COUNTER:
                    out.append(ch.seal(_CLOSE, sid, self._reason))
                    self._last_rep = now
        elif st != "failed":
            f = self._hs_ack
            if f >= 0 and now >= self._hs_ack_at:  # HS_ACK (partial for the current flight)
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
                    out.append(wire.encode(_HS_ACK, sid, bytes((f,)) + bm))
            tx = self._tx
            if tx is not None and (tx[3] is None or now >= tx[3]):
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
            if ch:
                self._channel_out(now, out)
        c = self.counters
        for d in out:
            c["packets_out"] += 1
            c["bytes_out"] += len(d)
        return out

    def _channel_out(self, now, out):
        ch = self.channel
        sid = self.session_id
        cfg = self.config
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            if ch.ack_seq <= wire.MAX_COUNTER:
                bm = 0
                nxt = self._rx_next
                for s in self._held:
                    bm |= 1 << (_SPAN - s + nxt)
                out.append(ch.seal(_ACK, sid, nxt, bm))
                self._last_rep = now
                if ch.ack_seq > wire.MAX_COUNTER:  # that was the last ACK nonce
                    self._ev.append(("rekey",))
        for e in self._inflight:
            if e[4] != _SACKED and now >= e[2]:
                out.append(e[1])
                if e[4] == _SENT:
                    self.counters["retransmissions"] += 1
                    e[3] = min(e[3] * 2, cfg.rto_max_ms)
                e[4] = _SENT
                e[2] = now + e[3]
        cl = self._close
        if (
            self.state == "closing"
            and not self._inflight
            and not self._queue
            and (cl is None or now >= cl[0])
        ):
            if ch.close_seq <= wire.MAX_COUNTER:
                out.append(ch.seal(_CLOSE, sid, self._reason))
            if cl is None:
                cl = self._close = [0, cfg.rto_ms, now + cfg.handshake_timeout_ms]
            else:
                self.counters["retransmissions"] += 1
                cl[1] = min(cl[1] * 2, cfg.rto_max_ms)
            cl[0] = now + cl[1]
            if self._peer_closed:
                self._stop("closed", self._reason)

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
        inflight = self._inflight
        for e in inflight:
            if e[4] != _SACKED:
                ts.append(e[2])
        if inflight:
            ts.append(self._progress + self.config.peer_timeout_ms)
        idle = self.config.idle_timeout_ms
        if idle is not None and st == "open":
            ts.append(self._activity + idle)
        if st == "closing" and not inflight and not self._queue:
            cl = self._close
            ts.append(min(cl[0], cl[2]) if cl else now)
        t = None
        for x in ts:
            if x is not None and (t is None or x < t):
                t = x
        return t

    def _stop(self, state, reason):
        self.state = state
        self._hs_end = self._ack_at = self._tx = None
        self._ev.append(("error" if state == "failed" else "closed", reason))
