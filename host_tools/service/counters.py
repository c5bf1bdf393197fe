"""The service's counters in one place: what `--stats` writes and /metrics
(host_tools.service.metrics) reads.  Dicts count by reason."""

__all__ = ["new_counters"]

_NAMES = (
    "datagrams_in datagrams_out sessions_active sessions_total half_open handshakes_ok"
    " handshakes_failed messages_in messages_out unvalidated_bytes_in unvalidated_bytes_out"
    " duplicates_suppressed messages_moved resets_sent"
    " channel_refused"  # messages on a channel the device was not granted
    " bytes_in bytes_out"  # UDP
).split()


def new_counters():
    """A fresh counter dict of a Service."""
    c = dict.fromkeys(_NAMES, 0)
    c["max_amplification"] = 0.0
    c["handshake_failures"] = {}  # reason (the alert we sent, not_registered) -> count
    c["drops"] = {}  # reason -> packets dropped
    return c
