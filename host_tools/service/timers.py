"""Which sessions the service's timer tick visits (issue 19).

The tick used to run every session's timers every 10 ms: with 10,000
sessions that scan was most of the service's CPU, whatever the traffic.  Now
each session is queued under its next deadline - the earliest of its link's
timers (retransmission, ACK, peer timeout), its handshake deadline and its
idle deadline - whenever the service has worked on it (a datagram, a tick
visit, a new session), and `wake(sess)` queues it for the next tick when
something outside the link changed it (the application queued a message).
A heap with lazy deletion: an entry counts only while it equals the
session's `due`; an entry that fires early just re-queues the session.  A
full sweep every SWEEP_MS remains as a safety net, at a fraction of the old
cost, for a change no path woke.
"""

import heapq

__all__ = ["Timers", "SWEEP_MS"]

SWEEP_MS = 10000


class Timers:
    def __init__(self, service):
        self.heap = []
        self.service = service  # its link_config and limits, read when used
        self.sweep_at = SWEEP_MS

    def schedule(self, sess, now):
        """Queue `sess` under its next deadline (never before now + 1)."""
        t = sess.link.next_timer_ms()
        svc = self.service
        if sess.handshake_ms is None:
            hs = sess.started_ms + svc.link_config.handshake_timeout_ms + 1
            t = hs if t is None or hs < t else t
        idle = sess.last_seen_ms + svc.limits["idle_timeout_s"] * 1000 + 1
        t = idle if t is None or idle < t else t
        self._push(sess, max(t, now + 1))

    def wake(self, sess, now):
        """Visit `sess` at the next tick."""
        self._push(sess, now)

    def _push(self, sess, t):
        due = sess.due
        if due is None or t < due:
            sess.due = t
            heapq.heappush(self.heap, (t, sess.sid))

    def due(self, sessions, now):
        """The sessions to visit now (sessions: sid -> Session): those whose
        deadline passed, or all of them when a sweep is due."""
        heap = self.heap
        if now >= self.sweep_at:
            self.sweep_at = now + SWEEP_MS
            heap.clear()
            out = list(sessions.values())
        else:
            out = []
            while heap and heap[0][0] <= now:
                t, sid = heapq.heappop(heap)
                sess = sessions.get(sid)
                if sess is not None and sess.due == t:
                    out.append(sess)
        for sess in out:
            sess.due = None
        return out
