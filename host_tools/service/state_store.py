"""Established sessions shared by service workers through Redis, sealed.

After a handshake a worker stores the session (host_tools.service.state_codec)
under `<prefix>s:<sid>` as a hash {v: version, b: sealed record}; the record
is AES-256-GCM under the workers' seal key (registry.seal.MasterKey, the
file `redis.seal_key_file`) with the key name as associated data, so Redis
never sees channel keys and a record moved to another session's key does
not open.  Handshakes in flight stay in the worker's memory.

Every change goes through one Lua script, a compare-and-set on the version
(COMMIT): a worker writes version v+1 only if Redis still holds the v its
copy came from.  Two rules make that enough:
  - a message reaches the application only after the state that accepted it
    is committed (`received`, before the service's pump), and
  - a datagram sealed under the session's keys leaves the worker only after
    the state that used its nonce is committed (`sync`, in transmit).
So of two workers holding the same session, only one can commit the
acceptance of a message or the use of a nonce; the other's COMMIT fails, it
throws away what it computed (nothing of it left the process), reloads the
record the script returned, feeds the same packets again (now replays) and
re-queues the messages its application sent meanwhile (`sess.journal`).
Round trips: one COMMIT for a packet that delivers messages, one more when
the answer (ACK, reply) changes the state again; none when nothing changed
(a retransmission is preceded by a version check, HGET: a stale copy must
not repeat what another worker has moved past).  A worker that gets a packet
for a session id it does not hold loads it (HMGET, `adopt`) and carries on.

Redis unavailable (any error; retried every `retry_ms`): established
sessions the worker holds go on in its memory (their state is committed when
Redis is back, if no other worker changed it meanwhile), new sessions are
refused (`admit` False: ERROR(busy) before any TLS work; a handshake
finishing meanwhile fails with handshake_failures["state_store_unavailable"]),
metrics say `redis_up` 0, and the log has state_store_down/up.

For whoever runs workers: `from_config(cfg, base)` (service.json "redis")
or StateStore(redis.Redis, registry.seal.MasterKey); `.attach(service)`
sets `service.store` and adds the state counters (service.counters); `.up`
says whether Redis answers; `.flush(service)` commits every session that is
behind (call it before a worker stops).  Lookups of session ids the worker
does not hold are capped at `lookups_per_s`; an id found nowhere is not
looked up again for a second.
"""

import time
from collections import deque

import redis

from host_tools.common import log
from host_tools.registry.seal import MasterKey, SealError
from host_tools.service import state_codec
from host_tools.service.counters import STATE_COUNTERS
from host_tools.service.errors import ConfigError
from host_tools.service.sessions import Session

__all__ = ["StateStore", "from_config"]

# v = version in Redis (0: none); ARGV: expected version, record, TTL ms.
# {1, v+1} stored; {0, v, record} someone else's newer state; {-1} gone.
_COMMIT = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  if v == 0 then return {-1} end
  return {0, v, redis.call('HGET', KEYS[1], 'b')}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, v + 1}
"""
# delete only the version this worker holds: 1 deleted, 0 moved on, -1 gone
_DELETE = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v == 0 then return -1 end
if v == tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CONFIG_KEYS = {"url", "key_prefix", "idle_ttl_s", "seal_key_file", "retry_ms", "timeout_ms"}
_MISS_MS = 1000  # a session id found nowhere is not looked up again this long
_MAX_TRIES = 4
# packets for session ids this worker does not hold are looked up in Redis at most
# this often: a worker taking over a lost one's sessions needs a few thousand; a
# flood of made-up ids must not turn into as many Redis calls
_LOOKUPS_PER_S = 5000


class Shared:
    """A stored session's bookkeeping in this worker (Session.shared)."""

    __slots__ = ("version", "fp", "lim", "journal", "rt", "bad", "adopted", "forgotten")

    def __init__(self, version):
        self.version = version  # of the record our copy is (0: not written yet)
        self.fp = None  # state_codec.fingerprint at that version
        self.lim = None  # state_codec.limits: nonces covered by the record
        self.journal = []  # what the application sent since (replayed after a reload)
        self.rt = 0  # retransmissions counted when the version was last checked
        self.bad = 0  # the link's bad_ack drops already looked into
        self.adopted = False  # just loaded for a packet: kept if the packet was good
        self.forgotten = False  # dropped here: another worker has it, or nobody


