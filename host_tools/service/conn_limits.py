"""TCP connections of the HTTP binding (issue 14): bounded per client IP and
in all, so that connections nobody uses cannot exhaust the service's file
descriptors.

Requests in progress were already bounded per IP (limits.max_requests_per_ip,
binding_core) but an open connection costs a file descriptor whether or not
it carries a request: 1,000 idle connections from one address held 1,000
descriptors, and enough of them locked everyone out (accept() fails at the
process limit).  Now:

* at most `max_connections_per_ip` connections per client IP: a new one
  beyond that is refused (the IP's own connections are its business; an
  evicted keep-alive connection would only make its client reconnect);
* at most `max_connections` in all: a new one closes the least recently
  active *idle* connection (no request in progress) of the IP holding the
  most, so one IP's idle connections cannot keep another IP out; refused
  only when none is idle;
* an idle connection (no request yet, or none since the last answer) is
  closed after `http_idle_timeout_s` (aiohttp's keep-alive timeout, whose
  default is an hour).

A refused connection is answered, not reset: its first request gets `503`
`busy` with `Retry-After` (binding_core.RETRY_AFTER_S) and `Connection:
close`, and it is closed after REFUSED_S whatever it sends; the project's
HTTP client waits and retries as for any refusal (a reset made clients
reconnect at once, and the reconnections cost more than the requests).  At
most max_connections / 2 refused connections wait for their answer; beyond
that they are closed at once (so descriptors stay under 1.5 x
max_connections).

`ConnTable` is the bookkeeping (no I/O, tested alone); `make_server` gives
the aiohttp low-level `web.Server` that applies it.
"""

from collections import OrderedDict

__all__ = ["ConnTable", "make_server", "REFUSED_S"]

REFUSED_S = 2.0  # a refused connection is closed this long after it was accepted


class ConnTable:
    """Open connections by key (any hashable: the aiohttp handler), each with
    its client IP and requests in progress; least recently active first.
    Refused ones are kept apart (`refused`) until they close."""

    def __init__(self, max_total, max_per_ip):
        self.max_total = int(max_total)
        self.max_per_ip = int(max_per_ip)
        self.conns = OrderedDict()  # key -> [ip, requests in progress]
        self.per_ip = {}
        self.refused = set()  # answered busy, then closed; at most max_total // 2
        self.counters = {"opened": 0, "evicted": 0, "refused": 0, "max_open": 0}

    def __len__(self):
        return len(self.conns)

    def open(self, key, ip):
        """A new connection: (accepted, [keys of idle connections to close]).
        The caller closes those; a refused one is in `refused` (answer it
        busy, then close it) unless max_total // 2 are: close it at once."""
        c = self.counters
        close = []
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return self._refuse(key), close
        if len(self.conns) >= self.max_total:
            victim = self._idle(self._busiest_idle_ip())
            if victim is None:
                return self._refuse(key), close
            close.append(victim)
            self.closed(victim)
            c["evicted"] += 1
        self.conns[key] = [ip, 0]
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        c["opened"] += 1
        c["max_open"] = max(c["max_open"], len(self.conns))
        return True, close

    def _refuse(self, key):
        self.counters["refused"] += 1
        if len(self.refused) < self.max_total // 2:
            self.refused.add(key)
        return False

    def _idle(self, ip):
        """The least recently active idle connection of `ip`, or None."""
        if ip is None:
            return None
        for key, (kip, busy) in self.conns.items():
            if kip == ip and not busy:
                return key
        return None

    def _busiest_idle_ip(self):
        """Of the IPs with an idle connection, the one holding the most."""
        ips = {ip for ip, busy in self.conns.values() if not busy}
        return max(ips, key=self.per_ip.__getitem__) if ips else None

    def busy(self, key):
        """A request starts on `key` (no-op for an unknown key)."""
        rec = self.conns.get(key)
        if rec is not None:
            rec[1] += 1

    def idle(self, key):
        """A request on `key` ended: it is now the most recently active."""
        rec = self.conns.get(key)
        if rec is not None:
            rec[1] = max(0, rec[1] - 1)
            self.conns.move_to_end(key)

    def closed(self, key):
        self.refused.discard(key)
        rec = self.conns.pop(key, None)
        if rec is None:
            return
        left = self.per_ip[rec[0]] - 1
        if left:
            self.per_ip[rec[0]] = left
        else:
            del self.per_ip[rec[0]]


def make_server(handler, table, idle_timeout_s):
    """An aiohttp `web.Server` running `handler(request)` whose connections
    are admitted by `table` (ConnTable, keyed by the aiohttp handler of each
    connection: `request.protocol`); `handler` answers the requests of a
    connection in `table.refused` busy (module doc)."""
    import asyncio

    from aiohttp import web

    class _Server(web.Server):
        def connection_made(self, proto, transport):
            web.Server.connection_made(self, proto, transport)
            peer = transport.get_extra_info("peername")
            ok, close = table.open(proto, peer[0] if peer else "?")
            for other in close:
                other.force_close()
            if not ok:
                if proto in table.refused:
                    asyncio.get_running_loop().call_later(REFUSED_S, proto.force_close)
                else:
                    proto.force_close()

        def connection_lost(self, proto, exc=None):
            table.closed(proto)
            web.Server.connection_lost(self, proto, exc)

    return _Server(handler, access_log=None, keepalive_timeout=idle_timeout_s)
