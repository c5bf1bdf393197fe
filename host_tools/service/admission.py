"""What the service keeps before a device is known (issue 14): first-flight
reassembly, the checks that gate a new session, and the anti-amplification
budget of an unvalidated address.

* No per-peer state before a complete, parseable ClientHello: a first flight
  in one datagram (HS_END, index 0) is checked and turned into a session at
  once; fragments of a longer first flight wait in `FirstFlights`, a table
  bounded in entries (max_first_flights), per IP (max_first_flights_per_ip)
  and in bytes (the link's max_flight), each entry with a deadline from its
  creation (first_flight_timeout_ms); under pressure the oldest entry goes.
  Only a complete flight that parses as one TLS ClientHello (RFC 8446 §4.1.2
  framing: handshake records, msg_type 1, exact length) starts a session.
* Anti-amplification (RFC 9000 §8.1 applied to the link): until an address
  is validated the service sends it at most `amplification` (3) times the
  bytes it received from it, retransmissions included; what does not fit
  waits in the session (`Budget`).  An address is validated by any packet
  that carries the session id the service chose (an HS_ACK of its flight,
  the device's next flight, a channel packet): the id went only to that
  address.  A big certificate flight therefore goes out once the device has
  seen the flight's last fragment (sent first) and acknowledged it.  Until
  then the service's HS_ACKs are withheld: the device keeps retransmitting
  its ClientHello, which is what raises the budget.
* TLS work is scheduled, not done on arrival (`Intake`): a complete first
  flight waits in a queue fair across source IPs (round robin, at most
  intake_per_ip flights per IP, one per address, intake_max in all, stale
  after intake_max_age_ms), behind a per-IP token bucket
  (first_flights_per_ip_per_s); a full IP queue refuses new flights before
  they are parsed (`refuses`, which also drops a replayed ClientHello
  there).  Packets of existing sessions (second
  flights, acks, channel data) are never queued: they come first.  A
  retransmission keeps a queued flight fresh (and in its place).  The
  address of a device that authenticated (`validated`) is not refused for
  its IP's full queue or rate: behind a gateway, a fleet and the spoofed
  flights the gateway relays share one IP; at such a fleet IP a new
  address whose PSK binder verifies is admitted the same way (`_proven`).
  At a full IP queue such a flight evicts the oldest unproven unknown one;
  known and proven flights are never evicted (the queue grows within
  intake_max instead).  New
  handshakes start in slices of TLS_SLICE_MS when the socket is empty and
  on the timer tick, and use at most handshake_share of the time (a token
  bucket of milliseconds).
* Replayed ClientHellos are refused before TLS work: the client random of
  every flight started in the last REPLAY_WINDOW_MS is kept (at most
  REPLAY_MAX; RFC 8446 §4.1.2: a fresh 32-byte random per ClientHello).
  The same random from another address is a replay (a retransmission comes
  from the same address and goes to its session): without the PSK an
  attacker cannot make a fresh ClientHello with a valid binder, so a
  replay was its only way to cost the service a whole handshake.
* A device that starts again from the same address (its attempt timed out)
  no longer wants the flights of its half-open session: a new complete
  ClientHello from there that the intake queues, and whose binder verifies
  (or cannot be checked), ends that session (`restarts`, `valid`; counted
  `superseded`), which stops retransmitting.  A spoofed one does not.
* While other flights wait, a flight whose PSK binder does not verify (or
  whose identity is unknown) is dropped before TLS work (binder_check: one
  SHA-256 and one HMAC instead of ~0.5 ms in the TLS engine).  Without
  contention OpenSSL answers it as before (alert decrypt_error).

Sans-I/O: the service passes datagrams, addresses and now_ms.
"""

import time
from collections import OrderedDict, deque

from host_tools.ratelimit import TokenBuckets
from host_tools.service.binder_check import BinderCheck

__all__ = ["DEFAULT_LIMITS", "FirstFlights", "Budget", "Intake", "busiest_ip", "client_hello_ok"]