class StateStore:
    """The shared session table (module doc).  `client`: a redis.Redis."""

    def __init__(self, client, seal_key, key_prefix="atls:", idle_ttl_s=600, retry_ms=1000):
        self.r = client
        self.seal = seal_key
        self.prefix = key_prefix
        self.ttl_ms = int(idle_ttl_s * 1000)
        self.retry_ms = retry_ms
        self._commit = client.register_script(_COMMIT)
        self._delete = client.register_script(_DELETE)
        self.up = True
        self._retry_at = 0
        self._misses = {}  # sid -> until (ms)
        self._window_end = self._lookups = 0
        self.lookups_per_s = _LOOKUPS_PER_S
        self.counters = None

    def attach(self, service):
        """Become `service`'s store (its counters get ours)."""
        service.store = self
        c = self.counters = service.counters
        for name in STATE_COUNTERS:
            c[name] = 0
        c["redis_up"] = 1

    # -- hooks of core.Service ------------------------------------------------
    def admit(self):
        """False while Redis is unavailable: no new session."""
        if not self.up:
            self.counters["state_refused"] += 1
        return self.up

    def create(self, sess, now):
        """Store a session whose channel just started (version 1): None, or
        why it cannot be stored ("state_store_unavailable", or "sid_in_use":
        another session has this id in Redis)."""
        sess.key_block = sess.tls.export()
        sess.shared = Shared(0)
        r = self._cas(sess, now)
        if r is not None and r[0] == 1:
            return None
        sess.shared = None
        return "state_store_unavailable" if r is None else "sid_in_use"

    def exists(self, sid):
        """True when Redis holds session `sid`: a worker restarted with the
        same server id must not issue an id of its previous run that another
        worker now holds (service.routing.Taken).  False when Redis cannot
        say (create() then refuses the session cleanly)."""
        try:
            return bool(self.r.exists(self._key(sid)))
        except redis.RedisError:
            return False

    def adopt(self, service, sid, addr, now):
        """The session `sid` from Redis, entered in the service's tables for
        a packet from `addr`; None when Redis has no such session."""
        if not self.up or self._misses.get(sid, -1) > now:
            return None
        if now >= self._window_end:  # lookups per second, whoever asks (hostile input)
            self._window_end, self._lookups = now + 1000, 0
        self._lookups += 1
        if self._lookups > self.lookups_per_s:
            self.counters["state_lookups_refused"] += 1
            return None
        try:
            v, blob = self.r.hmget(self._key(sid), "v", "b")
        except redis.RedisError as e:
            return self._failed(e, now)
        if v is None:
            if len(self._misses) > 4096:
                self._misses.clear()
            self._misses[sid] = now + _MISS_MS
            self.counters["state_load_misses"] += 1
            return None
        sess = Session(service, sid, addr, None, None, now)
        if not self._restore(service, sess, int(v), blob, now):
            return None
        sess.shared.adopted = sess.loaded = True
        sess.link.confirmed = False  # set again by the first authenticated packet
        service.sessions[sid] = sess
        service.per_ip.setdefault(addr[0], [0, 0])[0] += 1
        self.counters["sessions_active"] = len(service.sessions)
        self.counters["state_loads"] += 1
        log("state_loaded", sid=sid, identity=sess.identity, version=sess.shared.version)
        return sess

    def received(self, service, sess, packets, now):
        """After the link took `packets`: commit before the application sees
        any message they carried.  A session adopted for packets that changed
        nothing and need no answer is forgotten again."""
        sh = sess.shared
        if sh is None:
            return
        if sess.loaded:  # its address is on trial until an authenticated packet came
            sess.budget.validated = sess.link.confirmed  # (until then: 3x its bytes back)
        if sh.adopted:
            sh.adopted = False
            if not sess.link.confirmed and not state_codec.answer_due(sess):
                return self._forget(service, sess, "nothing accepted")
            try:  # the session is up at this worker now (session.loaded: no handshake here)
                service.app.on_connect(sess)
            except Exception as e:
                log("app_error", sid=sess.sid, error=repr(e))
        bad = sess.link.drops.get("bad_ack", 0)
        if bad != sh.bad or state_codec.fingerprint(sess) != sh.fp:
            # bad_ack: the device acknowledged what our copy never sent - another
            # worker sent it, our copy is stale; the COMMIT's conflict reloads the
            # newer record and feeds the packets again (else that worker's copy
            # never sees its ACKs, times out and deletes the record: issue 19)
            self._sync(service, sess, now, packets)
            if sess.shared is not None:
                sess.shared.bad = sess.link.drops.get("bad_ack", 0)

    def sync(self, service, sess, out, now):
        """Before `out` (the link's datagrams) leaves: commit what they used.
        Returns what may be sent: recomputed after a reload; while nothing
        can be committed, without what used an uncommitted nonce."""
        sh = sess.shared
        if sh is None:
            return out
        if sh.forgotten:
            return []  # another worker has it (or nobody): nothing goes from here
        if not out and not sh.journal:
            return out  # nothing leaves, nothing new to keep: timers alone are not committed
        for _ in range(_MAX_TRIES):
            link = sess.link
            sh = sess.shared
            fp = state_codec.fingerprint(sess)
            if fp == sh.fp and not sh.journal and state_codec.covered(sess, sh.lim):
                if not self._moved_on(service, sess, out, now):
                    return out
            elif self._sync(service, sess, now) and sess.link is link:
                return out
            elif sess.link is link and service.is_live(sess):  # not stored: Redis is down
                self.counters["state_withheld"] += 1
                return state_codec.withhold(sess, out, sh.lim)
            if not service.is_live(sess):
                return []
            out = sess.link.datagrams(now)  # what the newer state sends
        return []

    def _moved_on(self, service, sess, out, now):
        """Before repeating (retransmissions): True when another worker has
        moved the session on (our copy is reloaded, or forgotten if gone)."""
        sh = sess.shared
        rt = sess.link.counters["retransmissions"]
        if not out or rt == sh.rt or not self.up:
            return False
        sh.rt = rt
        try:
            v, blob = self.r.hmget(self._key(sess.sid), "v", "b")
        except redis.RedisError as e:
            self._failed(e, now)
            return False  # (what we repeat was committed)
        if v is None:
            self._lost(service, sess)
            return True
        if int(v) == sh.version:
            return False
        self._restore(service, sess, int(v), blob, now)
        return True

    def ended(self, service, sess):
        """The service is ending `sess`: delete its record if it is still
        ours and say True; False when another worker has moved it on (then
        it is only forgotten here, and the service must not end it)."""
        sh = sess.shared
        if sh is None or sh.forgotten or not self.up:
            return True
        try:
            r = self._delete(keys=[self._key(sess.sid)], args=[sh.version])
        except redis.RedisError as e:
            self._failed(e, service.now_ms())
            r = 1
        if r == 0:
            self._forget(service, sess, "moved on elsewhere")
            return False
        sess.shared = None
        return True

    def flush(self, service):
        """Commit every session whose record is behind this worker's copy,
        acknowledgements included (graceful shutdown: the other workers go
        on from there).  Returns how many were written."""
        now = service.now_ms()
        n = 0
        for sess in list(service.sessions.values()):
            if sess.shared is not None and self.up:
                n += self._sync(service, sess, now, recreate=True)
        return n

    def tick(self, service, now):
        """Retry an unavailable Redis; once back, commit what waited."""
        if self.up or now < self._retry_at:
            return
        try:
            self.r.ping()
        except redis.RedisError:
            self._retry_at = now + self.retry_ms
            return
        self.up = True
        self.counters["redis_up"] = 1
        log("state_store_up")
        for sess in list(service.sessions.values()):
            sh = sess.shared
            if sh is not None and state_codec.fingerprint(sess) != sh.fp:
                self._sync(service, sess, now, recreate=True)

    # -- inside ---------------------------------------------------------------
    def _key(self, sid):
        return "%ss:%d" % (self.prefix, sid)

    def _failed(self, e, now):
        self.counters["state_errors"] += 1
        if self.up:
            self.up = False
            self.counters["redis_up"] = 0
            log("state_store_down", error=type(e).__name__)
        self._retry_at = now + self.retry_ms
        return None

    def _cas(self, sess, now):
        """One COMMIT of sess (expected: sess.shared.version); the script's
        answer, or None when Redis is unavailable."""
        rec = state_codec.dump(sess, now, int(time.time() * 1000))
        key = self._key(sess.sid)
        blob = self.seal.seal(key, rec)
        try:
            r = self._commit(keys=[key], args=[sess.shared.version, blob, self.ttl_ms])
        except redis.RedisError as e:
            return self._failed(e, now)
        if r[0] == 1:
            sh = sess.shared
            sh.version = int(r[1])
            sh.fp = state_codec.fingerprint(sess)
            sh.journal = []
            sh.rt = sess.link.counters["retransmissions"]
            sh.lim = state_codec.limits(sess, True)
            self.counters["state_commits"] += 1
        return r

    def _sync(self, service, sess, now, packets=(), recreate=False):
        """Commit sess; on a conflict reload the newer state, feed `packets`
        and the journal again, and retry.  False when it was not stored
        (Redis down: the session goes on in memory; or it is gone).
        recreate: a record that is gone is written again (Redis came back
        without it: it restarted empty)."""
        if not self.up:
            return False
        for _ in range(_MAX_TRIES):
            r = self._cas(sess, now)
            if r is None:
                return False
            if r[0] == 1:
                return True
            if r[0] == -1:
                if recreate:
                    sess.shared.version = 0
                    continue
                self._lost(service, sess)
                return False
            self.counters["state_conflicts"] += 1
            journal = sess.shared.journal
            if not self._restore(service, sess, int(r[1]), r[2], now):
                return False
            for d in packets:
                sess.link.receive(d, now)
            for p, ch, cb in journal:  # what our application sent meanwhile
                sess.backlog.append((p, ch, cb))
            sess.shared.journal = list(journal)
            sess.flush(now)
        # still contended: what the link accepted was never committed, so it must not
        # reach the application from here (it would, after a returned False, as if
        # Redis were down): forget this copy; the device's retransmission goes on
        # wherever the record is current
        log("state_contended", sid=sess.sid)
        self.counters["state_contended"] += 1
        self._forget(service, sess, "contended")
        return False

    def _restore(self, service, sess, version, blob, now):
        key = self._key(sess.sid)
        try:
            rec = self.seal.open(key, blob)
            state_codec.restore(sess, rec, service, now, int(time.time() * 1000))
        except (SealError, ValueError, KeyError, TypeError) as e:
            log("state_unreadable", sid=sess.sid, error=type(e).__name__)
            if service.is_live(sess):
                self._forget(service, sess, "unreadable state")
            return False
        if getattr(service.app, "hold_acks", False):
            # held: one entry per delivered, unreleased message (hold.py)
            if sess.held is None or len(sess.held) != state_codec.unreleased(sess):
                sess.held = deque()
                if not service.is_live(sess):  # taking it over: deliver those again
                    self.counters["state_redelivered"] += state_codec.rewind_unreleased(sess)
        sh = sess.shared = Shared(version)
        sh.fp = state_codec.fingerprint(sess)
        sh.lim = state_codec.limits(sess, False)
        nxt = state_codec.next_seq(sess)  # callbacks of seqs the record does not have go
        sess.on_delivered = {s: cb for s, cb in sess.on_delivered.items() if s < nxt}
        return True

    def _lost(self, service, sess):
        # ended by another worker, or expired: our copy is no session any more
        self.counters["state_lost"] += 1
        self._forget(service, sess, "ended elsewhere")

    def _forget(self, service, sess, why):
        """Drop a session from this worker only (another worker has it, or
        nobody): no on_close, nothing held, the record untouched."""
        if service.sessions.get(sess.sid) is sess:
            del service.sessions[sess.sid]
            c = service.per_ip.get(sess.addr[0])
            if c is not None:
                c[0] -= 1
                if not c[0]:
                    del service.per_ip[sess.addr[0]]
            self.counters["sessions_active"] = len(service.sessions)
            log("state_forgotten", sid=sess.sid, reason=why)
        if sess.shared is not None:
            sess.shared.forgotten = True


def from_config(cfg, base):
    """A StateStore from service.json's "redis" object (docs/CONFIG.md)."""
    if not isinstance(cfg, dict) or set(cfg) - _CONFIG_KEYS or "url" not in cfg:
        raise ConfigError("redis: an object with url and only %s" % sorted(_CONFIG_KEYS))
    nums = [cfg.get(k, 1) for k in ("idle_ttl_s", "retry_ms", "timeout_ms")]
    if not all(isinstance(n, (int, float)) and n > 0 for n in nums):
        raise ConfigError("redis: idle_ttl_s, retry_ms and timeout_ms must be positive numbers")
    timeout = cfg.get("timeout_ms", 500) / 1000.0
    try:
        client = redis.Redis.from_url(
            cfg["url"], socket_timeout=timeout, socket_connect_timeout=timeout
        )
        seal = MasterKey(base / cfg.get("seal_key_file", "state-seal.key"))
    except (ValueError, SealError, OSError) as e:
        raise ConfigError("redis: %s" % e)
    return StateStore(
        client,
        seal,
        cfg.get("key_prefix", "atls:"),
        cfg.get("idle_ttl_s", 600),
        cfg.get("retry_ms", 1000),
    )
