"""Smoke test of the system-level `make bench` sections
(host_tools/bench/, one module per section; docs/BENCHMARKS.md): each runs with tiny
sizes and produces its keys; `python -m host_tools.bench --quick --only ...`
writes them into bench.json.  No timing is asserted; the byte counts that the
protocol fixes (docs/PROTOCOL.md §1-§3) are."""

import json

import pytest

from host_tools import bench
from host_tools.bench.boards import boards
from host_tools.bench.link_overhead import MTUS, link_overhead
from host_tools.bench.runner import wanted
from host_tools.bench.scale import scale, worker_mode
from host_tools.bench.sections import SECTIONS
from host_tools.bench.service_handshakes import service_handshakes
from host_tools.bench.sim_scale import sim_scale
from host_tools.bench.zigbee import zigbee


def _numbers(res, keys):
    for k in keys:
        assert k in res, (k, sorted(res))
        assert isinstance(res[k], (int, float)) and res[k] >= 0, (k, res[k])


def test_link_overhead_quick():
    res = link_overhead(quick=True)
    # PROTOCOL.md §3: DATA = 3-byte header + 1-byte seq + tag; the channel's share is seq + tag
    assert res["data_overhead_bytes_ccm8"] == 12  # link protocol v2: <= 12 (issue 13)
    assert res["data_overhead_bytes_ccm"] == res["data_overhead_bytes_gcm"] == 20
    assert res["cdata_overhead_bytes_ccm8"] == 13
    assert res["channel_share_bytes_ccm8"] == 9
    assert res["ack_bytes_ccm8"] == 11 + 8  # §1: ACK is 11 + tag bytes
    for mtu in MTUS:
        k = "hs_ccm8_mtu%d_" % mtu
        _numbers(
            res,
            [
                k + s
                for s in (
                    "up_tls_bytes",
                    "up_wire_bytes",
                    "down_tls_bytes",
                    "down_wire_bytes",
                    "datagrams",
                    "framing_pct",
                )
            ],
        )
        # §2: every fragment costs 5 bytes and the client's Finished is HS_ACKed (5 bytes)
        frags = res[k + "datagrams"] - 1
        assert (
            res[k + "up_wire_bytes"] + res[k + "down_wire_bytes"]
            == res[k + "up_tls_bytes"] + res[k + "down_tls_bytes"] + 5 * frags + 5
        )
    assert (
        res["hs_ccm8_tls_bytes"]
        == res["hs_ccm8_mtu64_up_tls_bytes"] + res["hs_ccm8_mtu64_down_tls_bytes"]
    )
    assert res["anchor_ietf_tls13_psk_ecdhe_bytes"] == 370


def test_service_handshakes_quick():
    res = service_handshakes(quick=True)
    _numbers(
        res,
        [
            "raw_openssl_server_hs_per_s",
            "raw_openssl_loop_hs_per_s",
            "bare_serverconnection_server_hs_per_s",
            "service_server_hs_per_s",
            "service_mtu66_server_hs_per_s",
            "service_udp_wall_hs_per_s",
            "ratio_service_vs_raw_openssl",
            "service_udp_handshakes",
        ],
    )
    assert res["service_udp_handshakes"] > 0
    assert res["openssl"].startswith("OpenSSL")


def test_zigbee_quick():
    res = zigbee(quick=True)
    for np in (66, 84):
        k = "np%d_" % np
        _numbers(
            res,
            [
                k + s
                for s in (
                    "hs_frames_on_air",
                    "hs_air_bytes",
                    "hs_airtime_ms",
                    "msg16_up_frames",
                    "msg16_up_air_bytes",
                )
            ],
        )
        # sim/radio.py: every frame carries 30 bytes of PHY/MAC/NWK/APS overhead
        assert (
            res[k + "hs_air_bytes"]
            == res[k + "hs_payload_bytes"] + 30 * res[k + "hs_frames_on_air"]
        )
        assert res[k + "msg16_up_frames"] == 2  # DATA up, ACK down
        assert res[k + "msg16_up_air_bytes"] == (16 + 12) + (11 + 8) + 2 * 30
    for path in ("gateway_zigbee", "gateway_udp", "relay_udp"):
        _numbers(
            res,
            [
                "%s_66B_%s" % (path, s)
                for s in ("up_per_s", "down_per_s", "up_cpu_us", "down_cpu_us")
            ],
        )
    _numbers(res, ["ratio_gateway_zigbee_vs_relay_66B_wall"])
    assert "ratio_gateway_zigbee_vs_relay_66B_cpu" in res  # None when the phases are too short
    assert res["lost"] == 0


