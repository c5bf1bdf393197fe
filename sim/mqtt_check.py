"""`make sim MQTT=1`: the fleet's service runs the MQTT bridge against a local
Mosquitto, and the verdict gains two checks:

  * every message a device saw acknowledged is on its `up` topic exactly
    once (the PUBACK-before-ACK rule and the bridge's duplicate suppression);
  * every `down` message reached its device (a subscriber echoes each `up`
    reading to the device's `down` topic; the devices count what they get).

`MqttRecordingApp` is the service application in that mode: the bridge, plus
the simulator's delivery records (sim.sim_app) so the usual report still
holds.  The bridge de-duplicates by the link's message id
(`session.last_msg_id`); a message the service hands it again (the device
re-sent it before it was safe at the broker) is recorded once, when the
bridge publishes it.  `MqttCheck` runs in the simulator
process: the broker, the echoing subscriber and the checks.
"""

import json
import os
import time

from host_tools.service.mqtt_app import MqttApp
from sim.report import acked_ids
from sim.sim_app import RecordingEchoApp

__all__ = ["MqttRecordingApp", "MqttCheck", "PREFIX"]

PREFIX = "atls"
_DOWN_GRACE_S = 3.0  # a down message published this long before the check must have arrived


class _Quiet:
    """A session as RecordingEchoApp sees it, whose send() does nothing (the
    echo goes through the broker instead)."""

    def __init__(self, session):
        self.identity = session.identity
        self.sid = session.sid
        self.started_ms = session.started_ms
        self.last_msg_id = session.last_msg_id

    def send(self, payload, on_delivered=None):
        pass


class MqttRecordingApp(MqttApp):
    """The bridge configured from $ATLS_SIM_MQTT (JSON), recording deliveries.
    A key for tests beside the bridge's own: "die_after_puback": N (the
    process exits at a PUBACK from the N-th on that leaves no other publish
    waiting, before the link ACK goes out)."""

    def __init__(self):
        cfg = json.loads(os.environ["ATLS_SIM_MQTT"])
        self.die_after = cfg.pop("die_after_puback", None)
        super().__init__(cfg)
        self.record = RecordingEchoApp()
        self.pubacks = 0

    def on_message(self, session, payload):
        if not self.is_duplicate(session.identity, session.last_msg_id):
            self.record.on_message(_Quiet(session), payload)
        return super().on_message(session, payload)

    def on_puback(self, device, msg_id):
        self.pubacks += 1
        # at the first PUBACK from the N-th on with no other publish awaiting
        # its PUBACK: the crash falls exactly between PUBACK and link ACK
        if (
            self.die_after
            and self.pubacks >= self.die_after
            and not self.queue_depths()["publishing"]
        ):
            os._exit(9)  # the broker has it; the device never sees the ACK


class MqttCheck:
    """Broker + echoing subscriber for a sim.fleet.Fleet; call before the
    fleet starts (it sets the fleet's service application)."""

    def __init__(self, fleet):
        from host_tools.service.mqtt_broker import Broker, Recorder

        self.broker = Broker(fleet.dir / "mqtt")
        fleet.service_app = "sim.mqtt_check:MqttRecordingApp"
        fleet.service_env = {
            "ATLS_SIM_MQTT": json.dumps(
                {
                    "port": self.broker.port,
                    "prefix": PREFIX,
                    "state": str(fleet.dir / "mqtt-state.sqlite"),
                }
            )
        }
        state = fleet.dir / "mqtt-state.sqlite"
        for p in (
            state,
            state.with_name(state.name + "-wal"),
            state.with_name(state.name + "-shm"),
        ):
            if p.exists():
                p.unlink()  # a fresh run: no ids remembered from an earlier one
        self.rec = Recorder(self.broker.port, [PREFIX + "/+/up"], echo=True)

    def checks(self, fleet, names):
        """The two checks as (name, passed, detail)."""
        now = time.time()
        with self.rec.lock:
            msgs = list(self.rec.messages)
        missing = dups = 0
        lost_down = 0
        per = {}
        for topic, payload, _retain, _mid in msgs:
            dev = topic.split("/")[-2]
            try:
                r = json.loads(payload)
                key = (r.get("boot"), int(r["n"]))
            except (ValueError, KeyError, TypeError):
                key = ("?", payload)
            per.setdefault(dev, []).append(key)
        for name in names:
            got = per.get(name, [])
            dups += len(got) - len(set(got))
            for boot, ids in acked_ids(fleet.dir / (name + ".log")).items():
                missing += len([n for n in ids if (boot, n) not in set(got)])
        # every up message was echoed to down at once; those published
        # _DOWN_GRACE_S before now must have reached their device
        old = {}
        with self.rec.lock:
            stamps = list(self.rec.stamps)
        for topic, t in stamps:
            if now - t > _DOWN_GRACE_S:
                dev = topic.split("/")[-2]
                old[dev] = old.get(dev, 0) + 1
        for name in names:
            lost_down += max(0, old.get(name, 0) - fleet.devices[name].received)
        total = sum(len(v) for v in per.values())
        return [
            (
                "MQTT: every acknowledged message is on its up topic exactly once",
                missing == 0 and dups == 0 and total > 0,
                "%d on up topics, %d acknowledged missing, %d duplicated" % (total, missing, dups),
            ),
            (
                "MQTT: every down message reached its device",
                lost_down == 0 and sum(old.values()) > 0,
                "%d down messages older than %gs, %d not received"
                % (sum(old.values()), _DOWN_GRACE_S, lost_down),
            ),
        ]

    def stop(self):
        self.rec.stop()
        self.broker.stop()
