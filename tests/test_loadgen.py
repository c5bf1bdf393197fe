"""The load generator (host_tools/loadgen, issue 19) against the real
service process: 20 simulated devices (the firmware's DeviceSession, native
crypto, one UDP socket each on spread loopback addresses) handshake and
send; the counting application's records and the devices' acknowledgements
agree exactly.  The tally is shown to see a lost and a duplicated message."""

import os

from host_tools.loadgen.fleet import Fleet, payload
from host_tools.loadgen.provision import ServiceProcess, identities, write_config
from host_tools.loadgen.run import load_run
from host_tools.loadgen.tally import read_records, tally


def test_payload_carries_the_number_the_app_reads_back():
    assert payload(0x1A2B) == b"00001a2b........"
    assert int(payload(7, 24)[:8], 16) == 7 and len(payload(7, 24)) == 24


def test_twenty_devices_exact_counts_and_the_tally_sees_loss_and_duplicates(tmp_path):
    psks = identities(20)
    svc = ServiceProcess(tmp_path, write_config(tmp_path, psks))
    fleet = None
    try:
        fleet = Fleet(psks, svc.addr, period_ms=200, concurrency=8, per_ip=4)
        assert fleet.run_until(lambda: len(fleet.up_at) == 20, 30), fleet.counts
        assert len({d.ip for d in fleet.devices}) == 5  # 4 devices per loopback address
        fleet.start_sending()
        fleet.run_until(lambda: min(d.sent for d in fleet.devices) >= 5, 20)
        fleet.stop_sending()
        assert fleet.run_until(lambda: fleet.unacked() == 0, 20)
        t = tally(fleet, svc.record_dir)
        sent = sum(d.sent for d in fleet.devices)
        assert sent >= 100 and fleet.counts["acks"] == sent
        assert t == {
            "sent": sent,
            "acknowledged": sent,
            "received": sent,
            "lost": 0,
            "duplicated": 0,
            "unacknowledged": 0,
            "rehandshakes": 0,
            "devices_up": 20,
        }
        got = read_records(svc.record_dir)
        assert sorted(got) == sorted(
            (d.ident.decode(), n) for d in fleet.devices for n in range(d.sent)
        )
        # the tally is not blind: one record removed is one lost, one repeated a duplicate
        (rec,) = [p for p in os.listdir(svc.record_dir) if p.startswith("record-")]
        path = svc.record_dir / rec
        lines = path.read_text().splitlines(True)
        path.write_text("".join(lines[1:] + lines[-1:]))
        t2 = tally(fleet, svc.record_dir)
        assert (t2["lost"], t2["duplicated"], t2["received"]) == (1, 1, sent)
    finally:
        if fleet is not None:
            fleet.close()
        svc.stop()


def test_load_run_reports_every_phase():
    res = load_run(12, rate=24, duration=1.0, concurrency=6, per_ip=3)
    assert res["established"] == res["devices_up"] == 12 and "error" not in res
    assert res["lost"] == res["duplicated"] == res["rehandshakes"] == 0
    assert res["acknowledged"] == res["sent"] == res["received"] > 0
    assert res["service_counters"]["handshakes_ok"] == 12
    assert res["service_counters"]["messages_in"] == res["received"]
    for k in ("handshakes_per_s", "messages_per_s", "cpu_us_per_handshake"):
        assert res[k] > 0, k
