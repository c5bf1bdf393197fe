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

Version 2 (§4): seq 0 of each direction is the sender's HELLO on the
control channel (channel 1): its id base (8 bytes) and, from the service,
granted channels (1) and the session's reset token (16).  A message's id is
base + seq - 1, so ids survive sessions: the unacknowledged messages of a
session are re-sent first, in order, in the next one with base = the id of
the first of them (first_unacked_id), and the receiver's layer above
de-duplicates by id.  Messages on channel 0 go as DATA; other channels as
CDATA whose sealed plaintext starts with the channel number.  Events:
("hello", bytes after the base), ("message", payload, channel, id).

`Messages` is a mixin of atls.link.Link (one object, so nothing more is
allocated per link): it owns the fields set in _init_messages; bad input
raises wire.Drop or AuthError, which Link.receive counts.  The channel
module (and with it the AEAD) is imported when TLS is done, not before.
"""

from atls import wire
from atls.errors import ATLSError, UsageError
from atls.protocol import (
    ACK,
    CDATA,
    CLOSE,
    CLOSE_NORMAL,
    DATA,
    HELLO_LEN,
    RESET,
    RESET_TOKEN_LEN,
)
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
    # Service only (its hold mode): with ack_to set, ACKs cover only
    # seqs below it, messages the application has safe (release() moves it).
    # A class attribute, so a device's links carry nothing for it.
    ack_to = None

    def _init_messages(self):
        self._seq = 1  # next seq to give a message (seq 0: our HELLO, §4)
        self._sealed = 0  # seqs below this have been sealed (sent)
        self._queue = []  # (seq, plaintext, channel) waiting for the window
        self._inflight = []  # [seq, packet, due, rto, state]
        self._progress = None  # when the in-flight messages last moved (None: not sent yet)
        self._rx_next = 0  # every seq below was delivered
        self._held = {}  # seq -> plaintext, early arrivals
        self._ack_at = None
        self._activity = 0
        self._reason = 0  # CLOSE reason
        self._peer_closed = False
        self._close = None  # once our CLOSE is sent: [due, rto, deadline]
        self._reply_at = None  # closed: answer a repeated CLOSE then
        self.base = 0  # id of our message at seq 1 (our HELLO says so)
        self.peer_base = None  # the peer's, from its HELLO
        self.peer_channels = 0  # service HELLO: granted channels (bit n = channel n)
        self.reset_token = None  # service HELLO: the token of a RESET for this session
        self.confirmed = False  # an authenticated packet came from the peer

    def start_channel(self, key_block, suite, base=0, hello=b""):
        """TLS is done: seal and open with the exported key block (§3); our
        HELLO (base || hello) goes first, as seq 0 on the control channel."""
        if self.state != "handshake":
            raise UsageError("channel already started or link ended")
        from atls.channel import Channel

        self.channel = Channel(key_block, suite, self.role, self.config.replay_window)
        self.state = "open"
        self.base = base
        self._activity = self._now
        if self._tx is None:
            self._hs_end = None
        self._queue.insert(0, (0, base.to_bytes(HELLO_LEN, "big") + hello, 1))  # §4
        self._fill()

    def first_unacked_id(self, after=False):
        """The id of our oldest message not yet acknowledged (or of the next
        one): the base of the session that takes over what is left.  With
        after=True: the id the next new message would get."""
        s = self._seq
        q = self._inflight or self._queue
        if q and not after:
            s = q[0][0]
        return self.base + max(s, 1) - 1

    def send(self, payload, now_ms, channel=0):
        """Queue a message on `channel` (0: the application's); returns its
        seq (its id is base + seq - 1).  QueueFull when window and queue are
        full, SeqExhausted once the seq space is used up."""
        self._now = now_ms
        if self.state != "handshake" and self.state != "open":
            raise UsageError("link is closing or closed")
        if self._seq > wire.MAX_SEQ:
            raise SeqExhausted("seq space used up: start a new session")
        cfg = self.config
        if len(self._queue) + len(self._inflight) >= cfg.window + cfg.queue:
            raise QueueFull("message queue full")
        if channel < 0 or channel > 255:
            raise UsageError("channel is one byte")
        over = (self.channel.overhead if self.channel else 20) + (channel > 0)
        if len(payload) > cfg.mtu - over:
            raise UsageError("message larger than mtu - DATA overhead")
        seq = self._seq
        self._seq = seq + 1
        self._queue.append((seq, bytes(payload), channel))
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

    def release(self, n, now_ms):
        """(ack_to set) The application has the next n delivered messages
        safe (n no more than were delivered and not yet released): ACK them."""
        self.ack_to += n
        self._ack_at = now_ms

    def unacked(self, channels=False):
        """The messages not yet acknowledged, in seq order (plaintexts, or
        (plaintext, channel) pairs with channels=True), our HELLO left out."""
        out = []
        for e in self._inflight:
            if e[0]:
                p = wire.decode(e[1])
                pt = self.channel.open((p[0], p[1], e[0], 0, p[4]), True)
                ch = 0
                if p[0] == CDATA:
                    ch = pt[0]
                    pt = pt[1:]
                out.append((pt, ch) if channels else pt)
        for e in self._queue:
            if e[0]:
                out.append((e[1], e[2]) if channels else e[1])
        return out

    # -- in ----------------------------------------------------------------------
    def _sealed_in(self, p):
        ch = self.channel
        if ch is None:
            raise wire.Drop("no_channel")
        t, _, seq, b, body = p
        now = self._now
        data = t == DATA or t == CDATA
        if data:  # §3: the full seq, nearest to the next one we expect
            seq = wire.expand_seq(seq, self._rx_next)
            if seq > wire.MAX_SEQ:
                raise wire.Drop("replay")
            p = (t, p[1], seq, b, body)
        try:
            pt = ch.open(p)
        except wire.Drop:  # replayed DATA: repeat our ACK (rate-limited)
            if self._ack_at is None:
                self._ack_at = max(now, self._last_rep + self.config.rto_ms // 4)
            raise
        self._tx_acked()  # authenticated: the peer has finished TLS
        self.confirmed = True
        if data:
            held = self._held
            nxt = self._rx_next
            if seq < nxt or seq in held:  # (the window already said so)
                raise wire.Drop("replay")
            if t == CDATA:
                if not len(pt):
                    raise wire.Drop("truncated")
                pt = (pt[1:], pt[0])
            else:
                pt = (pt, 0)
            if seq == nxt:
                ch.accept(seq)
                while True:
                    self._message(nxt, pt[0], pt[1])
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
                    if s:  # (seq 0 is our HELLO)
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

    def _message(self, seq, pt, ch):
        # deliver one message in seq order: seq 0 is the peer's HELLO (§4)
        if seq == 0 and ch == 1 and len(pt) >= HELLO_LEN:
            self.peer_base = int.from_bytes(pt[:HELLO_LEN], "big")
            rest = pt[HELLO_LEN:]
            if self._odd and len(rest) > RESET_TOKEN_LEN:  # the service's HELLO
                self.peer_channels = rest[0]
                self.reset_token = bytes(rest[1 : 1 + RESET_TOKEN_LEN])
            self._ev.append(("hello", rest))
            return
        self.counters["messages_in"] += 1
        pb = self.peer_base
        self._ev.append(("message", pt, ch, None if pb is None else pb + seq - 1))

    def _error_in(self, p):
        # §5: what an unauthenticated ERROR may do at the device
        if not self._odd:
            raise wire.Drop("bad_type")  # §1: ERROR is service -> device
        r = p[2]
        if not self.session_id:  # a hint (busy): back off, never fatal
            self.counters["hints"] += 1
            tx = self._tx
            if tx is not None:
                tx[4] = min(tx[4] * 2, self.config.rto_max_ms)
                tx[3] = self._now + tx[4]
            return
        if self.confirmed:  # established: only our RESET token ends it
            tok = self.reset_token
            if r != RESET or tok is None:
                raise wire.Drop("unauthenticated")
            x = 0
            got = p[4]
            for i in range(len(tok)):  # constant time
                x |= tok[i] ^ got[i]
            if x:
                raise wire.Drop("unauthenticated")
        from atls.protocol import ERROR_NAMES

        self._stop("failed", ERROR_NAMES.get(r, "error_%d" % r))

    # -- out ---------------------------------------------------------------------
    def _fill(self):
        ch = self.channel
        if ch is None or (self.state != "open" and self.state != "closing"):
            return
        q = self._queue
        inflight = self._inflight
        while q and len(inflight) < self.config.window:
            seq, pt, c = q.pop(0)
            if not inflight:
                self._progress = None  # starts when it goes out (_channel_out)
            if c:
                pkt = ch.seal(CDATA, self.session_id, seq, 0, bytes((c,)) + pt)
            else:
                pkt = ch.seal(DATA, self.session_id, seq, 0, pt)
            inflight.append([seq, pkt, self._now, self.config.rto_ms, 0])
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
                h = self.ack_to
                if h is not None and h < nxt:
                    nxt = h  # delivered, not yet safe: no bitmap
                else:
                    for s in self._held:
                        bm |= 1 << (_SPAN - s + nxt)
                out.append(ch.seal(ACK, sid, nxt, bm))
                self._last_rep = now
                if ch.ack_seq > wire.MAX_COUNTER:  # that was the last ACK nonce
                    self._ev.append(("rekey",))
        if self._inflight and self._progress is None:
            self._progress = now
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
            ts.append((self._progress or now) + self.config.peer_timeout_ms)
        idle = self.config.idle_timeout_ms
        if idle is not None and st == "open":
            ts.append(self._activity + idle)
        if st == "closing" and not inflight and not self._queue:
            cl = self._close
            ts.append(min(cl[0], cl[2]) if cl else now)
