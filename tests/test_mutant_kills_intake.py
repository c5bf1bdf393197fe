"""The service's intake in process (host_tools.service.admission.Intake):
the queue fair across IPs, its per-IP and global caps, the per-IP rate,
binder checks (_proven), replayed ClientHellos, the addresses of devices that
authenticated (validated) and the scheduling of TLS work (run); unit tests
written for `make mutants` (tests/mutants/), milliseconds each, on a virtual
clock `now` (ms, at realistic values).  The first flights are the firmware
TLS client's ClientHellos.  Each test names the rule it holds (the module
doc, docs/SECURITY.md)."""

import pytest
from test_mutant_kills_admission import PSK, T, fill, intake, one_datagram

from host_tools.service import admission
from host_tools.service.admission import KNOWN_MS, REPLAY_WINDOW_MS

PSKS = {b"dev-1": PSK}
IP, IP2, IP3 = "192.0.2.1", "198.51.100.2", "203.0.113.3"


def drain(ik, now):
    out = []
    while (item := ik.take(now)) is not None:
        out.append(item[0])
    return out


# ---- the queue: fair, bounded, retransmissions keep their place ---------------


def test_take_is_round_robin_across_ips_and_in_order_within_one():
    """Flights are served one IP at a time in turn (a flooding IP does not
    delay another's), oldest first within an IP; put() says True for each."""
    ik, drops = intake()
    a1, a2, b1 = (IP, 1), (IP, 2), (IP2, 1)
    for addr in (a1, a2, b1):
        assert ik.put(addr, one_datagram(), T) is True
    assert len(ik) == 3
    assert drain(ik, T) == [a1, b1, a2]
    assert len(ik) == 0 and not ik.ips and not drops


def test_a_retransmitted_flight_keeps_its_place_and_stays_fresh():
    """A retransmission of a queued flight replaces it in its place (no
    second entry) and restarts its age: it is served after intake_max_age_ms
    from the first copy, while a flight not retransmitted is stale."""
    ik, drops = intake()
    age = ik.max_age
    a1, a2 = (IP, 1), (IP, 2)
    ik.put(a1, one_datagram(), T)
    ik.put(a2, one_datagram(), T)
    again = one_datagram()
    assert ik.put(a1, again, T + age) is True
    assert len(ik) == 2
    assert ik.take(T + age + 1) == (a1, again)
    assert ik.take(T + age + 1) is None
    assert drops == {"intake_stale": 1}


def test_a_flight_is_stale_only_after_intake_max_age_ms():
    """A flight queued intake_max_age_ms ago is still served; one more
    millisecond and it is dropped (intake_stale): the device would have
    retransmitted by then."""
    ik, drops = intake()
    ik.put((IP, 1), one_datagram(), T)
    ik.put((IP2, 1), one_datagram(), T + 1)
    assert ik.take(T + ik.max_age + 1)[0] == (IP2, 1)
    assert drops == {"intake_stale": 1}
    ik.put((IP, 2), one_datagram(), T)
    assert ik.take(T + ik.max_age)[0] == (IP, 2)


def test_a_full_ip_queue_refuses_an_unknown_address_and_keeps_its_flights():
    """intake_per_ip flights from one IP: the next unknown address is
    refused (intake_full, put() says False) and nothing queued goes."""
    ik, drops = intake(intake_per_ip=2)
    fill(ik, IP, 2)
    assert ik.put((IP, 2000), one_datagram(), T) is False
    assert drops == {"intake_full": 1} and len(ik) == 2
    assert [a for a in ik.ips[IP]] == [(IP, 1000), (IP, 1001)]


