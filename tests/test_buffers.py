"""atls.buffers (issue 17): the fixed buffers allocated before the firmware's
imports.  On the emulated Pico the XBee UART's 2 KiB ring failed at boot with
~30 KiB of the heap free, in pieces ("MemoryError allocating 2049 bytes"):
early() opens the UART (its rings) first and from_board takes that UART instead
of opening it again (which would allocate both rings anew in the cut heap).
The heap-limited check of the P-256 workspace is tests/test_p256_prepare.py."""

import json
import sys
import types

import pytest
from conftest import ROOT

from atls import buffers
from atls.drivers.xbee import from_board

PICO = json.loads((ROOT / "boards/pico_w/board_config.json").read_text())
UNIX = json.loads((ROOT / "boards/unix/board_config.json").read_text())


class _UART:
    made = []

    def __init__(self, uid, **kw):
        self.args = (uid, kw)
        _UART.made.append(self)

    def write(self, data):
        return len(data)

    def readinto(self, buf):
        return None


@pytest.fixture
def board(tmp_path, monkeypatch):
    """write(board, dev) -> the paths early() reads; machine.UART is _UART."""
    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace(UART=_UART))
    monkeypatch.setattr(buffers, "_HELD", {})
    _UART.made = []

    def write(b, dev):
        (tmp_path / "b.json").write_text(json.dumps(b))
        (tmp_path / "d.json").write_text(json.dumps(dev) if isinstance(dev, dict) else dev)
        return str(tmp_path / "b.json"), str(tmp_path / "d.json")

    return write


def test_early_opens_the_board_uart_and_from_board_takes_it(board):
    dev = {"device_id": "d", "link": {"xbee": {"baudrate": 921600}}}
    assert buffers.early(*board(PICO, dev)) == ["uart", "x25519"]
    (u,) = _UART.made
    assert u.args == (
        0,
        {"baudrate": 921600, "timeout": 0, "tx": 0, "rx": 1, "txbuf": 2048, "rxbuf": 2048},
    )
    _, x = buffers.link_config(PICO, dev)
    for _ in range(2):  # the supervisor's restarts open the link again: the same UART
        assert from_board(x).stream is u
    assert len(_UART.made) == 1
    other = dict(x, rxbuf=512)  # other arguments: a UART opened with them
    assert from_board(other).stream is not u and _UART.made[-1].args[1]["rxbuf"] == 512


def test_early_reserves_the_workspaces_of_the_configured_curves(board):
    cert = {"device_id": "d", "tls": {"ca": "00", "server_name": "s"}}
    assert buffers.early(*board(UNIX, cert)) == ["x25519", "p256"]  # default groups
    for name in ("x25519", "p256"):
        w = buffers._HELD[name]
        assert buffers.take(name) is w and len(w) == buffers.SIZES[name]
        assert buffers.take(name) is not w  # taken once: a later caller gets its own
    group = {"device_id": "d", "tls": {"psk": "00", "groups": ["secp256r1"]}}
    assert buffers.early(*board(UNIX, group)) == ["p256"]
    psk = {"device_id": "d", "tls": {"psk": "00", "groups": ["x25519", "secp256r1"]}}
    assert buffers.early(*board(UNIX, psk)) == ["x25519"]


@pytest.mark.parametrize(
    "b, dev",
    [
        # an emulated module over TCP, no uart id; groups with neither curve
        (PICO, {"link": {"xbee": {"tcp": "127.0.0.1:1"}}, "tls": {"groups": ["ffdhe2048"]}}),
        (PICO, "{not json"),  # the application reports it (ConfigError), not early()
        ({"link": {"type": "xbee"}, "xbee": {"ap": 2}}, {"tls": {"groups": ["ffdhe2048"]}}),
    ],
)
def test_early_leaves_alone_what_it_need_not_or_cannot_do(board, b, dev):
    assert buffers.early(*board(b, dev)) == []
    assert _UART.made == [] and buffers._HELD == {}


def test_early_without_files_or_uart_never_raises(board, monkeypatch, tmp_path):
    assert buffers.early(str(tmp_path / "none.json"), str(tmp_path / "none.json")) == []
    monkeypatch.setitem(sys.modules, "machine", types.SimpleNamespace())  # the unix port
    assert buffers.early(*board(PICO, {"device_id": "d"})) == ["x25519"]  # no UART


def test_supervisor_main_reserves_before_it_imports_the_app():
    """The order is the point: early() first, then `from atls import app`."""
    src = (ROOT / "firmware/atls/supervisor.py").read_text()
    body = src[src.index("def main(") :]
    assert body.index("buffers.early(") < body.index("from atls import app")
