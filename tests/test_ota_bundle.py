"""Signed bundles and the update-channel messages (issue 20) in CPython:
docs/OTA.md's worked bundle and docs/PROTOCOL.md's channel-2 examples checked
both ways, the header parser's bounds and fuzzing (only BundleError
escapes), the release key's file handling, `make release`, and the store."""

import os
import random
import re
import stat

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives.asymmetric import ed25519

from atls.errors import DecodeError
from atls.ota import bundle as dev_bundle
from atls.ota import wire
from host_tools.ota import bundle, keys, release
from host_tools.ota.store import BundleStore


def doc_blocks(doc, fence, after=None):
    text = (ROOT / "docs" / doc).read_text()
    if after:
        text = text.split(after, 1)[1]
    out = []
    for block in re.findall(r"```%s\n(.*?)```" % fence, text, re.S):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1].isspace():
                fields[key] += " " + line.strip()
            elif line.strip():
                key, _, v = line.partition(":")
                key = key.strip()
                fields[key] = v.strip()
        out.append(fields)
    return out


def hexb(s):
    return bytes.fromhex(s.replace(" ", ""))


def test_ota_md_worked_bundle_both_ways():
    (ex,) = doc_blocks("OTA.md", "ota-bundle")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hexb(ex["secret_key"]))
    files = []
    for item in ex["files"].split(","):
        path, content = item.split()
        files.append((path, hexb(content)))
    data = bundle.build(files, ex["version"], ex["min_version"], ex["board"], key)
    assert data == hexb(ex["bundle"])  # fields -> bytes (Ed25519 is deterministic)
    b = bundle.Bundle(hexb(ex["bundle"]), key.public_key().public_bytes_raw())  # bytes -> fields
    assert (b.version, b.min_version, b.board) == (ex["version"], ex["min_version"], ex["board"])
    assert [(p, n) for p, n, _ in b.header.files()] == [(p, len(c)) for p, c in files]
    assert b.id.hex() == ex["id"]


def test_protocol_md_channel2_examples_both_ways():
    exs = doc_blocks("PROTOCOL.md", "ota-example", after="## Firmware update channel")
    assert sorted({e["type"] for e in exs}) == ["CHUNK", "OFFER", "STATUS"]
    for e in exs:
        msg = hexb(e["message"])
        t, f = wire.pull(msg)
        if e["type"] == "OFFER":
            v = tuple(int(x) for x in e["version"].split("."))
            assert (t, f) == (wire.OFFER, (v, int(e["total"]), hexb(e["id"])))
            assert wire.push_offer(v, int(e["total"]), hexb(e["id"])) == msg
        elif e["type"] == "CHUNK":
            assert t == wire.CHUNK and f[0] == int(e["offset"]) and bytes(f[1]) == hexb(e["data"])
            assert wire.push_chunk(int(e["offset"]), hexb(e["data"])) == msg
        else:
            assert (t, f) == (wire.STATUS, (int(e["code"]), int(e["offset"])))
            assert wire.push_status(int(e["code"]), int(e["offset"])) == msg
    # the OFFER example names the OTA.md bundle
    (ex,) = doc_blocks("OTA.md", "ota-bundle")
    offer = next(e for e in exs if e["type"] == "OFFER")
    assert offer["id"] == ex["id"] and int(offer["total"]) == len(hexb(ex["bundle"]))


def test_wire_rejects_wrong_lengths_and_types():
    for bad in (b"", b"\x01" * 18, b"\x01" * 20, b"\x02\x00\x00\x00\x00", b"\x81" * 5, b"\x03"):
        with pytest.raises(DecodeError):
            wire.pull(bad)
    with pytest.raises(DecodeError):
        wire.pull(wire.push_chunk(0, b"x" * (wire.MAX_CHUNK + 1)))


def _key():
    return ed25519.Ed25519PrivateKey.generate()


def test_signature_hash_and_size_checks():
    k = _key()
    data = bundle.build([("atls/a.mpy", b"abc")], "1.0.0", "0.0.0", "esp32", k)
    pub = k.public_key().public_bytes_raw()
    bundle.Bundle(data, pub)
    with pytest.raises(dev_bundle.BundleError, match="signature"):
        bundle.Bundle(data, _key().public_key().public_bytes_raw())
    with pytest.raises(dev_bundle.BundleError, match="hash"):
        bundle.Bundle(data[:-1] + b"X", pub)
    with pytest.raises(dev_bundle.BundleError):
        bundle.Bundle(data + b"X")
    signed = bytearray(data)
    signed[9] ^= 1  # the version, under the signature
    with pytest.raises(dev_bundle.BundleError, match="signature"):
        bundle.Bundle(bytes(signed), pub)


@pytest.mark.parametrize(
    "path",
    ["/abs.mpy", "a/../b.mpy", "a//b", "a/./b", "dir/", "x y", "é.mpy", "head", "prog", "prog.tmp"],
)
def test_paths_that_could_leave_the_slot_are_refused(path):
    with pytest.raises(dev_bundle.BundleError):
        dev_bundle.push_header((1, 0, 0), (0, 0, 0), "unix", [(path, 1, bytes(32))])


