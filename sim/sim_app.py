"""The simulator's service application: records every message the service
delivers (so the report can prove nothing was forged, lost or duplicated)
and answers each reading with a command echo.

Readings are JSON objects {"dev": id, "boot": b, "n": k, "t": ms}; the
echo {"cmd": "echo", "boot": b, "n": k} goes once per distinct reading, so
the report can also prove that no service message reached a device's
application twice (it names the reading it answers).  Link
protocol v2 de-duplicates by message id before the application sees a message
(docs/PROTOCOL.md §4), so this application's own check on (device, boot, n)
is a check, not a crutch: it records every delivery, and the report fails
its verdict on any duplicate.  Records go to the JSON-lines file named by
ATLS_SIM_RECORD, one line per delivery: {"id": identity, "boot": b, "n": k,
"dup": bool, "ok": bool, "session": s, "msg_id": the service's message id},
where s names the session that delivered it (this process and the session's
id and start).
"""

import binascii
import json
import os


class RecordingEchoApp:
    def __init__(self, path=None):
        self.path = path or os.environ.get("ATLS_SIM_RECORD", "sim-deliveries.jsonl")
        self.seen = set()
        self.run = binascii.hexlify(os.urandom(4)).decode()  # this service process
        if os.path.exists(self.path):  # a restarted service keeps its application state
            with open(self.path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if r.get("ok") and not r.get("dup"):
                        self.seen.add((r["id"], r.get("boot"), r["n"]))
        self.out = open(self.path, "a", buffering=1)

    def on_connect(self, session):
        pass

    def on_close(self, session, reason):
        pass

    def on_message(self, session, payload):
        ident = session.identity
        try:
            reading = json.loads(payload)
            n = int(reading["n"])
            boot = str(reading.get("boot"))
            ok = reading.get("dev") == ident
        except (ValueError, KeyError, TypeError):
            n, boot, ok = None, None, False
        key = (ident, boot, n)
        dup = key in self.seen
        sess = "%s:%s:%s" % (self.run, session.sid, session.started_ms)
        rec = {"id": ident, "boot": boot, "n": n, "dup": dup, "ok": ok, "session": sess}
        rec["msg_id"] = getattr(session, "last_msg_id", None)
        self.out.write(json.dumps(rec) + "\n")
        if not ok or dup:
            return
        self.seen.add(key)
        session.send(
            json.dumps({"cmd": "echo", "boot": boot, "n": n}, separators=(",", ":")).encode()
        )
