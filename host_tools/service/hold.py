"""Acknowledge a device message only once the application has it safe.

An application with `hold_acks = True` (the MQTT bridge) returns from
on_message(session, payload) None (nothing to wait for) or an awaitable that
completes when the message is safe (the broker's PUBACK).  The session's
link then acknowledges messages in order, each once its awaitable and every
earlier one are done (atls.link: `ack_to` / release(n, now_ms); the link's
seq 0, the device's HELLO, is never held).  Messages the application does
not see (duplicates, control channel) count as done.  The device's
de-duplication mark (service.dedupe) is raised only then too, so a message
the service took but lost before it was safe (a crash, a failed publish) is
not suppressed when the device sends it again.  An awaitable that fails or
is cancelled ends the session: the device did not get the ACK, so it sends
the message again in its next session.
"""

import asyncio
from collections import deque

__all__ = ["start", "hold_ack", "release"]


def start(sess):
    """Hold the ACKs of a new session's messages (seq 0, the HELLO, is free)."""
    sess.link.ack_to = 1
    sess.held = deque()


def hold_ack(service, sess, r, msg_id):
    """Register what on_message returned (None, an awaitable, or the
    exception it raised) for the session's next delivered message, the
    device's message `msg_id` (None: no mark to raise)."""
    if isinstance(r, BaseException):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(r)
    elif r is None:
        fut = None
    else:
        fut = asyncio.ensure_future(r)
        fut.add_done_callback(lambda _f: release(service, sess))
    sess.held.append((fut, msg_id))
    release(service, sess)


def release(service, sess):
    """ACK the leading messages whose awaitables are done (in order)."""
    n = 0
    held = sess.held
    peers = service.peers
    while held and (held[0][0] is None or held[0][0].done()):
        f, msg_id = held.popleft()
        if f is not None and (f.cancelled() or f.exception() is not None):
            held.clear()
            return service.end(sess, "application did not take a message")
        if msg_id is not None and not peers.duplicate(sess.key, msg_id):
            peers.delivered(sess.key, msg_id)
        n += 1
    if n and service.is_live(sess):
        now = service.now_ms()
        sess.link.release(n, now)
        service.transmit(sess, now)