def test_a_known_address_at_a_full_queue_evicts_the_oldest_unknown():
    """A validated address is queued at its IP's full queue and the oldest
    flight of an address not known goes (intake_evicted): the queue stays at
    intake_per_ip, the known address's flight is kept."""
    ik, drops = intake(intake_per_ip=2)
    dev = (IP, 5684)
    ik.validated(dev, T)
    assert ik.put(dev, one_datagram(), T) is True
    fill(ik, IP, 1)  # (IP, 1000)
    assert ik.put((IP, 7), one_datagram(), T) is False  # unknown, full
    ik.validated((IP, 9), T)
    assert ik.put((IP, 9), one_datagram(), T) is True
    assert list(ik.ips[IP]) == [dev, (IP, 9)] and len(ik) == 2
    assert drops == {"intake_full": 1, "intake_evicted": 1}


def test_the_intake_never_holds_more_than_intake_max_flights():
    """intake_max in all: a first flight from a new IP when the intake is
    full costs the IP served next its oldest flight (intake_full)."""
    ik, drops = intake(intake_max=3)
    for ip in (IP, IP2, IP3):
        ik.put((ip, 1), one_datagram(), T)
    assert ik.put(("192.0.2.99", 1), one_datagram(), T) is True
    assert len(ik) == 3 and drops == {"intake_full": 1}
    assert drain(ik, T) == [(IP2, 1), (IP3, 1), ("192.0.2.99", 1)]


def test_intake_max_holds_for_ips_already_queued_too():
    """intake_max in all, whichever IP a new flight comes from: 8 addresses
    of one IP (intake_per_ip 8) in an intake of 3 leave 3 queued, the
    newest; with two IPs the one served next loses its oldest.  (Regression:
    the cap was checked only for an IP's first flight, so 1024 IPs could
    queue 8 each.)"""
    ik, drops = intake(intake_max=3)
    fill(ik, IP, 8)
    assert len(ik) == 3 and drops == {"intake_full": 5}
    assert drain(ik, T) == [(IP, 1005), (IP, 1006), (IP, 1007)]
    ik, drops = intake(intake_max=3)
    fill(ik, IP, 2)
    for port in (1, 2):
        ik.put((IP2, port), one_datagram(), T)
    assert len(ik) == 3 and drops == {"intake_full": 1}
    assert drain(ik, T) == [(IP2, 1), (IP, 1001), (IP2, 2)]


# ---- the per-IP rate and binder checks -----------------------------------------


def test_the_ip_rate_refuses_unknown_addresses_not_known_ones():
    """first_flights_per_ip_burst flights from an IP, then first_flight_rate
    refusals (without PSKs nothing is proven); a validated address of the
    IP is not refused and takes no token."""
    ik, drops = intake(first_flights_per_ip_burst=2, first_flights_per_ip_per_s=1)
    fill(ik, IP, 2)
    assert ik.put((IP, 7), one_datagram(), T) is False
    assert drops == {"first_flight_rate": 1}
    dev = (IP, 5684)
    ik.validated(dev, T)
    assert ik.put(dev, one_datagram(), T) is True
    assert ik.put((IP2, 1), one_datagram(), T) is True  # another IP: its own bucket
    assert len(ik) == 4 and drops == {"first_flight_rate": 1}
    assert ik.put((IP, 8), one_datagram(), T + 1000) is True  # one per second again


def test_proven_flight_passes_an_exhausted_rate_a_wrong_binder_does_not():
    """At an IP whose rate is spent, a first flight whose PSK binder
    verifies is queued (a device behind a gateway); a wrong binder or an
    unknown identity is refused (first_flight_rate)."""
    ik, drops = intake(PSKS, first_flights_per_ip_burst=1, first_flights_per_ip_per_s=1)
    fill(ik, IP, 1)
    assert ik.put((IP, 2), one_datagram(psk=bytes(32)), T) is False
    assert ik.put((IP, 3), one_datagram(identity=b"nobody"), T) is False
    assert drops == {"first_flight_rate": 2}
    assert ik.put((IP, 4), one_datagram(), T) is True
    assert len(ik) == 2


