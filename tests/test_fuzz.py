"""The fuzz sample of `make test` (the bulk is `make soak`, tests/fuzz).

Every target gets a few thousand seeded mutants of real traffic (the firmware
client and DeviceSession against the service's OpenSSL engine, link
conversations, XBee frames, pairing packets) under CPython and a sample under
the MicroPython unix port: only success or the project's typed errors may come
out, and no acceptance property may fail (a modified sealed or signed input
accepted, a decode that does not re-encode).  The self-tests check that the
properties do catch a parser that accepts too much (issue 21, item 6).
"""

import json

import pytest
from fuzz import corpus as corpus_mod
from fuzz.mutate import Rng, mutate
from fuzz.runner import TARGETS, build_targets, fuzz

from host_tools.toolchain import FIRMWARE, ROOT

SAMPLE = {
    "wire": 20000,
    "pairing": 20000,
    "xbee": 5000,
    "link": 5000,
    "tls": 3000,
    "session": 1500,
    "x509": 3000,
}
MPY_SAMPLE = {
    "wire": 2000,
    "pairing": 2000,
    "xbee": 600,
    "link": 600,
    "tls": 150,
    "session": 100,
    "x509": 300,
}


@pytest.fixture(scope="module")
def corpus():
    return corpus_mod.build()


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_sample_only_typed_errors_and_properties_hold(corpus, name):
    st = fuzz(build_targets(corpus, [name])[name], SAMPLE[name], seed=12)
    assert st["failures"] == [], st["failures"][:3]
    assert st["inputs"] == SAMPLE[name]


def test_fuzz_sample_under_the_unix_port(corpus, mpy, tmp_path):
    path = tmp_path / "corpus.json"
    corpus_mod.save(corpus, path)
    args = [str(path), "12"] + ["%s=%d" % kv for kv in MPY_SAMPLE.items()]
    r = mpy.run(
        script=str(ROOT / "tests" / "fuzz" / "mpy_main.py"),
        args=args,
        env={"MICROPYPATH": ":".join([str(FIRMWARE), str(ROOT / "tests")])},
    )
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.lines if line.startswith("{")]
    assert [g["target"] for g in got] == list(MPY_SAMPLE)
    for g in got:
        assert g["failures"] == [], g
        assert g["inputs"] == MPY_SAMPLE[g["target"]]


def test_mutator_is_seeded_and_mutates():
    a = [mutate(Rng(i), b"\xa0\x00\x00\x01\x02hello", [b"other"]) for i in range(200)]
    b = [mutate(Rng(i), b"\xa0\x00\x00\x01\x02hello", [b"other"]) for i in range(200)]
    assert a == b
    assert sum(m != b"\xa0\x00\x00\x01\x02hello" for m in a) > 190


def test_link_property_catches_a_channel_that_skips_authentication(corpus, monkeypatch):
    """With the AEAD check gone, modified DATA/ACK/CLOSE packets get in: the
    link target must report them as violations, not as successes."""
    from atls.channel import Channel

    def unchecked(self, pkt, own=False):
        return b"forged" if pkt[0] == 3 else b""

    monkeypatch.setattr(Channel, "open", unchecked)
    st = fuzz(build_targets(corpus, ["link"])["link"], 1500, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"])


def test_wire_property_catches_a_non_injective_decode(corpus, monkeypatch):
    from atls import wire

    real = wire.decode

    def sloppy(d, tag_len=None, max_len=None):
        return real(bytes((d[0] & 0xEF,)) + bytes(d[1:]), tag_len, max_len)  # ignores the version

    monkeypatch.setattr(wire, "decode", sloppy)
    st = fuzz(build_targets(corpus, ["wire"])["wire"], 4000, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"])
