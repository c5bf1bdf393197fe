"""The load generator's service application (host_tools.loadgen.app:CountingApp
in service.json): records every message the service delivers, so the load
generator can count lost and duplicated messages exactly.

A message is `n` as 8 hex digits, padded (fleet.payload).  Each delivery is
one line `identity n` appended to `record-<pid>.txt` in the directory named
by ATLS_LOADGEN_RECORD, written (line-buffered) before on_message returns,
so before the link acknowledges it: a worker killed with SIGKILL has written
every message it acknowledged.  The application does not de-duplicate: that
is the service's job, and a duplicate shows up as a second line.
"""

import os

__all__ = ["CountingApp", "RECORD_ENV"]

RECORD_ENV = "ATLS_LOADGEN_RECORD"


class CountingApp:
    def __init__(self, directory=None):
        self.dir = directory or os.environ.get(RECORD_ENV) or "."
        self.pid = self.out = None  # opened in the process that delivers (workers fork)

    def on_connect(self, session):
        pass

    def on_close(self, session, reason):
        pass

    def _file(self):
        if self.pid != os.getpid():
            os.makedirs(self.dir, exist_ok=True)
            self.pid = os.getpid()
            self.out = open(os.path.join(self.dir, "record-%d.txt" % self.pid), "a", buffering=1)
        return self.out

    def on_message(self, session, payload):
        self._file().write(
            "%s %s\n" % (session.identity, bytes(payload[:8]).decode("ascii", "replace"))
        )
