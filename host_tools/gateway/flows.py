"""The gateway's flow table: which device gets a flow (and a socket) toward
its service, for how long, and who is evicted under pressure (issue 14).

Invariants:
- A ZigBee flow exists only for a paired device (the bridge checks the
  pairing table); at most `max_devices` of them.  WiFi/UDP sources cannot
  take these slots: the two kinds have separate quotas.
- A UDP source gets a flow only for a plausible first flight: a well-formed
  HS/HS_END fragment (atls.wire.decode) of flight 0 with session id 0
  (docs/PROTOCOL.md §1-2).  Junk, other packet types and non-zero session
  ids from a source without a flow are dropped (`no_flow`) and cost nothing.
- A new UDP flow is *unvalidated* (pending) until the source sends a packet
  carrying the (non-zero) session id of the service's latest packet to it:
  a spoofed source never sees that answer.  Unvalidated flows are bounded
  globally (`max_udp_pending`) and per IP (`max_udp_pending_per_ip`), and
  new ones per IP are rate limited (`new_flows_per_ip_per_s`, burst
  `new_flows_per_ip_burst`, host_tools.ratelimit.TokenBuckets), tested
  before a packet is parsed (`refuses_new`: a flood's usual case costs a
  lookup).  When a
  bound is hit the oldest unvalidated flow of the IP holding the most is
  evicted (so a flooder evicts itself before anyone else); validated flows
  are never evicted.  All UDP flows: at most `max_udp_flows`, at most
  `max_udp_flows_per_ip` per IP.
- Every flow ends after `idle_timeout_s` without a packet either way, an
  unvalidated one `pending_timeout_s` after it was created (retransmitted
  first flights do not extend it).  Closing a flow closes its socket, so
  file descriptors are bounded by the quotas, not by the sources seen.
"""

from collections import OrderedDict

from atls import wire
from host_tools.ratelimit import TokenBuckets

__all__ = ["FLOW_LIMITS", "FlowTable", "plausible_first_flight"]

FLOW_LIMITS = {
    "idle_timeout_s": 120,
    "pending_timeout_s": 30,
    "max_udp_flows": 1000,
    "max_udp_flows_per_ip": 64,
    "max_udp_pending": 256,
    "max_udp_pending_per_ip": 8,
    "new_flows_per_ip_per_s": 5,
    "new_flows_per_ip_burst": 20,
}


def plausible_first_flight(payload):
    """A well-formed HS/HS_END fragment of flight 0 with session id 0."""
    try:
        t, sid, flight, _index, _frag = wire.decode(payload)
    except wire.Drop:
        return False
    return t <= wire.HS_END and sid == 0 and flight == 0


def _ip(key):
    return key[1][0]


class FlowTable:
    """Flows by key (("zb", addr64) or ("udp", (ip, port))) with the quotas
    above.  `admit(key, now)` makes room (evicting) and says whether a new
    flow may be opened; `add` records it; `expired(now)` and `remove` give
    back the flows to close - the caller closes them."""

    def __init__(self, limits):
        self.lim = dict(FLOW_LIMITS, **{k: limits[k] for k in FLOW_LIMITS if k in limits})
        self.max_zb = int(limits["max_devices"])
        self.flows = {}  # key -> flow (flow.born, flow.last: seconds)
        self.pending = OrderedDict()  # unvalidated udp key -> flow, oldest first
        self.pending_ip = {}  # ip -> OrderedDict of its unvalidated keys
        self.udp_ip = {}  # ip -> number of its udp flows
        self.n_udp = 0
        self.new_per_ip = TokenBuckets(
            self.lim["new_flows_per_ip_per_s"],
            self.lim["new_flows_per_ip_burst"],
            4 * (self.lim["max_udp_flows"] + self.lim["max_udp_pending"]) + 1,
        )

    def __len__(self):
        return len(self.flows)

    def get(self, key):
        return self.flows.get(key)

    def refuses_new(self, key, now):
        """True (nothing taken) when admit(key, now) would refuse for the
        per-IP new-flow rate: the cheap test before a packet is parsed."""
        return key[0] == "udp" and self.new_per_ip.empty(_ip(key), now)

    def admit(self, key, now):
        """(ok, evicted flows, drop reason or None) for a new flow `key`."""
        if key[0] == "zb":
            if len(self.flows) - self.n_udp >= self.max_zb:
                return False, [], "too_many_flows"
            return True, [], None
        lim = self.lim
        ip = _ip(key)
        if not self.new_per_ip.allow(ip, now):
            return False, [], "new_flow_rate"
        evicted = []
        mine = self.pending_ip.get(ip)
        if self.udp_ip.get(ip, 0) >= lim["max_udp_flows_per_ip"] and not mine:
            return False, [], "ip_flows"
        if mine and (
            len(mine) >= lim["max_udp_pending_per_ip"]
            or self.udp_ip.get(ip, 0) >= lim["max_udp_flows_per_ip"]
        ):
            evicted.append(self.remove(next(iter(mine))))
        if len(self.pending) >= lim["max_udp_pending"]:
            evicted.append(self.remove(self._heaviest_oldest()))
        if self.n_udp >= lim["max_udp_flows"]:
            if not self.pending:
                return False, evicted, "too_many_flows"
            evicted.append(self.remove(self._heaviest_oldest()))
        return True, evicted, None

    def _heaviest_oldest(self):
        """The oldest unvalidated key of the IP holding the most of them (of
        equals, the first seen).  O(IPs), not O(flows): it runs for every
        new flow under a flood."""
        pip = self.pending_ip
        return next(iter(pip[max(pip, key=lambda ip: len(pip[ip]))]))

    def add(self, key, flow, now):
        flow.born = flow.last = now
        self.flows[key] = flow
        if key[0] == "udp":
            ip = _ip(key)
            self.n_udp += 1
            self.udp_ip[ip] = self.udp_ip.get(ip, 0) + 1
            self.pending[key] = flow
            self.pending_ip.setdefault(ip, OrderedDict())[key] = True

    def validate(self, key):
        """The source answered the service: its flow is no longer evictable."""
        if self.pending.pop(key, None) is not None:
            self._unpend(key)

    def is_pending(self, key):
        return key in self.pending

    def _unpend(self, key):
        d = self.pending_ip[_ip(key)]
        del d[key]
        if not d:
            del self.pending_ip[_ip(key)]

    def remove(self, key):
        """Forget `key`; its flow (to close), or None."""
        flow = self.flows.pop(key, None)
        if flow is None or key[0] != "udp":
            return flow
        if self.pending.pop(key, None) is not None:
            self._unpend(key)
        ip = _ip(key)
        self.n_udp -= 1
        if self.udp_ip[ip] <= 1:
            del self.udp_ip[ip]
        else:
            self.udp_ip[ip] -= 1
        return flow

    def expired(self, now):
        """Remove and return the flows idle past idle_timeout_s and the
        unvalidated ones older than pending_timeout_s."""
        idle = now - self.lim["idle_timeout_s"]
        young = now - self.lim["pending_timeout_s"]
        gone = [k for k, f in self.flows.items() if f.last <= idle]
        for k, f in self.pending.items():
            if f.born > young:
                break  # oldest first: the rest are younger
            if f.last > idle:
                gone.append(k)
        return [self.remove(k) for k in gone]

    def counts(self):
        return {
            "zigbee": len(self.flows) - self.n_udp,
            "udp": self.n_udp,
            "udp_pending": len(self.pending),
            "udp_ips": len(self.udp_ip),
        }
