"""docs/PROTOCOL.md §8.4 worked examples: each `pairing-example` block is
parsed (`key: value` lines, values continue on indented lines, hex may hold
spaces) and checked two ways: against atls.pairing (fields -> packets and
packets -> fields) and against an independent computation of §8.2 with
`cryptography`'s X25519, hashlib and hmac."""

import hashlib
import hmac
import re

from conftest import ROOT
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from atls import pairing as P


def blocks():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = text[text.index("## 8. Pairing") :]
    out = []
    for body in re.findall(r"```pairing-example\n(.*?)```", section, re.S):
        fields, key = {}, None
        for line in body.splitlines():
            if line.startswith(" ") and key:
                fields[key] += line.strip()
            elif line.strip():
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        out.append({k: v.replace(" ", "") for k, v in fields.items()})
    return out


def _x(v):
    return bytes.fromhex(v)


def _pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


def _hkdf(salt, ikm, info):
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # L = 32: one block


def _tag(k, label):
    return hmac.new(k, label, hashlib.sha256).digest()[:16]


def test_there_are_two_examples():
    assert len(blocks()) == 2


def test_worked_examples_section_8_4():
    for f in blocks():
        ad, ag = _x(f["device_addr64"]), _x(f["gateway_addr64"])
        d, g = _x(f["device_private"]), _x(f["gateway_private"])
        nd, ng = _x(f["Nd"]), _x(f["Ng"])
        pd, pg = _pub(d), _pub(g)
        ic = _x(f["install_code"]) if "install_code" in f else None
        # independent: §8.2 by hand
        commit = hashlib.sha256(b"atls-pair2 commit" + pd + nd).digest()[:16]
        req = _x(f["request"])
        assert req[3:19] == commit and req[2] == (1 if ic else 0)
        resp = bytes([0xB4]) + ng + pg + ag + bytes([6]) + b"gw-lab"
        th = hashlib.sha256(b"atls-pair2" + ad + ag + req + resp + pd + nd).digest()
        assert th.hex() == f["th"]
        shared = X25519PrivateKey.from_private_bytes(d).exchange(
            X25519PublicKey.from_public_bytes(pg)
        )
        k = _hkdf(ic, shared, b"atls-pair2 key" + th)
        assert k.hex() == f["K"]
        assert f["accept"] == "b1" + _tag(k, b"accept").hex()
        proof = _tag(k, b"device") if ic else b""
        assert f["reveal"] == (bytes([0xB5]) + pd + nd + proof).hex()
        if "code" in f:
            n = int.from_bytes(hashlib.sha256(b"atls-pair2 code" + th).digest()[:4], "big")
            assert f["code"] == "%06d" % (n % 1000000)
            assert f["Pd"] == pd.hex() and f["Pg"] == pg.hex() and f["commit"] == commit.hex()
            assert f["shared"] == shared.hex() and f["response"] == resp.hex()
            assert f["not_paired"] == "b6" + _tag(k, b"not paired").hex()
        # atls.pairing, both ways
        mode = P.MODE_INSTALL_CODE if ic else P.MODE_CODE
        assert P.encode_request(mode, P.commitment(pd, nd), "dev-01", "default") == req
        assert P.decode(req) == ("request", mode, commit, "dev-01", "default")
        assert P.encode_response(ng, pg, ag, "gw-lab") == resp
        assert P.decode(resp) == ("response", ng, pg, ag, "gw-lab")
        assert P.decode(_x(f["reveal"])) == ("reveal", pd, nd, proof)
        assert P.transcript(ad, ag, req, resp, pd, nd) == th
        assert P.pairing_key(shared, th, ic) == k
        assert P.encode_reply(P.ACCEPT, tag=P.tag(k, b"accept")).hex() == f["accept"]
        if "code" in f:
            assert P.confirmation_code(th) == f["code"]
            assert P.decode(_x(f["not_paired"])) == ("not_paired", _tag(k, b"not paired"))
