"""What an established session is, as bytes: the codec of the shared state
store (host_tools.service.state_store), so that another worker can continue
the session where this one left it, with no new handshake.

`dump(sess, now, wall)` gives the plaintext record (JSON; the store seals
it), `restore(sess, record, service, now, wall)` puts it back into a Session
(a new one for a session this worker did not hold, or the worker's own, stale
copy, refreshed in place so the application's reference stays valid).
It holds: the export-key channel (key block, suite, replay window top/bits,
ACK/CLOSE counters), the link's handshake tail (so a repeated final flight is
acknowledged again), sequence numbers, the sealed in-flight messages and the
queued ones (both ways: early arrivals held for reordering too), the close
state, id bases and HELLOs, the device identity, credential, granted
channels, and the application backlog.  Timers travel as wall-clock
milliseconds (`wall` - `now` is the worker's offset), so each worker's own
monotonic clock is never compared with another's.

This module is the one place that knows the fields of atls.link.Link and
atls.channel.Channel beyond their public API (LINK_FIELDS lists them);
tests/test_state_store.py fails when the Link gains a field this codec does
not place.  Not carried: on_delivered callbacks and hold_acks awaitables
(they live in the worker that made them), link counters (each worker counts
its own), undelivered link events (a message reaches the application only in
the worker that committed its acceptance).
"""

import json
from base64 import b64decode, b64encode
from collections import deque

from atls import protocol, wire
from atls.channel import Channel
from atls.link import Link
from host_tools.service.tls_engine import SUITES

__all__ = [
    "dump",
    "restore",
    "fingerprint",
    "limits",
    "withhold",
    "covered",
    "answer_due",
    "rewind_unreleased",
    "unreleased",
    "next_seq",
    "LINK_FIELDS",
    "FORMAT",
    "RESERVE",
]

FORMAT = 1  # bump when the record changes; a worker refuses records of another format
# ACK and CLOSE counters (nonces, docs/PROTOCOL.md §3) a record reserves for the
# worker that wrote it: a worker that loads the record starts this far on, so
# the writer may go on sealing up to this many while it cannot commit
RESERVE = 256

# Link attributes and what the codec does with them: "t" a timer, "v" a value,
# "b" bytes, "q"/"i"/"h"/"x"/"c" the structures below, "-" not carried (why: module doc)
LINK_FIELDS = {
    "state": "v",
    "_hs_end": "t",
    "_tx_f": "v",
    "_tx": "x",
    "_rx_done": "v",
    "_rx_n": "v",
    "_hs_ack": "v",
    "_hs_ack_at": "t",
    "_last_rep": "t",
    "_error": "b",
    "_seq": "v",
    "_sealed": "v",
    "_queue": "q",
    "_inflight": "i",
    "_progress": "t",
    "_rx_next": "v",
    "_held": "h",
    "_ack_at": "t",
    "_activity": "t",
    "_reason": "v",
    "_peer_closed": "v",
    "_close": "c",
    "_reply_at": "t",
    "base": "v",
    "peer_base": "v",
    "confirmed": "v",
    "ack_to": "v",
    # fresh in each worker
    "role": "-",
    "_odd": "-",
    "config": "-",
    "session_id": "-",
    "channel": "-",  # its own entry ("ch")
    "drops": "-",
    "counters": "-",
    "_ev": "-",
    "_now": "-",
    "_rx": "-",  # reassembly of a peer flight: only before the channel is up
    "peer_channels": "-",  # device side only
    "reset_token": "-",  # device side only
    "_sent": "-",  # a client's flight 0 before the channel: device side only
    "_refused": "-",  # session ids of discarded server flights: device side only
}


def _b(x):
    return None if x is None else b64encode(x).decode()


def _u(s):
    return None if s is None else b64decode(s)


