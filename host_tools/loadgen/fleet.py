"""Simulated devices over loopback UDP, in one process.

Each device is the firmware's own DeviceSession (atls.session: TLS 1.3
client, link, channel, reconnect policy) with the CPython crypto backend and
one UDP socket of its own: before a handshake the service tells devices
apart by their address only, so devices cannot share one.  Sockets are bound
to spread loopback addresses (127.x.y.z, `per_ip` devices each, like devices
behind a few NATs); RLIMIT_NOFILE's soft limit is raised to the hard one.

One epoll loop: a datagram goes to its device's session at once; a heap of
(deadline, device) runs timers (retransmissions, acks, the send schedule).
Handshakes start at most `concurrency` at a time (a fleet powering up in
waves, not in one instant); a device that sees ERROR(busy) or a failure
retries on its own backoff (DeviceSession).  Once up, a device sends
message n (payload(n): n in 8 hex digits, padded) every `period_ms`, with a
random phase.  Counted: handshakes (per device, so a re-handshake of an
established session shows), acknowledgements, downs and failures.
"""

import gc
import heapq
import random
import resource
import selectors
import socket
import time

from atls.link import LinkConfig, QueueFull
from atls.protocol import TLS_AES_128_CCM_8_SHA256
from atls.session import DeviceSession
from atls.tls.client import ClientConfig

__all__ = ["Fleet", "payload", "raise_fd_limit"]

FREEZE_EVERY = 64


def payload(n, size=16):
    """Message n as the devices send it (the counting app reads n back)."""
    return (b"%08x" % n).ljust(size, b".")