def test_proven_flight_at_a_full_queue_costs_one_binder_check():
    """At a full queue, with the IP's rate spent as well: a flight whose
    binder verifies is queued, the oldest unknown flight going (a proven one
    is never the one to go: the queue grows), and it costs one binder check
    (binder_checks_per_ip_per_s=1 allows 2 at once: two such flights pass,
    the third is refused); a wrong binder is refused too."""
    ik, drops = intake(
        PSKS,
        intake_per_ip=1,
        first_flights_per_ip_burst=1,
        first_flights_per_ip_per_s=1,
        binder_checks_per_ip_per_s=1,
    )
    fill(ik, IP, 1)
    assert ik.put((IP, 2), one_datagram(), T) is True
    assert ik.put((IP, 3), one_datagram(), T) is True
    assert drops == {"intake_evicted": 1}
    assert ik.put((IP, 4), one_datagram(), T) is False
    assert drops["intake_full"] == 1
    assert list(ik.ips[IP]) == [(IP, 2), (IP, 3)]
    ik2, drops2 = intake(PSKS, intake_per_ip=1)
    fill(ik2, IP, 1)
    assert ik2.put((IP, 2), one_datagram(psk=bytes(32)), T) is False
    assert drops2 == {"intake_full": 1} and list(ik2.ips[IP]) == [(IP, 1000)]


def test_without_psks_a_full_queue_refuses_whatever_the_binder():
    """No PSKs (certificate-only service): nothing is proven, a full IP
    queue refuses a new address in refuses() and in put()."""
    ik, drops = intake(intake_per_ip=1)
    fill(ik, IP, 1)
    assert ik.refuses((IP, 2), one_datagram()[0], T) is True
    assert ik.put((IP, 2), one_datagram(), T) is False
    assert drops == {"intake_full": 2}


def test_a_fleet_ip_gets_as_many_binder_checks_as_first_flights():
    """An IP with an authenticated device (a gateway's, a NAT's) has its
    binder checks at first_flights_per_ip_per_s; any other IP at
    binder_checks_per_ip_per_s (1 here: 2 at once)."""
    ik, drops = intake(PSKS, intake_per_ip=1, binder_checks_per_ip_per_s=1)
    ik.validated((IP, 5684), T)
    for ip in (IP, IP2):
        fill(ik, ip, 1)
    for port in range(2, 6):
        assert ik.put((IP, port), one_datagram(), T) is True
    assert ik.put((IP2, 2), one_datagram(), T) is True
    assert ik.put((IP2, 3), one_datagram(), T) is True
    assert ik.put((IP2, 4), one_datagram(), T) is False
    assert ik.refuses((IP2, 5), one_datagram()[0], T) is True
    assert ik.refuses((IP, 6), one_datagram()[0], T) is False


def test_validated_addresses_counted_per_ip_and_forgotten_oldest_first():
    """`known` holds at most max_sessions addresses, the least recently
    validated going first, and `fleet_ips` counts each IP's known addresses
    (once per address): an IP stops being a fleet IP with its last one."""
    ik, _ = intake(max_sessions=2)
    a, b, c = (IP, 1), (IP, 2), (IP2, 1)
    ik.validated(a, T)
    ik.validated(a, T + 1)  # again: still one address
    assert ik.fleet_ips == {IP: 1}
    ik.validated(b, T + 2)
    assert ik.fleet_ips == {IP: 2} and list(ik.known) == [a, b]
    ik.validated(c, T + 3)
    assert list(ik.known) == [b, c] and ik.fleet_ips == {IP: 1, IP2: 1}
    ik.validated(c, T + 4)
    ik.validated((IP2, 2), T + 5)
    assert list(ik.known) == [c, (IP2, 2)] and ik.fleet_ips == {IP2: 2}


def test_an_address_is_known_for_known_ms_after_its_last_validation():
    """An authenticated device's address goes first for KNOWN_MS (an hour)
    after it last authenticated, not longer."""
    ik, _ = intake()
    a, b, c = (IP, 1), (IP2, 1), (IP3, 1)
    ik.validated(a, T)
    ik.validated(b, T + KNOWN_MS)
    assert list(ik.known) == [a, b]
    ik.validated(c, T + KNOWN_MS + 1)
    assert list(ik.known) == [b, c] and ik.fleet_ips == {IP2: 1, IP3: 1}


