"""The fuzz harness's acceptance properties catch what they are for (issue
21, item 6): with a check of the TLS record layer or of certificate chains
taken out, the TLS and X.509 targets report violations rather than quietly
counting the accepted mutants as successes.  (tests/test_fuzz.py does the
same for the link and wire targets.)"""

import pytest
from fuzz import corpus as corpus_mod
from fuzz.runner import build_targets, fuzz


@pytest.fixture(scope="module")
def corpus():
    return corpus_mod.build()


def test_fuzz_samples_with_every_check_in_place_are_clean(corpus):
    # the same samples as below, with every check in place: no failure
    for name, n in (("tls", 1500), ("x509", 1500)):
        st = fuzz(build_targets(corpus, [name])[name], n, seed=12)
        assert st["failures"] == [], (name, st["failures"][:3])


def test_tls_property_catches_a_record_layer_that_ignores_its_header(corpus, monkeypatch):
    """A protected record's header is its AAD (RFC 8446 §5.2): opened as if
    its header were the genuine one, a flight with a modified record header
    gets through and the TLS target must call it a violation."""
    from atls.tls.record import RecordProtection

    real = RecordProtection.open

    def sloppy(self, header, body):
        return real(self, b"\x17\x03\x03" + bytes(header[3:5]), body)

    monkeypatch.setattr(RecordProtection, "open", sloppy)
    st = fuzz(build_targets(corpus, ["tls"])["tls"], 1500, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"]), st["failures"][:3]


def test_x509_property_catches_a_chain_check_that_skips_signatures(corpus, monkeypatch):
    from atls import x509_chain

    monkeypatch.setattr(x509_chain, "verify_signed_by", lambda cert, issuer: None)
    st = fuzz(build_targets(corpus, ["x509"])["x509"], 1500, seed=12)
    assert any(f["kind"] == "violation" for f in st["failures"]), st["failures"][:3]