def _cred(c):
    if isinstance(c, (bytes, bytearray)):
        return ["b", _b(c)]
    if isinstance(c, (tuple, list)):
        return ["l"] + [_cred(x) for x in c]
    return ["v", c]


def _uncred(c):
    if c[0] == "b":
        return _u(c[1])
    if c[0] == "l":
        return tuple(_uncred(x) for x in c[1:])
    return c[1]


def fingerprint(sess):
    """What changes when a DATA or CLOSE nonce is used, a message accepted,
    sent or queued: a changed fingerprint means the record in Redis is
    behind.  Not in it: an acknowledgement received (fewer messages in
    flight: it waits for the next commit; a worker that loads the older
    record repeats a message the device already has, which the device's
    link drops) and the ACKs we seal (their counters come from the reserve
    of the last commit, `covered`)."""
    link = sess.link
    ch = link.channel
    return (
        ch.top,
        ch.bits,
        ch.close_seq,
        link._seq,
        link._sealed,
        link._rx_next,
        len(link._held),
        len(link._queue),
        link.state,
        link._peer_closed,
        link.ack_to,
        len(sess.backlog),
        sess.device_hello,
    )


def limits(sess, committed):
    """(ACK counter, CLOSE counter, DATA seq) from which sealing is not
    covered by what is in Redis: after our own commit, the reserve beyond
    our counters; after a load, the record's own counters (another worker
    may hold the same record)."""
    ch = sess.link.channel
    r = RESERVE if committed else 0
    return (ch.ack_seq + r, ch.close_seq + r, sess.link._sealed)


def covered(sess, lim):
    """True while the ACK counters we used are within the committed reserve
    (lim: limits())."""
    return sess.link.channel.ack_seq <= lim[0]


def withhold(sess, out, lim):
    """`out` without the datagrams that used a nonce at or beyond `lim`
    (limits()): while the state cannot be committed they stay in this
    worker (a DATA message is sent once it is committed; an ACK is sealed
    again when the peer repeats)."""
    ack, close, sealed = lim
    link = sess.link
    ch = link.channel
    late = {id(e[1]) for e in link._inflight if e[0] >= sealed}
    keep = []
    for d in out:
        t = d[0] & 7  # the header's type bits (docs/PROTOCOL.md §1)
        if (t == protocol.ACK and ch.ack_seq > ack) or (
            t == protocol.CLOSE and ch.close_seq > close
        ):
            continue
        if id(d) not in late:
            keep.append(d)
    return keep


def unreleased(sess):
    """hold_acks: how many delivered messages are not yet acknowledged."""
    link = sess.link
    return 0 if link.ack_to is None else max(link._rx_next - link.ack_to, 0)


def rewind_unreleased(sess):
    """hold_acks applications (service.hold): the record's messages that
    were delivered but not yet safe (seqs from link.ack_to on, never
    acknowledged to the device) become new again, so the device's
    retransmissions deliver them to this worker's application.  Returns how
    many.  Used when a worker takes over a session whose previous holder
    cannot finish them (it held the awaitables)."""
    link = sess.link
    to = link.ack_to
    if to is None or to >= link._rx_next:
        return 0
    n = link._rx_next - to
    ch = link.channel
    d = ch.top - (to - 1)  # the window's top moves back to the last safe seq
    ch.bits = (ch.bits >> d) if d <= ch.window else 0
    ch.top = to - 1
    link._rx_next = to
    link._held = {}
    return n


def answer_due(sess):
    """True when the link has an answer to send (an ACK repeated for a
    replayed message): the session is worth keeping for it."""
    return sess.link._ack_at is not None


def next_seq(sess):
    """The seq the session's next message to the device gets."""
    return sess.link._seq


