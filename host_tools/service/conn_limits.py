"""TCP connections of the HTTP binding (issue 14): bounded per client IP and
in all, idle ones closed first, so that keep-alive connections nobody uses
cannot exhaust the service's file descriptors.

Requests in progress were already bounded per IP (limits.max_requests_per_ip,
binding_core) but an open connection costs a file descriptor whether or not
it carries a request: 1,000 idle connections from one address held 1,000
descriptors, and enough of them locked everyone out (accept() fails at the
process limit).  Now:

* at most `max_connections_per_ip` connections per client IP: a new one
  closes that IP's least recently active *idle* connection (no request in
  progress), or is refused if all of them are busy;
* at most `max_connections` in all: a new one closes the least recently
  active idle connection of the IP holding the most, or is refused;
* an idle connection (no request yet, or none since the last answer) is
  closed after `http_idle_timeout_s` (aiohttp's keep-alive timeout, whose
  default is an hour).

A refused connection gets `503` with `Retry-After` and `ATLS-Error: busy`
(binding_core.RETRY_AFTER_S) and is closed; the project's HTTP client waits
and retries as for any refusal.  Evicting the idle rather than refusing the
new keeps the newcomer in: a flood of idle connections evicts itself.

`ConnTable` is the bookkeeping (no I/O, tested alone); `make_server` gives
the aiohttp low-level `web.Server` that applies it.
"""

from collections import OrderedDict

__all__ = ["ConnTable", "make_server", "REFUSAL"]


class ConnTable:
    """Open connections by key (any hashable: the aiohttp handler), each with
    its client IP and requests in progress; least recently active first."""

    def __init__(self, max_total, max_per_ip):
        self.max_total = int(max_total)
        self.max_per_ip = int(max_per_ip)
        self.conns = OrderedDict()  # key -> [ip, requests in progress]
        self.per_ip = {}
        self.counters = {"opened": 0, "evicted": 0, "refused": 0, "max_open": 0}

    def __len__(self):
        return len(self.conns)

    def open(self, key, ip):
        """A new connection: (accepted, [keys of idle connections to close]).
        The caller closes those and, when not accepted, the new one."""
        c = self.counters
        close = []
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            victim = self._idle(ip)
            if victim is None:
                c["refused"] += 1
                return False, close
            close.append(victim)
        elif len(self.conns) >= self.max_total:
            victim = self._idle(self._busiest_idle_ip())
            if victim is None:
                c["refused"] += 1
                return False, close
            close.append(victim)
        for k in close:
            self.closed(k)
            c["evicted"] += 1
        self.conns[key] = [ip, 0]
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        c["opened"] += 1
        c["max_open"] = max(c["max_open"], len(self.conns))
        return True, close

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
        rec = self.conns.pop(key, None)
        if rec is None:
            return
        left = self.per_ip[rec[0]] - 1
        if left:
            self.per_ip[rec[0]] = left
        else:
            del self.per_ip[rec[0]]


REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: %d\r\nATLS-Error: busy\r\nCache-Control: no-store\r\n"
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)


def make_server(handler, table, idle_timeout_s, retry_after_s):
    """An aiohttp `web.Server` running `handler(request)` whose connections
    are admitted by `table` (ConnTable, keyed by the aiohttp handler of each
    connection: `request.protocol`)."""
    from aiohttp import web

    refusal = REFUSAL % retry_after_s

    class _Server(web.Server):
        def connection_made(self, proto, transport):
            web.Server.connection_made(self, proto, transport)
            peer = transport.get_extra_info("peername")
            ok, close = table.open(proto, peer[0] if peer else "?")
            for other in close:
                other.force_close()
            if not ok:
                transport.write(refusal)
                proto.force_close()  # closes once the refusal is written

        def connection_lost(self, proto, exc=None):
            table.closed(proto)
            web.Server.connection_lost(self, proto, exc)

    return _Server(handler, access_log=None, keepalive_timeout=idle_timeout_s)
