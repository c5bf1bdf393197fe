"""The simulator's verdict (sim/report.py) on hand-made runs, without
processes: "every acknowledged message reached the application exactly once"
identifies messages by the device's own id (boot, reading number), takes
acknowledgements in any order, and fails on any duplicate the application
sees inside one session (link protocol v1 allows one only in a new session).
The application's records come from sim/sim_app.py itself."""

import json
from types import SimpleNamespace

import pytest

from sim import report
from sim.device_state import DeviceState
from sim.sim_app import RecordingEchoApp

CHECK = "every acknowledged message reached the application exactly once"


class FakeSession:
    def __init__(self, sid, started_ms, identity="dev1"):
        self.sid, self.started_ms, self.identity = sid, started_ms, identity
        self.sent = []

    def send(self, payload):
        self.sent.append(payload)


def reading(n, boot="b1", dev="dev1"):
    return json.dumps({"dev": dev, "boot": boot, "n": n, "t": 0}).encode()


def fleet(tmp_path, sent, acked, deliveries_path, boot="b1", later=()):
    """A finished run of one device "dev1" that sent readings 0..sent-1 and
    printed "ack" for the ids in `acked` (in that order), then the status
    lines `later`."""
    lines = [{"ev": "boot", "device": "dev1", "boot": boot}]
    lines += [{"ev": "tx", "n": n + 1} for n in range(sent)]
    lines += [{"ev": "ack", "n": i + 1, "id": n} for i, n in enumerate(acked)]
    lines += list(later)
    st = DeviceState("dev1")
    for ev in lines:
        st.feed(ev)
    (tmp_path / "dev1.log").write_text("".join("ATLS %s\n" % json.dumps(ev) for ev in lines))
    deliveries = [json.loads(x) for x in deliveries_path.read_text().splitlines()]
    return SimpleNamespace(
        devices={"dev1": st},
        dir=tmp_path,
        n=1,
        loss=0.0,
        latency_ms=0,
        seed=1,
        mode="psk",
        suite=None,
        radio_state={},
        events=[],
        collect=lambda: ({}, {}, {}, deliveries),
    )


def verdict(tmp_path, app, sent, acked, later=(), check_name=CHECK):
    app.out.flush()
    f = fleet(tmp_path, sent, acked, app.path_obj, later=later)
    rep = report.build(f, "x", ["dev1"], 1, (), [], 1.0)
    check = [c for c in rep["checks"] if c["check"] == check_name][0]
    return rep, check


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "deliveries.jsonl"
    a = RecordingEchoApp(str(path))
    a.path_obj = path
    yield a
    a.out.close()


def test_out_of_order_acks_identified_by_id_pass(tmp_path, app):
    s = FakeSession(1, 100)
    for n in (0, 2):
        app.on_message(s, reading(n))
    rep, check = verdict(tmp_path, app, sent=3, acked=[2, 0])  # 1 not acknowledged
    assert check["passed"], check
    assert rep["verdict"] == "pass"
    assert rep["devices"][0]["delivered"] == 2 and rep["devices"][0]["duplicated"] == 0


def test_acknowledged_but_not_delivered_fails_whatever_the_count(tmp_path, app):
    """Two acks, two deliveries, but not the same messages: 2 is missing
    (counting acknowledgements, 0..acked-1, would call this a pass)."""
    s = FakeSession(1, 100)
    for n in (0, 1):
        app.on_message(s, reading(n))
    rep, check = verdict(tmp_path, app, sent=3, acked=[0, 2])
    assert not check["passed"] and rep["verdict"] == "fail"
    assert rep["totals"]["lost_acknowledged"] == 1


def test_duplicate_in_one_session_fails(tmp_path, app):
    s = FakeSession(1, 100)
    for n in (0, 1, 1):  # the link handed the application reading 1 twice
        app.on_message(s, reading(n))
    rep, check = verdict(tmp_path, app, sent=2, acked=[0, 1])
    assert not check["passed"] and rep["verdict"] == "fail"
    d = rep["devices"][0]
    assert d["duplicated"] == 1 and d["duplicated_in_session"] == 1
    assert "1 duplicated in a session" in check["detail"]