def dump(sess, now, wall):
    """The record of an established session (bytes, JSON)."""
    off = wall - now
    link = sess.link
    ch = link.channel
    rec = {"f": FORMAT}
    lk = {}
    for name, kind in LINK_FIELDS.items():
        v = getattr(link, name)
        if kind == "v":
            lk[name] = v
        elif kind == "t":
            lk[name] = None if v is None else v + off
        elif kind == "b":
            lk[name] = _b(v)
        elif kind == "q":
            lk[name] = [[s, _b(p), c] for s, p, c in v]
        elif kind == "i":
            lk[name] = [[s, _b(p), due + off, rto, st] for s, p, due, rto, st in v]
        elif kind == "h":
            lk[name] = [[s, _b(p), c] for s, (p, c) in v.items()]
        elif kind == "x":
            lk[name] = None if v is None else [_b(v[0]), _b(v[1]), v[2], _t(v[3], off), v[4]]
        elif kind == "c":
            lk[name] = None if v is None else [v[0] + off, v[1], v[2] + off]
    rec["link"] = lk
    top = wire.MAX_COUNTER + 1  # (exhausted)
    ack, close = min(ch.ack_seq + RESERVE, top), min(ch.close_seq + RESERVE, top)
    rec["ch"] = [_b(sess.key_block), sess.suite, ch.top, ch.bits, ack, close]
    rec["sess"] = [
        sess.identity,
        sess.auth,
        _cred(sess.credential),
        sess.started_ms + off,
        sess.last_seen_ms + off,
        sess.handshake_ms,
        [[_b(p), c] for p, c, _cb in sess.backlog],
        sess.last_msg_id,
        sess.granted,
        _b(sess.device_hello),
    ]
    return json.dumps(rec, separators=(",", ":")).encode()


def _t(v, off):
    return None if v is None else v + off


def restore(sess, record, service, now, wall):
    """Put `record` (from dump) into `sess`: a new Link with the record's
    channel and state replaces sess.link.  ValueError for a record of
    another format."""
    rec = json.loads(record)
    if rec.get("f") != FORMAT:
        raise ValueError("state record format %r, this worker reads %d" % (rec.get("f"), FORMAT))
    off = now - wall  # their wall clock -> our monotonic clock
    kb, suite, top, bits, ack_seq, close_seq = rec["ch"]
    cfg = service.link_config
    link = Link("server", cfg, sess.sid)
    link._now = now
    ch = link.channel = Channel(_u(kb), SUITES[suite], "server", cfg.replay_window)
    ch.top, ch.bits, ch.ack_seq, ch.close_seq = top, bits, ack_seq, close_seq
    for name, v in rec["link"].items():
        kind = LINK_FIELDS[name]
        if kind == "t":
            v = _t(v, off)
        elif kind == "b":
            v = _u(v)
        elif kind == "q":
            v = [(s, _u(p), c) for s, p, c in v]
        elif kind == "i":
            v = [[s, _u(p), due + off, rto, st] for s, p, due, rto, st in v]
        elif kind == "h":
            v = {s: (_u(p), c) for s, p, c in v}
        elif kind == "x" and v is not None:
            v = [_u(v[0]), bytearray(_u(v[1])), v[2], _t(v[3], off), v[4]]
        elif kind == "c" and v is not None:
            v = [v[0] + off, v[1], v[2] + off]
        setattr(link, name, v)
    if link._inflight and link._progress is not None:
        # the record's in-flight messages may have been acknowledged since (ACKs
        # are not committed): their age is no peer timeout, which starts again here
        link._progress = max(link._progress, now)
    sess.link = link
    s = rec["sess"]
    sess.identity, sess.auth = s[0], s[1]
    sess.credential = _uncred(s[2])
    sess.started_ms, sess.last_seen_ms, sess.handshake_ms = s[3] + off, s[4] + off, s[5]
    sess.backlog = deque((_u(p), c, None) for p, c in s[6])
    sess.last_msg_id, sess.granted, sess.device_hello = s[7], s[8], _u(s[9])
    sess.key_block = _u(kb)
    sess.suite = suite
    sess.tls = None  # the handshake stays with the worker that ran it
    return sess
