"""The link's sealed data path (docs/PROTOCOL.md §3-§5): DATA, ACK and
CLOSE over the export-key channel, as a part of atls.link.Link.

Messages get seqs at send(); up to `window` are sealed and in flight as
[seq, packet, due, rto, state] (the sealed bytes are all that is kept:
unacked() decrypts them), `queue` more wait as plaintext.  The receiver
delivers in seq order, holds up to `reorder` early ones (within the ACK's
32-seq bitmap) and ACKs with next + bitmap.  Answers that only repeat state
(an ACK after a replayed DATA, a CLOSE after a repeated CLOSE) wait rto_ms/4
after the previous such answer, so replayed packets cannot burn the
counters.  Closing (§5): the closing side sends no new messages, sends CLOSE
once all of its messages are acknowledged and re-sends it on backoff until
the peer's CLOSE arrives.

`Messages` is a mixin of atls.link.Link (one object, so nothing more is
allocated per link): it owns the fields set in _init_messages; bad input
raises wire.Drop or AuthError, which Link.receive counts.  The channel
module (and with it the AEAD) is imported when TLS is done, not before.
"""

from atls import wire
from atls.errors import ATLSError, UsageError
from atls.protocol import ACK, CLOSE, CLOSE_NORMAL, DATA
from atls.wire import ACK_SPAN as _SPAN

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_SENT = const(1)  # in-flight message states (0 = not sent yet)
_SACKED = const(2)


class QueueFull(ATLSError):
    """No room for another message (window + queue are full)."""


class SeqExhausted(QueueFull):
    """Seq 65534 was used: start a new session (the link said rekey)."""


class Messages:
    def _init_messages(self):
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
        self._hold = None  # hold_acks(): seqs below this are acknowledged

    def start_channel(self, key_block, suite):
        """TLS is done: seal and open with the exported key block (§3)."""
        if self.state != "handshake":
            raise UsageError("channel already started or link ended")
        from atls.channel import Channel

        self.channel = Channel(key_block, suite, self.role, self.config.replay_window)
        self.state = "open"
        self._activity = self._now
        if self._tx is None:
            self._hs_end = None
        self._fill()

    def send(self, payload, now_ms):
        """Queue a message; returns its seq.  QueueFull when window and queue
        are full, SeqExhausted once the seq space is used up."""
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

    def close(self, reason=CLOSE_NORMAL):
        """Finish what is in flight, then CLOSE with `reason` (§5)."""
        st = self.state
        if st == "handshake" or st == "open":
            self._reason = reason
            if self.channel is None:
                self._stop("closed", reason)
            else:
                self.state = "closing"

    def hold_acks(self):
        """From now on a delivered message is acknowledged only once release()
        says the application has it safe (e.g. the broker's PUBACK)."""
        self._hold = self._rx_next

    def release(self, n, now_ms):
        """The application has the next n delivered messages safe: ACK them."""
        self._hold = min(self._hold + n, self._rx_next)
        self._ack_at = now_ms

    def unacked(self):
        """The messages not yet acknowledged, in seq order (plaintexts)."""
        out = [self.channel.open(wire.decode(e[1]), True) for e in self._inflight]
        for e in self._queue:
            out.append(e[1])
        return out

    # -- in ----------------------------------------------------------------------
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
        if t == DATA:
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
        elif t == ACK:
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

    # -- out ---------------------------------------------------------------------
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
                [seq, ch.seal(DATA, self.session_id, seq, 0, pt), self._now, self.config.rto_ms, 0]
            )
            self._sealed = seq + 1

    def _close_reply(self, now, out):
        # closed: answer a repeated CLOSE once it is due
        if self._reply_at is not None and now >= self._reply_at:
            self._reply_at = None
            ch = self.channel
            if ch.close_seq <= wire.MAX_COUNTER:
                out.append(ch.seal(CLOSE, self.session_id, self._reason))
                self._last_rep = now

    def _channel_out(self, now, out):
        ch = self.channel
        sid = self.session_id
        cfg = self.config
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            if ch.ack_seq <= wire.MAX_COUNTER:
                bm = 0
                nxt = self._rx_next
                if self._hold is not None and self._hold < nxt:
                    nxt = self._hold  # delivered, not released: no bitmap
                else:
                    for s in self._held:
                        bm |= 1 << (_SPAN - s + nxt)
                out.append(ch.seal(ACK, sid, nxt, bm))
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
                out.append(ch.seal(CLOSE, sid, self._reason))
            if cl is None:
                cl = self._close = [0, cfg.rto_ms, now + cfg.handshake_timeout_ms]
            else:
                self.counters["retransmissions"] += 1
                cl[1] = min(cl[1] * 2, cfg.rto_max_ms)
            cl[0] = now + cl[1]
            if self._peer_closed:
                self._stop("closed", self._reason)

    def _data_timers(self, ts, now, st):
        # the data path's deadlines for Link.next_timer_ms
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