# ---- replays -------------------------------------------------------------------


def test_replays_refused_in_put_and_take_at_any_queue_state():
    """A ClientHello started (take) or proven (queued after a binder check)
    is refused from any other address, before TLS work: at an IP with room,
    at a full queue, and when it was queued before the original started
    (take drops it); the original's own address may send it again."""
    ik, drops = intake(PSKS, intake_per_ip=1)
    a, b, c = (IP, 1), (IP2, 1), (IP3, 1)
    flight = one_datagram()
    ik.put(a, flight, T)
    ik.put(b, flight, T)  # a copy queued before the original started
    assert ik.take(T) == (a, flight)
    assert ik.take(T) is None and drops == {"client_hello_replay": 1}
    assert ik.put(c, flight, T + 1) is False  # IP3 has room
    fill(ik, IP2, 1, T + 1)  # IP2 full
    assert ik.put(b, flight, T + 1) is False
    assert drops == {"client_hello_replay": 3}
    assert ik.put(a, flight, T + 2) is True  # its own address: a retransmission
    proven = one_datagram()
    assert ik.put((IP2, 50), proven, T + 3) is True  # proven at the full queue
    assert ik.put((IP3, 50), proven, T + 3) is False
    assert drops == {"client_hello_replay": 4, "intake_evicted": 1}


def test_a_replay_is_refused_for_replay_window_ms_including_its_last_ms():
    """The random of a started ClientHello is kept REPLAY_WINDOW_MS: a
    replay that many ms later (when another flight starts at that moment)
    is still refused, one ms later it is not; older randoms are forgotten
    as new ones come (the table stays bounded)."""
    ik, drops = intake()
    first = one_datagram()
    ik.put((IP, 1), first, T)
    ik.take(T)
    ik.put((IP2, 1), one_datagram(), T + REPLAY_WINDOW_MS)
    ik.take(T + REPLAY_WINDOW_MS)  # remembers its own, forgets nothing yet
    assert len(ik.randoms) == 2
    assert ik.refuses((IP3, 1), first[0], T + REPLAY_WINDOW_MS) is True
    assert drops == {"client_hello_replay": 1}
    assert ik.refuses((IP3, 1), first[0], T + REPLAY_WINDOW_MS + 1) is False
    ik.put((IP3, 2), one_datagram(), T + REPLAY_WINDOW_MS + 1)
    ik.take(T + REPLAY_WINDOW_MS + 1)
    assert len(ik.randoms) == 2  # the first one's random is gone


def test_the_replay_table_keeps_the_newest_replay_max_randoms(monkeypatch):
    """At most REPLAY_MAX client randoms are kept, the oldest going first
    (4 here instead of 65536: the rule, not the memory)."""
    monkeypatch.setattr(admission, "REPLAY_MAX", 4)
    ik, drops = intake()
    flights = [one_datagram() for _ in range(6)]
    for i, f in enumerate(flights):
        ik.put((IP, i), f, T)
        assert ik.take(T) is not None
    assert len(ik.randoms) == 4
    for f in flights[:2]:
        assert ik.refuses((IP2, 1), f[0], T) is False
    for f in flights[2:]:
        assert ik.refuses((IP2, 1), f[0], T) is True
    assert drops == {"client_hello_replay": 4}


# ---- take(): binders checked only under contention -----------------------------


def test_a_wrong_binder_is_dropped_before_tls_work_only_while_others_wait():
    """While other flights wait, one whose PSK binder does not verify is
    dropped (bad_binder) and the next is served; a verified one is served
    however many wait; without contention a wrong binder goes to OpenSSL
    (which answers it with decrypt_error)."""
    ik, drops = intake(PSKS)
    bad, good, last = (IP, 1), (IP2, 1), (IP3, 1)
    ik.put(bad, one_datagram(psk=bytes(32)), T)
    ik.put(good, one_datagram(), T)
    ik.put(last, one_datagram(identity=b"nobody"), T)
    assert ik.take(T)[0] == good
    assert drops == {"bad_binder": 1}
    assert ik.take(T)[0] == last  # alone: OpenSSL decides
    assert drops == {"bad_binder": 1}
    ik.put(good, one_datagram(), T)
    ik.put(bad, one_datagram(), T)
    assert drain(ik, T) == [good, bad]