def test_sim_scale_quick():
    res = sim_scale(quick=True)
    for n in (2, 4):
        k = "n%d_" % n
        _numbers(
            res,
            [
                k + s
                for s in (
                    "wall_s",
                    "all_up_s",
                    "device_peak_rss_kb_max",
                    "devices_peak_rss_mb_total",
                    "service_peak_rss_kb",
                )
            ],
        )
        assert res[k + "up"] == n
        assert res[k + "verdict"] == "pass", res.get(k + "failed_checks")
    _numbers(res, ["growth_wall_x", "growth_all_up_x"])


def test_boards():
    res = boards()
    _numbers(
        res,
        [
            "mpy_bytes_esp32",
            "mpy_bytes_pico_w",
            "mpy_bytes_unix",
            "import_ram_bytes_unix",
            "import_modules",
        ],
    )
    assert res["import_failed"] == 0


@pytest.mark.parametrize(
    "only, runs",
    [
        ("link_overhead", ["link_overhead"]),
        ("aead,zigbee", ["zigbee"]),  # sections by substring, several words
        ("memory", []),
        ("scale", ["scale"]),  # a section's whole name: not sim_scale too
        ("sim", ["sim_scale"]),
        (None, [n for n, _ in SECTIONS]),
    ],
)
def test_only_selects_sections(only, runs):
    assert [n for n, _ in SECTIONS if wanted(n, only)] == runs


def test_bench_main_quick_writes_sections(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"sections": {"aead": {"metrics": {"kept": 1}}}}))
    assert bench.main(["--quick", "--only", "link_overhead,boards", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    secs = data["sections"]
    assert set(secs) == {"aead", "link_overhead", "boards"}  # earlier results are kept
    assert secs["link_overhead"]["quick"] is True
    assert secs["link_overhead"]["metrics"]["data_overhead_bytes_ccm8"] == 12
    assert "mpy_bytes_esp32" in secs["boards"]["metrics"]
    assert "machine" in data
    printed = capsys.readouterr().out
    assert "== link_overhead (quick)" in printed and "data_overhead_bytes_ccm8" in printed


def test_scale_quick():
    """Section scale at tiny size: the load generator against the real
    service (2 workers, Redis and nginx when the service has worker mode),
    the kill test, one worker against raw OpenSSL."""
    res = scale(quick=True)
    assert "error" not in res, res
    assert res["devices"] == 16 and res["lost"] == 0 and res["duplicated"] == 0
    assert res["acknowledged"] == res["sent"] > 0
    _numbers(
        res,
        [
            "handshakes_per_s",
            "messages_per_s",
            "cpu_us_per_msg_8",
            "cpu_us_per_msg_16",
            "cpu_us_per_handshake_16",
            "raw_openssl_server_hs_per_cpu_s",
            "single_worker_vs_raw_openssl",
            "single_worker_vs_raw_openssl_same_client",
            "floor_engine_link_vs_raw_openssl",
        ],
    )
    assert res["floor_engine_link_vs_raw_openssl"] < 1.5  # the TLS engine is OpenSSL's work
    if worker_mode():
        assert res["workers"] == 2 and res["redis"] and res["nginx"]
        assert res["kill_lost"] == res["kill_duplicated"] == res["kill_rehandshakes"] == 0
        assert res["kill_recovered_devices"] == res["kill_worker_sessions"] > 0
        assert res["kill_recovery_ms"] > 0 and res["kill_all_next_acked_ms"] > 0