# every limit and its default: docs/SECURITY.md
DEFAULT_LIMITS = {
    "max_half_open": 256,
    "max_half_open_per_ip": 128,
    "idle_timeout_s": 300,
    "rate_per_s": 200,
    "rate_burst": 400,
    "max_sessions": 10000,
    "max_sessions_per_ip": 4096,
    "app_queue": 256,
    "max_first_flights": 256,
    "max_first_flights_per_ip": 32,
    "first_flight_timeout_ms": 5000,
    "amplification": 3,
    "max_pending_polls": 256,
    "max_requests_per_ip": 64,
    "max_connections": 512,
    "max_connections_per_ip": 128,
    "http_idle_timeout_s": 60,
    "registry_check_s": 1,
    "first_flights_per_ip_per_s": 500,
    "first_flights_per_ip_burst": 1000,
    "binder_checks_per_ip_per_s": 5,
    "intake_per_ip": 8,
    "intake_max": 1024,
    "intake_max_age_ms": 2000,
    "handshake_share": 0.8,
}

_MAX_HELD = 64  # datagrams an unvalidated session may hold back
TLS_SLICE_MS = 5  # new handshakes started in one go before the service reads again
REPLAY_WINDOW_MS = 60000  # longer than a handshake may take (the link's 30 s)
REPLAY_MAX = 65536  # client randoms kept (a dict of ints: a few MB)
KNOWN_MS = 3600 * 1000  # an authenticated device's address goes first for an hour
_HS_END = 1  # atls.protocol.HS_END, HS_ACK (local copies for the sort key)
_HS_ACK = 2


def client_hello_ok(flight):
    """True if `flight` is TLS handshake records holding exactly one
    ClientHello (RFC 8446 §5.1, §4.1.2: record framing and lengths only)."""
    body = bytearray()
    pos, n = 0, len(flight)
    while pos < n:
        if pos + 5 > n or flight[pos] != 22 or flight[pos + 1] != 3:
            return False
        rlen = int.from_bytes(flight[pos + 3 : pos + 5], "big")
        if not 1 <= rlen <= 16384 or pos + 5 + rlen > n:
            return False
        body += flight[pos + 5 : pos + 5 + rlen]
        pos += 5 + rlen
    return (
        len(body) >= 4 + 2 + 32 + 1
        and body[0] == 1
        and int.from_bytes(body[1:4], "big") == len(body) - 4
        and body[4] == 3
    )


class FirstFlights:
    """Fragments of incomplete first flights, per source address (see the
    module doc).  add() returns the flight's datagrams (index order) once it
    is complete and a ClientHello, else None; drops go to drop(reason)."""

    def __init__(self, max_entries, max_per_ip, timeout_ms, max_flight, drop):
        self.max_entries = max_entries
        self.max_per_ip = max_per_ip
        self.timeout_ms = timeout_ms
        self.max_flight = max_flight
        self.table = OrderedDict()  # addr -> [created_ms, {index: datagram}, end, size]
        self.per_ip = {}
        self._drop = drop  # drop(reason): the service's drop counter

    def _forget(self, addr):
        if self.table.pop(addr, None) is not None:
            ip = addr[0]
            left = self.per_ip[ip] - 1
            if left:
                self.per_ip[ip] = left
            else:
                del self.per_ip[ip]

    def expire(self, now):
        while self.table:
            addr, entry = next(iter(self.table.items()))
            if now - entry[0] < self.timeout_ms:
                return
            self._forget(addr)
            self._drop("first_flight_timeout")

    def add(self, addr, data, now):
        """`data`: an HS/HS_END datagram of flight 0 (caller checked)."""
        last = (data[0] & 7) == 1  # HS_END
        index = data[4]
        if last and index == 0 and addr not in self.table:
            return self._complete([data])
        self.expire(now)
        entry = self.table.get(addr)
        if entry is None:
            if last or index >= 254:
                self._drop("bad_fragment")
                return None
            self._make_room(addr[0])
            entry = self.table[addr] = [now, {}, -1, 0]
            self.per_ip[addr[0]] = self.per_ip.get(addr[0], 0) + 1
        frags = entry[1]
        frags[index] = bytes(data)
        if last:
            entry[2] = index
        entry[3] = sum(len(d) - 5 for d in frags.values())
        if entry[3] > self.max_flight or len(frags) > 255:
            self._forget(addr)
            self._drop("too_big")
            return None
        end = entry[2]
        if end < 0 or len(frags) < end + 1:
            return None
        self._forget(addr)
        if any(i not in frags for i in range(end + 1)):
            self._drop("bad_fragment")
            return None
        return self._complete([frags[i] for i in range(end + 1)])

    def restarts(self, addr, data, frag0):
        """True if `data` (flight 0, from an address with a half-open session
        that `frag0` began) belongs to a new first flight, not a retransmission
        of that one: fragment 0 with other bytes, or another fragment while a
        new flight from `addr` is being put together here."""
        if data[4] == 0:
            return bytes(data[5:]) != frag0
        return addr in self.table

    def _make_room(self, ip):
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            for addr in self.table:
                if addr[0] == ip:
                    self._forget(addr)
                    self._drop("first_flight_evicted")
                    break
        if len(self.table) >= self.max_entries:
            self._forget(next(iter(self.table)))
            self._drop("first_flight_evicted")

    def _complete(self, datagrams):
        flight = b"".join(bytes(d[5:]) for d in datagrams)
        if not client_hello_ok(flight):
            self._drop("not_client_hello")
            return None
        return datagrams


