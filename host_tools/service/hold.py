"""Acknowledge a device message only once the application has it safe.

An application with `hold_acks = True` (the MQTT bridge) returns from
on_message(session, payload) None (nothing to wait for) or an awaitable that
completes when the message is safe (the broker's PUBACK).  The session's
link then acknowledges messages in order, each once its awaitable and every
earlier one are done (atls.link: hold_acks() / release(n, now_ms)).  An
awaitable that fails or is cancelled ends the session: the device did not
get the ACK, so it sends the message again in its next session.
"""

import asyncio

__all__ = ["hold_ack", "release"]


def hold_ack(service, sess, r):
    """Register what on_message returned (None, an awaitable, or the
    exception it raised) for the session's next delivered message."""
    if isinstance(r, BaseException):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(r)
    elif r is None:
        fut = None
    else:
        fut = asyncio.ensure_future(r)
        fut.add_done_callback(lambda _f: release(service, sess))
    sess.held.append(fut)
    release(service, sess)


def release(service, sess):
    """ACK the leading messages whose awaitables are done (in order)."""
    n = 0
    held = sess.held
    while held and (held[0] is None or held[0].done()):
        f = held.popleft()
        if f is not None and (f.cancelled() or f.exception() is not None):
            held.clear()
            return service.end(sess, "application did not take a message")
        n += 1
    if n and service.is_live(sess):
        now = service.now_ms()
        sess.link.release(n, now)
        service.transmit(sess, now)