def test_header_bounds():
    with pytest.raises(dev_bundle.BundleError):
        dev_bundle.push_header((1, 0, 0), (0, 0, 0), "x" * 33, [("a", 1, bytes(32))])
    with pytest.raises(dev_bundle.BundleError):
        dev_bundle.push_header((1, 0, 0), (0, 0, 0), "unix", [])
    with pytest.raises(dev_bundle.BundleError):
        dev_bundle.push_header((1, 0, 0), (0, 0, 0), "unix", [("a", (1 << 20) + 1, bytes(32))])
    many = [("atls/%s%03d.mpy" % ("m" * 50, i), 1, bytes(32)) for i in range(100)]
    with pytest.raises(dev_bundle.BundleError, match="header length"):  # H > 8192
        dev_bundle.push_header((1, 0, 0), (0, 0, 0), "unix", many)
    with pytest.raises(dev_bundle.BundleError, match="min_version"):
        bundle.build([("a", b"")], "1.0.0", "2.0.0", "unix", _key())


def test_header_parser_fuzz_only_bundle_error_escapes():
    rng = random.Random(20)
    files = [("atls/m%d.mpy" % i, bytes([i]) * i) for i in range(1, 6)]
    base = bundle.build(files, "1.2.3", "1.0.0", "pico_w", _key())
    h = dev_bundle.head_len(base)
    for i in range(3000):
        m = bytearray(base[: h + 64])
        for _ in range(rng.randint(1, 4)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        if i % 3 == 0:
            m = m[: rng.randrange(len(m))]
        try:
            dev_bundle.Header(bytes(m))
        except dev_bundle.BundleError:
            pass


def test_release_key_files(tmp_path):
    kp = tmp_path / "rel" / "release.key"
    pub = keys.generate(kp)
    assert stat.S_IMODE(kp.stat().st_mode) == 0o600
    assert stat.S_IMODE(kp.parent.stat().st_mode) == 0o700
    assert keys.load_public(keys.public_path(kp)) == pub == keys.load_public(kp)
    assert b"PRIVATE" not in keys.public_path(kp).read_bytes()
    with pytest.raises(keys.ReleaseKeyError, match="exists"):
        keys.generate(kp)
    os.chmod(kp, 0o644)
    with pytest.raises(keys.ReleaseKeyError, match="readable by others"):
        keys.load_private(kp)
    with pytest.raises(keys.ReleaseKeyError, match="make release-key"):
        keys.load_private(tmp_path / "none.key")


def test_release_cli_keygen_and_errors(tmp_path, capsys):
    # the build itself: tests/test_ota_device.py (its fixture runs release())
    kp = tmp_path / "k" / "release.key"
    assert release.main(["keygen", "--key", str(kp)]) == 0
    assert str(kp) + ".pub" in capsys.readouterr().out
    assert release.main(["keygen", "--key", str(kp)]) == 2
    assert release.main(["release", "--version", "1.2", "--board", "pico_w", "--key", str(kp)]) == 2
    assert "version must be" in capsys.readouterr().err
    assert release.main(["release", "--version", "1.2.0", "--board", "nope", "--key", str(kp)]) == 2
    data = bundle.build([("atls/a.mpy", b"a")], "1.0.0", "0.0.0", "esp32", keys.load_private(kp))
    (tmp_path / "b.atb").write_bytes(data)
    assert release.main(["verify", str(tmp_path / "b.atb"), "--pub", str(kp) + ".pub"]) == 0
    other = tmp_path / "o" / "release.key"
    keys.generate(other)
    assert release.main(["verify", str(tmp_path / "b.atb"), "--pub", str(other) + ".pub"]) == 2
    assert release.main(["info", str(tmp_path / "b.atb")]) == 0
    assert '"board": "esp32"' in capsys.readouterr().out


def test_store_keeps_and_checks_bundles(tmp_path):
    k = _key()
    pub = k.public_key().public_bytes_raw()
    s = BundleStore(tmp_path / "s", public_key=pub)
    b = s.add(bundle.build([("atls/a.mpy", b"a")], "1.0.0", "0.0.0", "esp32", k))
    s2 = BundleStore(tmp_path / "s")
    assert s2.get("esp32", "1.0.0").id == b.id and s2.get("esp32", "2.0.0") is None
    assert s2.boards_with("1.0.0") == ["esp32"] and s2.listing() == [("esp32", "1.0.0")]
    with pytest.raises(dev_bundle.BundleError, match="signature"):
        s.add(bundle.build([("atls/a.mpy", b"a")], "1.1.0", "0.0.0", "esp32", _key()))


def test_provision_takes_the_release_public_key(tmp_path, capsys):
    from host_tools.boards.config import BoardError
    from host_tools.boards.provision import provision

    kw = dict(service="127.0.0.1:5684", registry=str(tmp_path / "reg.json"), dry_run=True)
    with pytest.raises(BoardError, match="release public key"):
        provision("unix", "/dev/ttyX", "dev-1", release_pub=str(tmp_path / "none.pub"), **kw)
    keys.generate(tmp_path / "release.key")
    provision("unix", "/dev/ttyX", "dev-1", release_pub=str(tmp_path / "release.key.pub"), **kw)
    assert not (tmp_path / "reg.json").exists()
