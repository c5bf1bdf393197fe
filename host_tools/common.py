"""Small helpers shared by the service and the gateway."""

import json
import sys
import time


def log(event, **fields):
    """One JSON line on stderr; bytes fields are written as hex.  Callers never
    pass keys or PSKs (the services hold no secret worth logging)."""
    fields = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in fields.items()}
    sys.stderr.write(
        json.dumps(dict({"ts": round(time.time(), 3), "event": event}, **fields)) + "\n"
    )


def parse_hostport(s, default_host):
    """'host:port' (host may be empty) -> (host, port); ValueError if not."""
    host, _, port = str(s).rpartition(":")
    try:
        return host or default_host, int(port)
    except ValueError:
        raise ValueError("expected host:port, got %r" % (s,)) from None