# ---- run(): slices of TLS work within handshake_share --------------------------


class CPU:
    """The clock run() reads for the TLS work it spends (perf_counter), on
    virtual time: each start() takes exactly as long as the test says."""

    def __init__(self, t):
        self.t = t

    def perf_counter(self):
        return self.t


@pytest.fixture()
def cpu(monkeypatch):
    c = CPU(1000.0)  # perf_counter is seconds since some point: not 0
    monkeypatch.setattr(admission, "time", c)
    return c


def test_run_starts_flights_for_one_slice_of_tls_slice_ms(cpu):
    """run() starts queued flights until TLS_SLICE_MS of work is done (the
    service reads its socket again), counting the work since the slice began:
    a second start that ends exactly at the slice's end is the last."""
    ik, _ = intake()
    for ip in (IP, IP2, IP3):
        ik.put((ip, 1), one_datagram(), T)
    end = cpu.t + admission.TLS_SLICE_MS / 1000.0
    started = []

    def start(addr, packets, now):
        started.append(addr)
        cpu.t = cpu.t + 0.001 if len(started) == 1 else end

    ik.run(start, T)
    assert started == [(IP, 1), (IP2, 1)] and len(ik) == 1
    assert ik.tokens_ms == pytest.approx(50.0 - 5.0)
    ik.run(start, T)
    assert started[-1] == (IP3, 1) and len(ik) == 0


def test_run_spends_at_most_handshake_share_of_the_time(cpu):
    """TLS work is a token bucket of milliseconds (burst 50, refilled at
    handshake_share of the time that passes): a positive balance starts work,
    a spent one (0 ms included) waits until the time refills it."""
    ik, _ = intake(handshake_share=0.5)
    for ip in (IP, IP2, IP3):
        ik.put((ip, 1), one_datagram(), T)
    started = []

    def start(addr, packets, now):  # a handshake of 31.25 ms (exact in binary)
        started.append(addr)
        cpu.t += 0.03125

    ik.run(start, T)  # 50 - 31.25 = 18.75 left; the slice is over
    assert len(started) == 1 and ik.tokens_ms == 18.75
    ik.run(start, T)  # a new slice: 18.75 - 31.25
    assert len(started) == 2 and ik.tokens_ms == -12.5
    ik.run(start, T)
    assert len(started) == 2
    ik.run(start, T + 25)  # 25 ms at 0.5: exactly 0 ms, still nothing
    assert len(started) == 2 and ik.tokens_ms == 0.0
    ik.run(start, T + 26)
    assert len(started) == 3 and len(ik) == 0


def test_known_and_proven_flights_are_never_evicted_by_one_another():
    """Regression (abuse bench, phase 2): behind a gateway a whole fleet
    shares one IP.  A known device's flight at that IP's full queue evicted
    the oldest flight when none was unknown, i.e. the next one served, and
    evicted flights whose binder had verified: devices behind the gateway
    went unanswered for whole attempts (gateway_honest_success 0.989).  Only
    an unproven unknown flight goes; else the queue grows within intake_max,
    and each is served in arrival order."""
    ik, drops = intake(PSKS, intake_per_ip=2, first_flights_per_ip_burst=2)
    known = [(IP, 1), (IP, 2), (IP, 3)]
    for a in known:
        ik.validated(a, T)
    fill(ik, IP, 2)  # two unknown flights (unproven: the queue had room)
    assert ik.put((IP, 7), one_datagram(), T) is True  # queue full: proven, one unknown goes
    assert drops == {"intake_evicted": 1}
    for a in known:  # known: the last unknown goes, then the queue grows
        assert ik.put(a, one_datagram(), T) is True
    assert drops == {"intake_evicted": 2}
    assert drain(ik, T) == [(IP, 7)] + known
    assert not ik.proven
