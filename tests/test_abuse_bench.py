"""Section `abuse` (issue 14) at small scale: the harness runs the real
service and gateway processes under a few seconds of flood and reports every
figure docs/BENCHMARKS.md names; the gateway's file descriptors stay bounded
by its quotas, not by the number of spoofed sources."""

from host_tools.bench.abuse import abuse
from host_tools.bench.sections import SECTIONS

KEYS = (
    "honest_handshake_success",
    "honest_p95_ms",
    "service_rss_growth_mb",
    "max_amplification",
    "gateway_honest_success",
    "fds_max",
    "spoof_rate_achieved",
    "gateway_spoof_rate_achieved",
)


def test_abuse_small_scale_reports_every_figure():
    res = abuse(quick=True, seconds=3.0, sources=100, gw_sources=600, polls=20, honest=5)
    for k in KEYS:
        assert k in res, k
    assert res["spoof_sent"] > 0 and res["spoof_rate_achieved"] > 0
    assert res["honest_attempts"] >= 5 and res["gateway_honest_attempts"] >= 5
    assert res["max_amplification"] is not None and res["service_rss_growth_mb"] >= 0
    assert res["longpoll_session_up"] is True and res["longpoll_max_open"] == 20
    # 600 spoofed sources on 50 addresses: the gateway holds at most its
    # unvalidated quota of sockets (256 by default) plus its listeners
    assert 0 < res["gateway_fds_max"] < 256 + 40
    assert "no_flow" in res["gateway_drops"] or "not_atls" in res["gateway_drops"]


def test_abuse_is_a_bench_section():
    assert "abuse" in dict(SECTIONS)