def test_duplicate_in_a_new_session_is_counted(tmp_path, app, monkeypatch):
    """A message that reached the service before its session died comes again
    in the next session: counted, allowed by link protocol v1 only."""
    app.on_message(FakeSession(1, 100), reading(0))
    app.on_message(FakeSession(2, 900), reading(0))
    rep, check = verdict(tmp_path, app, sent=1, acked=[0])
    d = rep["devices"][0]
    assert d["duplicated"] == 1 and d["duplicated_across_sessions"] == 1
    assert d["duplicated_in_session"] == 0
    assert check["passed"] == report.CROSS_SESSION_DUPLICATES_ALLOWED
    monkeypatch.setattr(report, "CROSS_SESSION_DUPLICATES_ALLOWED", False)
    _, check = verdict(tmp_path, app, sent=1, acked=[0])
    assert not check["passed"]


def test_same_session_id_in_a_restarted_service_is_another_session(tmp_path):
    """A restarted service may hand out the same session id again: the record
    names the service process too."""
    path = tmp_path / "deliveries.jsonl"
    a = RecordingEchoApp(str(path))
    a.on_message(FakeSession(1, 100), reading(0))
    a.out.close()
    b = RecordingEchoApp(str(path))
    b.on_message(FakeSession(1, 100), reading(0))
    b.out.close()
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["dup"] for r in recs] == [False, True]
    assert recs[0]["session"] != recs[1]["session"]
    _, by_dev = report.deliveries_by_device(recs)
    assert report.duplicates(by_dev["dev1"]) == (0, 1)


def test_never_sent_reading_is_forged(tmp_path, app):
    s = FakeSession(1, 100)
    app.on_message(s, reading(0))
    app.on_message(s, reading(7))  # the device sent only 0
    rep, _ = verdict(tmp_path, app, sent=1, acked=[0])
    assert rep["totals"]["forged_accepted"] == 1 and rep["verdict"] == "fail"


DOWN = "no service message reached a device's application twice"


def rx(payload, n):
    return {"ev": "rx", "n": n, "data": payload.decode()}


def test_the_echo_names_its_reading_and_goes_once(app):
    s = FakeSession(1, 100)
    for n in (0, 1, 1):  # the second 1 is a duplicate: recorded, not answered
        app.on_message(s, reading(n))
    assert [json.loads(p) for p in s.sent] == [
        {"cmd": "echo", "boot": "b1", "n": 0},
        {"cmd": "echo", "boot": "b1", "n": 1},
    ]


def test_an_echo_delivered_twice_in_one_boot_fails(tmp_path, app):
    """The device's application got the service's answer to reading 1 twice:
    the link's de-duplication by message id failed (docs/PROTOCOL.md §4)."""
    s = FakeSession(1, 100)
    for n in (0, 1):
        app.on_message(s, reading(n))
    e0, e1 = s.sent
    rep, check = verdict(tmp_path, app, 2, [0, 1], [rx(e0, 1), rx(e1, 2), rx(e1, 3)], DOWN)
    assert not check["passed"] and check["detail"] == "1 duplicated" and rep["verdict"] == "fail"
    assert rep["devices"][0]["duplicated_to_device"] == 1
    assert rep["devices"][0]["echoes_received"] == 2
    assert rep["totals"]["duplicated_to_devices"] == 1


def test_an_echo_again_after_a_reboot_is_not_a_duplicate(tmp_path, app):
    """A rebooted device forgets what it got; the service's queue for its
    next session may hold an answer it had (its ACK lost): no duplicate."""
    s = FakeSession(1, 100)
    app.on_message(s, reading(0))
    (e0,) = s.sent
    reboot = {"ev": "boot", "device": "dev1", "boot": "b2"}
    rep, check = verdict(tmp_path, app, 1, [0], [rx(e0, 1), reboot, rx(e0, 1), rx(b"hi", 2)], DOWN)
    assert check["passed"] and check["detail"] == "0 duplicated"
    assert rep["devices"][0]["duplicated_to_device"] == 0
