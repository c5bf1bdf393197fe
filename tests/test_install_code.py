"""Install codes and their QR codes (host_tools/install_code.py, docs/BOARDS.md
"Install codes"): the CRC catches a mistyped code, a foreign or damaged QR
code is refused, and `gateway pair --qr` pre-authorises exactly what the QR
code says (the table is written 0600)."""

import json
import stat
import subprocess
import sys

import pytest
from conftest import ROOT

from host_tools.install_code import (
    InstallCodeError,
    crc16_x25,
    format_code,
    new_install_code,
    parse_code,
    parse_payload,
    qr_payload,
    read_qr,
    write_qr,
)


def test_crc16_x25_check_value():
    # the CRC catalogue's check value for CRC-16/X-25 (Zigbee install codes)
    assert crc16_x25(b"123456789") == 0x906E


def test_code_round_trip_and_mistyped_code():
    code = new_install_code()
    assert parse_code(format_code(code)) == code
    text = format_code(code)
    typo = text[:-1] + ("0" if text[-1] != "0" else "1")
    with pytest.raises(InstallCodeError, match="CRC"):
        parse_code(typo)
    with pytest.raises(InstallCodeError, match="36 hex digits"):
        parse_code(text[:-5])
    with pytest.raises(InstallCodeError, match="not hex"):
        parse_code("zz" * 18)


def test_qr_png_round_trip_and_bad_qr_codes(tmp_path):
    code = new_install_code()
    good = tmp_path / "good.png"
    write_qr(qr_payload("dev-01", "default", code), good)
    assert read_qr(good) == ("dev-01", "default", code)
    foreign = tmp_path / "foreign.png"
    write_qr("https://example.com/", foreign)
    with pytest.raises(InstallCodeError, match="not an ATLS install-code QR code"):
        read_qr(foreign)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InstallCodeError, match="not a readable image"):
        read_qr(broken)
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    with pytest.raises(InstallCodeError, match="0 QR codes"):
        read_qr(blank)
    mistyped = tmp_path / "typo.txt"
    mistyped.write_text(qr_payload("dev-01", "default", code)[:-1] + "0")
    if mistyped.read_text() != qr_payload("dev-01", "default", code):
        with pytest.raises(InstallCodeError, match="CRC"):
            read_qr(mistyped)
    with pytest.raises(InstallCodeError, match="device:service:code"):
        parse_payload("ATLS-IC:1:dev-01:%s" % code.hex())


def _gateway(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "host_tools.gateway", *args, "--config", str(tmp_path / "g.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gateway_pair_qr_preauthorises_and_refuses_bad_ones(tmp_path):
    (tmp_path / "g.json").write_text(
        json.dumps({"services": {"default": "127.0.0.1:9"}, "state_dir": "st"})
    )
    code = new_install_code()
    qr = tmp_path / "dev-07.png"
    write_qr(qr_payload("dev-07", "default", code), qr)
    bad = tmp_path / "bad.png"
    write_qr("ATLS-IC:1:dev-08:default:" + "00" * 18, bad)
    r = _gateway(tmp_path, "pair", "--qr", str(bad))
    assert r.returncode == 2 and "CRC mismatch" in r.stderr
    other = tmp_path / "other.png"
    write_qr(qr_payload("dev-09", "nosuch", code), other)
    r = _gateway(tmp_path, "pair", "--qr", str(other))
    assert r.returncode == 2 and "service 'nosuch'" in r.stderr
    table = tmp_path / "st" / "pairing.json"
    assert not table.exists()
    r = _gateway(tmp_path, "pair", "--qr", str(qr))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    pre = json.loads(table.read_text())["preauth"]
    assert pre == {"dev-07": {"install_code": code[:16].hex(), "service": "default"}}
    assert code.hex() not in r.stdout + r.stderr  # the gateway does not echo the code
    r = _gateway(tmp_path, "pair", "--install-code", format_code(code))
    assert r.returncode == 2 and "--device" in r.stderr
