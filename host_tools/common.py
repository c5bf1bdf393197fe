"""Small helpers shared by the service and the gateway."""

import json
import sys
import time

_dumps = json.dumps


def log(event, **fields):
    """One JSON line on stderr; bytes fields are written as hex.  Callers never
    pass keys or PSKs (the services hold no secret worth logging).  One
    json.dumps of the caller's own keyword dict: the service logs every
    handshake."""
    for k, v in fields.items():
        if isinstance(v, bytes):
            fields[k] = v.hex()
    ts = fields.pop("ts", None)
    ts = repr(round(time.time(), 3)) if ts is None else _dumps(ts)  # json's float form
    event = '"%s"' % event if event.isidentifier() else _dumps(event)
    rest = ", " + _dumps(fields)[1:] if fields else "}"
    sys.stderr.write('{"ts": %s, "event": %s%s\n' % (ts, event, rest))


def parse_hostport(s, default_host):
    """'host:port' (host may be empty) -> (host, port); ValueError if not."""
    host, _, port = str(s).rpartition(":")
    try:
        return host or default_host, int(port)
    except ValueError:
        raise ValueError("expected host:port, got %r" % (s,)) from None
