"""Routable session ids, after QUIC-LB (draft-ietf-quic-load-balancers,
"plaintext" server ids; RFC 9000 §5.1 connection ids): the 16-bit session id
of the link header (atls.protocol, unchanged on the wire) carries the id of
the worker that issued it in its top `server_bits` bits, the rest is random:

    sid = server_id << (16 - server_bits) | random(16 - server_bits bits)

so any worker (or a balancer that reads the third and fourth byte of a
datagram) can tell from a sid which worker issued it, and two workers never
issue the same sid.  server_bits = 0 (the default, one process) gives the
fully random ids of before.  Session id 0 stays "no session yet" (server 0
never issues it).  Several machines take disjoint server id ranges
(docs/SCALE.md); the ids say nothing secret (as in QUIC-LB's plaintext mode,
an observer learns which worker holds a session, nothing more).
"""

import os

from host_tools.service.errors import ConfigError

__all__ = ["SidSpace", "Taken", "SID_BITS", "from_config"]

SID_BITS = 16  # atls.protocol: bytes 1-2 of the link header
_MAX_SERVER_BITS = 8  # keep >= 256 sids per worker


class SidSpace:
    """The session ids one worker may issue: top `bits` bits = `server_id`."""

    def __init__(self, server_id=0, bits=0):
        if not (isinstance(bits, int) and 0 <= bits <= _MAX_SERVER_BITS):
            raise ConfigError("server_bits must be an integer 0..%d" % _MAX_SERVER_BITS)
        if not (isinstance(server_id, int) and 0 <= server_id < (1 << bits)):
            raise ConfigError(
                "server_id must be 0..%d with server_bits %d" % ((1 << bits) - 1, bits)
            )
        self.server_id = server_id
        self.bits = bits
        self.shift = SID_BITS - bits
        self.prefix = server_id << self.shift
        self.low_mask = (1 << self.shift) - 1

    def server_of(self, sid):
        """The server id that issued `sid` (0 for any sid when bits is 0)."""
        return sid >> self.shift if self.bits else 0

    def mine(self, sid):
        """True when this worker issued (or could have issued) `sid`."""
        return sid != 0 and self.server_of(sid) == self.server_id

    def new(self, taken):
        """A fresh non-zero sid of this worker not in `taken` (a container);
        RuntimeError when every one is taken (max_sessions keeps far below)."""
        n = self.low_mask + 1
        start = self._start()
        for i in range(n):  # random start, then linear: bounded even when nearly full
            sid = self.prefix | ((start + i) & self.low_mask)
            if sid and sid not in taken:
                return sid
        raise RuntimeError("no free session id for server %d" % self.server_id)

    def _start(self):
        return int.from_bytes(os.urandom(2), "big") & self.low_mask

    def capacity(self):
        """How many sids this worker can hold at once."""
        return self.low_mask + (1 if self.prefix else 0)  # sid 0 is never issued

    def describe(self):
        return {"server_id": self.server_id, "server_bits": self.bits}


class Taken:
    """The ids a worker must not issue: those it holds (`local`, a dict) and
    those `elsewhere(sid)` says are live in the shared store - a restarted
    worker's sessions of its previous run, now held by other workers."""

    def __init__(self, local, elsewhere):
        self.local = local
        self.elsewhere = elsewhere

    def __contains__(self, sid):
        return sid in self.local or self.elsewhere(sid)


def from_config(routing, worker_index=0, workers=1):
    """The SidSpace of worker `worker_index` of `workers` from service.json's
    "routing" object ({"server_id": first id of this machine, "server_bits":
    B}; absent: one process, B = 0 unless several workers need ids, then the
    fewest bits that give each its own).  Worker i gets server_id + i."""
    routing = routing or {}
    if not isinstance(routing, dict) or set(routing) - {"server_id", "server_bits"}:
        raise ConfigError('routing: only "server_id" and "server_bits"')
    bits = routing.get("server_bits")
    if bits is None:
        bits = max(0, (workers - 1).bit_length()) if workers > 1 else 0
    first = routing.get("server_id", 0)
    if not isinstance(first, int) or first < 0:
        raise ConfigError("routing.server_id must be a non-negative integer")
    if first + workers > (1 << bits):
        raise ConfigError(
            "routing: server ids %d..%d do not fit in server_bits %d"
            % (first, first + workers - 1, bits)
        )
    return SidSpace(first + worker_index, bits)