class Budget:
    """Bytes in/out of one unvalidated address and what waits (module doc)."""

    def __init__(self, factor):
        self.factor = factor
        self.bytes_in = 0
        self.bytes_out = 0
        self.validated = False
        self.held = deque()

    def received(self, n):
        self.bytes_in += n

    def send(self, datagrams, emit):
        """Pass `datagrams` to emit(d) within the budget, hold the rest.
        Unvalidated, whatever fits goes, the last fragment of a flight
        (HS_END) first: a device acknowledges a flight whose end it has seen
        at once, and that HS_ACK validates the address."""
        held = self.held
        held.extend(datagrams)
        if self.validated:
            while held:
                d = held.popleft()
                self.bytes_out += len(d)
                emit(d)
            return
        keep = deque()
        for d in sorted(held, key=lambda d: (d[0] & 7) != _HS_END):
            if (d[0] & 7) == _HS_ACK:
                continue  # would stop the device's retransmissions, our budget
            if self.bytes_out + len(d) <= self.factor * self.bytes_in:
                self.bytes_out += len(d)
                emit(d)
            else:
                keep.append(d)
        while len(keep) > _MAX_HELD:
            keep.popleft()
        self.held = keep

    @property
    def ratio(self):
        return self.bytes_out / self.bytes_in if self.bytes_in else 0.0


def busiest_ip(half_open, per_ip, look=16):
    """Whose half-open session goes when the global cap is reached: of the
    `look` oldest half-open sessions (half_open: sid -> Session, oldest
    first), the IP holding the most half-open sessions (per_ip: ip ->
    [sessions, half-open]); None if there are none.  A flood from a few
    addresses evicts itself, not the one handshake of each honest device."""
    ips = [s.addr[0] for _, s in zip(range(look), half_open.values())]
    return max(ips, key=lambda ip: per_ip[ip][1]) if ips else None


def _flight(packets):
    return b"".join(bytes(d[5:]) for d in packets)


def _random_key(packets):
    """The ClientHello's random (RFC 8446 §4.1.2), hashed: a first flight's
    first datagram holds it after the link header (5), the record header (5),
    the handshake header (4) and legacy_version (2)."""
    return hash(bytes(packets[0][16:48]))


