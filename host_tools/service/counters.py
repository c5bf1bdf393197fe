"""The service's counters in one place: what `--stats` writes and /metrics
(host_tools.service.metrics) reads.  Dicts count by reason."""

__all__ = ["new_counters", "STATE_COUNTERS"]

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


# with a state store (service.state_store; these and redis_up are added by attach)
STATE_COUNTERS = (
    "state_commits",  # COMMITs that stored a new version
    "state_conflicts",  # COMMITs refused: another worker had moved the session on
    "state_contended",  # copies forgotten after repeated conflicts (nothing delivered)
    "state_loads",  # sessions this worker took over from Redis
    "state_load_misses",  # packets for a session id found nowhere
    "state_lookups_refused",  # lookups beyond the per-second cap (state_store)
    "state_errors",  # Redis calls that failed
    "state_refused",  # new sessions refused while Redis was unavailable
    "state_lost",  # sessions ended elsewhere or expired while this worker held a copy
    "state_withheld",  # transmissions cut to what was committed (Redis unavailable)
    "state_redelivered",  # hold_acks apps: unreleased messages of a taken-over session
)
