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
    from atls.protocol import CDATA, DATA

    def unchecked(self, pkt, own=False):
        if pkt[0] == DATA:
            return b"forged"
        return b"\x00forged" if pkt[0] == CDATA else b""  # CDATA: sealed channel byte

    monkeypatch.setattr(Channel, "open", unchecked)
    st = fuzz(build_targets(corpus, ["link"])["link"], 1500, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"])


def test_wire_property_catches_a_non_injective_decode(corpus, monkeypatch):
    """A decode that ignores the version bit (§1) takes version-1 packets as
    version 2: they re-encode with the bit set, so the wire target must
    report a violation.  Empty input goes to the real decoder unchanged."""
    from atls import wire
    from atls.protocol import VERSION_BIT

    real = wire.decode

    def sloppy(d, tag_len=None, max_len=None):
        if len(d):
            d = bytes((d[0] | VERSION_BIT,)) + bytes(d[1:])  # ignores the version
        return real(d, tag_len, max_len)

    monkeypatch.setattr(wire, "decode", sloppy)
    st = fuzz(build_targets(corpus, ["wire"])["wire"], 4000, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"])


def test_pairing_property_catches_a_decode_that_ignores_the_version(corpus, monkeypatch):
    """§8.1: a REQUEST of another pairing version taken as version 2 does not
    re-encode to its bytes; the pairing target must call it a violation."""
    from atls import pairing

    real = pairing.decode

    def sloppy(packet):
        if len(packet) > 1 and packet[0] == pairing.MARKER | pairing.REQUEST:
            packet = bytes(packet[:1]) + bytes((pairing.VERSION,)) + bytes(packet[2:])
        return real(packet)

    monkeypatch.setattr(pairing, "decode", sloppy)
    st = fuzz(build_targets(corpus, ["pairing"])["pairing"], 4000, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"])