class Intake:
    """Complete first flights waiting for TLS work (module doc): put() when
    one arrives, run() to start some.  drop(reason) counts what is refused."""

    def __init__(self, limits, drop, psks=None):
        lim = limits
        self.binders = BinderCheck(psks) if psks is not None else None
        self.per_ip = lim["intake_per_ip"]
        self.max = lim["intake_max"]
        self.max_age = lim["intake_max_age_ms"]
        self.share = float(lim["handshake_share"])
        self.burst_ms = 50.0
        self.rate = TokenBuckets(
            lim["first_flights_per_ip_per_s"], lim["first_flights_per_ip_burst"], 4 * self.max
        )
        self.ips = OrderedDict()  # ip -> OrderedDict(addr -> (queued_ms, packets)); serve order
        self.n = 0
        self.tokens_ms = self.burst_ms
        self.at_ms = None
        self._drop = drop
        self.randoms = OrderedDict()  # hash(client random) -> (started_ms, addr), oldest first
        self.known = OrderedDict()  # addr -> ms: addresses of devices that authenticated, LRU
        self.proven = set()  # queued addresses whose binder verified at put(): never evicted
        self.known_max = lim["max_sessions"]
        self.fleet_ips = {}  # ip -> its addresses in `known`: a gateway's or a NAT's
        n = lim["binder_checks_per_ip_per_s"]  # binders checked at a full queue, per IP
        self.checks = TokenBuckets(n, 2 * n, 4 * self.max)
        self.checks_fleet = TokenBuckets(  # at a fleet IP: as many as first flights
            lim["first_flights_per_ip_per_s"], lim["first_flights_per_ip_burst"], 4 * self.max
        )

    def __len__(self):
        return self.n

    def validated(self, addr, now):
        """A device authenticated from `addr`: its next first flights are
        never refused for a full IP queue or the IP's rate (a gateway's IP
        carries spoofed first flights and a fleet's alike; RFC 9000 §8.1.3
        does the same with tokens for future connections).  An off-path
        attacker cannot get an address in: it never sees the handshake."""
        k, ips = self.known, self.fleet_ips
        if addr not in k:
            ips[addr[0]] = ips.get(addr[0], 0) + 1
        k[addr] = now
        k.move_to_end(addr)
        while len(k) > self.known_max or now - next(iter(k.values())) > KNOWN_MS:
            ip = k.popitem(last=False)[0][0]
            if ips[ip] > 1:
                ips[ip] -= 1
            else:
                del ips[ip]

    def refuses(self, addr, datagram, now):
        """True (and counted) when a first-flight datagram from `addr` would
        be refused anyway: its IP's queue is full (and the address is not
        known), or it is the first fragment of a replayed ClientHello.
        Cheap: the caller asks before any parsing."""
        ip = addr[0]
        q = self.ips.get(ip)
        if (  # a full queue, unless put() may check the binder (_proven)
            q is not None
            and len(q) >= self.per_ip
            and addr not in q
            and addr not in self.known
            and (self.binders is None or self._checks(ip).empty(ip, now / 1000.0))
        ):
            self._drop("intake_full")
            return True
        if len(datagram) >= 48 and datagram[4] == 0 and self._replayed(addr, (datagram,), now):
            return True
        return False

    def put(self, addr, packets, now):
        """Queue `packets` (a complete first flight) from `addr`; False if
        refused (that IP's rate or full queue)."""
        ip = addr[0]
        q = self.ips.get(ip)
        if q is not None and addr in q:  # a retransmission (or a restart) of a queued flight:
            q[addr] = (now, packets)  # its place in the queue, and the device still waits
            return True
        known = addr in self.known
        if q is not None and len(q) >= self.per_ip and not known:
            if self._replayed(addr, packets, now):
                return False
            if not self._proven(ip, packets, now):
                self._drop("intake_full")
                return False
            known = True
            self.proven.add(addr)
            self._remember(addr, packets, now)
        elif self._replayed(addr, packets, now):
            return False
        if not known and not self.rate.allow(ip, now / 1000.0):
            if not self._proven(ip, packets, now):
                self._drop("first_flight_rate")
                return False
            self.proven.add(addr)
            self._remember(addr, packets, now)
        if q is not None and len(q) >= self.per_ip:  # known or proven: the oldest unknown goes
            old = next((a for a in q if a not in self.known and a not in self.proven), None)
            if old is not None:
                del q[old]
                self.n -= 1
                self._drop("intake_evicted")
            # else every flight queued there is a known or proven device's: the
            # queue grows, within intake_max (behind a gateway a fleet shares the
            # IP; evicting the oldest, the next one served, or a device that had
            # proven its binder starved devices for whole retransmission timeouts)
        if self.n >= self.max:  # full: the IP served next loses its oldest
            self._pop_head(self.ips)
            self._drop("intake_full")
            q = self.ips.get(ip)  # gone if that was its only flight
        if q is None:
            q = self.ips[ip] = OrderedDict()
        q[addr] = (now, packets)
        self.n += 1
        return True

    def valid(self, packets):
        """May this queued first flight end its address's half-open session
        (the device started again: that session's flights are stale)?  Only
        if its PSK binder verifies, or no binder can be checked here
        (certificate mode): a spoofed ClientHello cannot end a handshake."""
        return self.binders is None or self.binders.verdict(_flight(packets)) is not False

    def _checks(self, ip):
        return self.checks_fleet if ip in self.fleet_ips else self.checks

    def _proven(self, ip, packets, now):
        """A first flight refused for its IP's full queue or rate whose PSK
        binder verifies: a device's first handshake from behind a gateway,
        not refused with the spoofed flights the gateway relays.  One HMAC,
        at most binder_checks_per_ip_per_s per IP (first_flights_per_ip_per_s
        at a fleet IP, one with authenticated devices); a replay (valid
        binder) is caught by the replay check."""
        if self.binders is None or not self._checks(ip).allow(ip, now / 1000.0):
            return False
        return self.binders.verdict(_flight(packets)) is True

    def _remember(self, addr, packets, now):
        """Record the flight's client random as started (take) or, for a
        proven flight, as queued: its copies from elsewhere are replays."""
        r = self.randoms
        r[_random_key(packets)] = (now, addr)
        while len(r) > REPLAY_MAX or now - next(iter(r.values()))[0] > REPLAY_WINDOW_MS:
            r.popitem(last=False)

    def _pop_head(self, ips):
        ip, q = next(iter(ips.items()))
        item = q.popitem(last=False)
        self.proven.discard(item[0])
        self.n -= 1
        if q:
            ips.move_to_end(ip)
        else:
            del ips[ip]
        return item

    def take(self, now):
        """(addr, packets) of the next flight, round robin over IPs, or None;
        flights not retransmitted for intake_max_age_ms are dropped (a
        device still waiting would have retransmitted by then)."""
        while self.ips:
            addr, (t, packets) = self._pop_head(self.ips)
            if now - t > self.max_age:
                self._drop("intake_stale")
            elif self.n and self.binders and self.binders.verdict(_flight(packets)) is False:
                self._drop("bad_binder")  # others wait: no TLS work for a wrong binder
            elif not self._replayed(addr, packets, now):
                self._remember(addr, packets, now)
                return addr, packets
        return None

    def _replayed(self, addr, packets, now):
        seen = self.randoms.get(_random_key(packets))
        if seen is None or seen[1] == addr or now - seen[0] > REPLAY_WINDOW_MS:
            return False
        self._drop("client_hello_replay")
        return True

    def run(self, start, now):
        """start(addr, packets, now) for queued flights, fair across IPs, for
        up to TLS_SLICE_MS and within handshake_share of the time."""
        if self.at_ms is not None:
            self.tokens_ms = min(self.burst_ms, self.tokens_ms + (now - self.at_ms) * self.share)
        self.at_ms = now
        clock = time.perf_counter
        end = clock() + TLS_SLICE_MS / 1000.0
        while self.n and self.tokens_ms > 0:
            t0 = clock()
            if t0 >= end:
                return
            item = self.take(now)
            if item is None:
                return
            start(item[0], item[1], now)
            self.tokens_ms -= (clock() - t0) * 1000.0
