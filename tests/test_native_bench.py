"""host_tools.bench.native_crypto: the device benchmark of the public-key
operations (issue 17) runs end to end on the unix port (native x64), with a
replayed PSK handshake, and reports the figures the `pico` section uses."""

from host_tools.bench import native_crypto


def test_native_bench_smoke_on_the_unix_port():
    figs = native_crypto.run_unix(reps=1, fixtures=("psk_x25519",))
    assert figs["x25519_impl"] == "native" and figs["p256_impl"] == "native"
    for k in ("x25519_ms", "ecdsa_p256_sign_ms", "ecdsa_p256_verify_ms", "ed25519_verify_ms"):
        assert figs[k] > 0, k
    assert figs["psk_handshake_cpu_ms"] > 0  # wall clock here: no timing is asserted
    assert figs["x25519_time_spread"] >= 0  # wall clock here: the Pico run is the evidence


def test_parse_takes_the_last_json_line():
    out = 'RESULT junk\n{"x25519_ms": 1.0}\n{"x25519_ms": 136.19, "x25519_impl": "native"}\n'
    assert native_crypto.figures(native_crypto.parse(out)) == {
        "x25519_ms": 136.2,
        "x25519_impl": "native",
        "p256_impl": None,
        "ed25519_impl": None,
    }
