"""Issue 19's kill regression at store level: stale copies of a session
at a worker the balancer sends the device back to (a worker died and came
back: the SO_REUSEPORT hash changed twice; nginx opened new flows).  The
harness is tests/test_state_store.py's (two real service cores, one real
Redis, the firmware's DeviceSession on a virtual clock)."""

import types

from test_state_store import ADDR, Pair, _up

from host_tools.service import state_store


def test_a_stale_copy_given_acks_for_what_it_never_sent_catches_up(rds, tmp_path):
    """Issue 19's kill regression: the balancer moved a device back to a
    worker holding an older copy (a worker died, then came back: the
    SO_REUSEPORT hash changed twice).  That copy drops the device's ACKs
    of messages the newer holder sent (bad_ack), so the newer holder's
    copy never saw progress, timed out (peer timeout), deleted the record
    and the device re-handshook 60 s later.  The stale copy must catch up."""
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.to = 1
    p.dev.send(b"echo:a", p.now)
    assert p.run(3000, lambda: p.got == [b"re:a"] and not p.dev.pending())
    (s1,) = w1.svc.sessions.values()
    s1.send(b"from-w1")  # in flight from worker 1 ...
    p.to = 0  # ... when the device goes back to worker 0 (older copy)
    assert p.run(3000, lambda: p.got[-1:] == [b"from-w1"])
    p.run(70000)  # past the link's peer timeout (60 s)
    p.dev.send(b"echo:b", p.now)
    assert p.run(5000, lambda: p.got[-1:] == [b"re:b"] and not p.dev.pending())
    assert sorted(p.all_got()) == [b"echo:a", b"echo:b"]  # once each
    assert p.dev.handshakes == 1
    assert w0.svc.counters["state_lost"] == 0 and w1.svc.counters["state_lost"] == 0


def test_a_copy_whose_record_is_gone_delivers_nothing(rds, tmp_path):
    """The record went (the session ended at another worker, which handed
    its messages on): this worker's copy must not deliver what it can no
    longer commit - the device sends it again in its next session."""
    p = Pair(rds, tmp_path)
    _up(p)
    w0 = p.w[0]
    (s0,) = w0.svc.sessions.values()
    w0.store.r.delete(w0.store._key(s0.sid))
    p.dev.send(b"echo:x", p.now)
    p.run(500)
    assert w0.app.got == [] and w0.svc.counters["state_lost"] == 1
    assert not w0.svc.sessions


def test_a_stale_copy_reached_from_a_new_address_commits_before_delivering(rds, tmp_path):
    """A worker with an older copy gets, from a new address (nginx opened a
    new flow after a worker died), a message another worker already
    delivered: it is a replay in the newer record, never delivered again."""
    p = Pair(rds, tmp_path)
    _up(p)
    w0, w1 = p.w
    p.to = 1
    p.dev.send(b"echo:a", p.now)
    p.now += 10
    for d in p.dev.datagrams(p.now):  # worker 1 accepts and delivers it; its answer is lost
        w1.svc.datagram_received(d, ADDR)
    w1.out.clear()
    assert w1.app.got == [b"echo:a"]
    new = (ADDR[0], ADDR[1] + 100)
    p.devs = {new: p.dev}
    p.to = 0  # the device's retransmission reaches worker 0 from another address
    settled = p.run(10000, lambda: not p.dev.pending())
    assert p.all_got() == [b"echo:a"]  # once
    assert settled
    assert p.dev.handshakes == 1


def test_a_record_written_before_a_quiet_minute_is_taken_over(rds, tmp_path, monkeypatch):
    """The record keeps the in-flight message of its last commit (the
    device's ACK of it is not committed: no round trip for ACKs), with the
    time it went out.  A worker taking the session over a minute later must
    not read that as a minute without progress (the link's peer timeout):
    it ended the session at once, deleted the record and the device
    handshook again (issue 19's 10,000-device kill run)."""
    p = Pair(rds, tmp_path)
    wall = types.SimpleNamespace(time=lambda: 1.7e9 + p.now / 1000)  # records: the virtual clock
    monkeypatch.setattr(state_store, "time", wall)
    _up(p)
    (s0,) = p.w[0].svc.sessions.values()
    s0.send(b"from-w0")
    assert p.run(3000, lambda: p.got == [b"from-w0"])
    p.run(65000)  # quiet: past the link's peer timeout (60 s)
    p.to = 1  # worker 0 died: the balancer sends the device to worker 1
    p.dev.send(b"echo:a", p.now)
    assert p.run(5000, lambda: p.got[-1:] == [b"re:a"] and not p.dev.pending())
    assert p.all_got() == [b"echo:a"] and p.dev.handshakes == 1
    assert p.w[1].svc.counters["state_loads"] == 1 and p.w[1].svc.sessions


def test_a_copy_that_cannot_commit_for_conflicts_delivers_nothing(rds, tmp_path):
    """Every COMMIT conflicts (another worker keeps moving the record on):
    after the last try the link has accepted a message that was never
    committed; it must not reach the application from this copy (it did:
    `_sync` returned False as if Redis were down, and the service delivered
    - a duplicate once the other worker delivers it too)."""
    p = Pair(rds, tmp_path)
    _up(p)
    w0 = p.w[0]
    store = w0.store
    real_cas = store._cas

    def always_conflicts(sess, now):  # another worker's commit always came first
        store.r.hincrby(store._key(sess.sid), "v", 1)
        return real_cas(sess, now)  # the script's own conflict answer

    store._cas = always_conflicts
    p.to = 0
    p.dev.send(b"echo:c", p.now)
    p.run(300)
    assert w0.app.got == []
    assert w0.svc.counters["state_contended"] >= 1
    assert not w0.svc.sessions  # forgotten here: the record stays for whoever is current
    store._cas = real_cas
    assert p.run(5000, lambda: p.got[-1:] == [b"re:c"] and not p.dev.pending())
    assert p.all_got().count(b"echo:c") == 1