def raise_fd_limit(need):
    """Soft RLIMIT_NOFILE up to the hard limit; RuntimeError if `need` fds
    cannot fit (with the command that raises it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if need > soft:
        raise RuntimeError(
            "%d devices need %d file descriptors, the limit is %d (ulimit -Hn; "
            "raise it with `ulimit -n %d` as root or in /etc/security/limits.conf)"
            % (need - 64, need, soft, need)
        )


class SimDevice:
    __slots__ = ("i", "ident", "sess", "sock", "due", "next_send", "sent", "ups", "watch", "ip")

    def __init__(self, i, ident, sess, sock, ip):
        self.i = i
        self.ident = ident
        self.sess = sess
        self.sock = sock
        self.ip = ip
        self.due = None  # deadline queued in the heap
        self.next_send = None  # when message `sent` goes, once up
        self.sent = 0
        self.ups = 0  # handshakes completed
        self.watch = None  # kill test: (n to be acknowledged, since ms) or None


class Fleet:
    """psks: {identity: key}; target: the service's (host, port)."""

    def __init__(
        self,
        psks,
        target,
        period_ms=5000,
        size=16,
        concurrency=32,
        per_ip=16,
        suite=TLS_AES_128_CCM_8_SHA256,
        link=None,
        seed=1,
    ):
        raise_fd_limit(len(psks) + 64)
        self.target = target
        self.period_ms = period_ms
        self.size = size
        self.concurrency = concurrency
        self.sending = False
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.heap = []
        self.t0 = time.monotonic()
        self.link_config = link or LinkConfig(mtu=1200, rto_ms=1000, rto_max_ms=8000)
        self.devices = []
        self.waiting = []  # devices not started yet (reversed: pop() is the next)
        self.handshaking = 0
        self.counts = {"handshakes": 0, "acks": 0, "downs": 0, "failed": 0, "sent": 0}
        self.counts.update(queue_full=0, datagrams_out=0, datagrams_in=0)
        self.up_at = {}  # device index -> ms of its first up (handshake time)
        self.recovered = []  # kill test: (device index, ms until recovered)
        self.affected = None  # kill test: indices of the devices it hit (None: all)
        for i, (ident, key) in enumerate(sorted(psks.items())):
            cfg = ClientConfig(suites=(suite,), psk=key, psk_identity=ident)
            sess = DeviceSession(cfg, self.link_config, retry_ms=1000, retry_max_ms=8000)
            k = i // per_ip
            ip = "127.%d.%d.%d" % (1 + (k >> 16) % 254, (k >> 8) & 255, 1 + (k & 255) % 254)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((ip, 0))
            except OSError:
                s.close()
                raise
            s.setblocking(False)
            dev = SimDevice(i, ident, sess, s, ip)
            self.devices.append(dev)
            self.sel.register(s, selectors.EVENT_READ, dev)
        self.waiting = self.devices[::-1]
        # DeviceSession collects garbage once a handshake is done (a device's
        # RAM): in one process holding thousands of sessions a full collection
        # each time would dominate, so what exists is frozen out of the
        # collector's view, again every FREEZE_EVERY handshakes
        gc.freeze()

    def now(self):
        return int((time.monotonic() - self.t0) * 1000)

    @property
    def up(self):
        return sum(1 for d in self.devices if d.sess.state == "up")

    # -- the loop ----------------------------------------------------------------
    def run_until(self, cond, timeout_s):
        """Run the loop until cond() is true (checked every ~20 ms) or the
        time is up; returns cond()."""
        end = time.monotonic() + timeout_s
        check = 0.0
        while True:
            t = time.monotonic()
            if t >= check:
                if cond():
                    return True
                check = t + 0.02
            if t >= end:
                return cond()
            self.step(min(0.02, end - t))

    def step(self, wait_s):
        self._start_some()
        now = self.now()
        heap = self.heap
        if heap:
            wait_s = max(0.0, min(wait_s, (heap[0][0] - now) / 1000.0))
        for key, _ in self.sel.select(wait_s):
            dev = key.data
            now = self.now()
            n = 0
            while n < 64:
                try:
                    d = dev.sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP port unreachable (a worker restarting)
                    continue
                n += 1
                dev.sess.receive(d, now)
            self.counts["datagrams_in"] += n
            self._serve(dev, now)
        now = self.now()
        while heap and heap[0][0] <= now:
            t, i = heapq.heappop(heap)
            dev = self.devices[i]
            if dev.due != t:
                continue  # superseded
            dev.due = None
            self._serve(dev, now)

    def _start_some(self):
        now = None
        while self.waiting and self.handshaking < self.concurrency:
            dev = self.waiting.pop()
            now = self.now() if now is None else now
            self.handshaking += 1
            dev.sess.connect(now)
            self._serve(dev, now)

    def _serve(self, dev, now):
        """Send what the device's session has, handle its events, send its
        next message if due, queue its next deadline."""
        sess = dev.sess
        if self.sending and dev.next_send is not None and now >= dev.next_send:
            try:
                sess.send(payload(dev.sent, self.size), now)
                if dev.watch is not None and dev.watch[0] == dev.sent:
                    dev.watch[2] = now  # the first message since the mark leaves
                dev.sent += 1
                self.counts["sent"] += 1
            except QueueFull:
                self.counts["queue_full"] += 1
            dev.next_send = now + self.period_ms
        out = sess.datagrams(now)
        for d in out:
            try:
                dev.sock.sendto(d, self.target)
            except OSError:
                pass
        self.counts["datagrams_out"] += len(out)
        for ev in sess.events():
            kind = ev[0]
            if kind == "delivered":
                self.counts["acks"] += 1
                if dev.watch is not None:
                    self._check_watch(dev, now)
            elif kind == "up":
                dev.ups += 1
                self.counts["handshakes"] += 1
                if dev.ups == 1:
                    self.handshaking -= 1
                    self.up_at[dev.i] = now
                if self.counts["handshakes"] % FREEZE_EVERY == 0:
                    gc.freeze()
                if dev.next_send is None:
                    dev.next_send = now + self.rng.randrange(self.period_ms)
            elif kind == "down":
                self.counts["downs"] += 1
            elif kind == "failed":
                self.counts["failed"] += 1
        t = sess.next_timer_ms()
        if self.sending and dev.next_send is not None and (t is None or dev.next_send < t):
            t = dev.next_send
        if t is not None:
            t = max(t, now + 1)
            if dev.due is None or t < dev.due:
                dev.due = t
                heapq.heappush(self.heap, (t, dev.i))

    # -- traffic -----------------------------------------------------------------
    def start_sending(self):
        """From now on every device that is up sends every period_ms."""
        now = self.now()
        self.sending = True
        for dev in self.devices:
            if dev.next_send is not None:
                dev.next_send = now + self.rng.randrange(self.period_ms)
                self._serve(dev, now)

    def stop_sending(self):
        self.sending = False

    def unacked(self):
        """Messages sent and not acknowledged yet, over the fleet."""
        return sum(len(d.sess.pending()) for d in self.devices)

    def acked_ns(self, dev):
        """The message numbers this device has had acknowledged."""
        pending = {int(p[:8], 16) for p in dev.sess.pending()}
        return [n for n in range(dev.sent) if n not in pending]

    # -- kill test ---------------------------------------------------------------
    def watch_all(self):
        """Mark now: a device has recovered once every message it sent before
        now and its next one are acknowledged; `recovered` gets (device, ms
        since the mark, ms since that next message left)."""
        now = self.now()
        self.recovered = []
        for dev in self.devices:
            dev.watch = [dev.sent, now, None]
        return now

    def _check_watch(self, dev, now):
        n, since, sent_at = dev.watch
        if self._acked_through(dev, n):
            dev.watch = None
            self.recovered.append((dev.i, now - since, now - sent_at))

    def _acked_through(self, dev, n):
        return dev.sent > n and all(int(p[:8], 16) > n for p in dev.sess.pending())

    def close(self):
        for dev in self.devices:
            try:
                self.sel.unregister(dev.sock)
            except (KeyError, ValueError):
                pass
            dev.sock.close()
        self.sel.close()


def spread_ips_ok():
    """True if this machine routes all of 127/8 to the loopback interface
    (Linux does); the fleet binds devices to 127.x.y.z."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.1.0.1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()
