"""The gateway's ZigBee network security (host_tools/gateway/cli.py
secure_coordinator, docs/BOARDS.md): EE=1, EO=2, a random NK and the
configured KY written to the coordinator once, the keys kept 0600 and never
logged; a bad zigbee_security config is refused."""

import asyncio
import json
import stat

import pytest

from host_tools.gateway import Config, GatewayError
from host_tools.gateway.cli import secure_coordinator

KY = "5a6967426565416c6c69616e63653039"


class FakeCoordinator:
    def __init__(self):
        self.ee = 0
        self.written = []

    async def at(self, command, parameter=b""):
        if command == b"EE" and not parameter:
            return 0, bytes((self.ee,))
        if command == b"EE":
            self.ee = parameter[0]
        self.written.append((command, bytes(parameter)))
        return 0, b""


def _config(tmp_path, zs):
    p = tmp_path / "g.json"
    body = {"services": {"default": "127.0.0.1:9"}, "state_dir": "st"}
    if zs is not None:
        body["zigbee_security"] = zs
    p.write_text(json.dumps(body))
    return Config(p)


def test_coordinator_secured_once_keys_0600_never_logged(tmp_path, capsys):
    cfg = _config(tmp_path, {"link_key": KY})
    c = FakeCoordinator()
    asyncio.run(secure_coordinator(c, cfg))
    cmds = [w[0] for w in c.written]
    assert cmds == [b"EE", b"EO", b"NK", b"KY", b"WR"]
    w = dict(c.written)
    assert w[b"EE"] == b"\x01" and w[b"EO"] == b"\x02" and w[b"KY"].hex() == KY
    nk = w[b"NK"]
    assert len(nk) == 16 and nk != bytes(16)
    keys = tmp_path / "st" / "zigbee-keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert json.loads(keys.read_text())["nk"] == nk.hex()
    out = capsys.readouterr()
    assert nk.hex() not in out.out + out.err and KY not in out.out + out.err
    # a restart: the coordinator already runs EE=1 with these keys: nothing written
    c.written = []
    asyncio.run(secure_coordinator(c, cfg))
    assert c.written == []
    # a new link key in the config: written again, the network key kept
    cfg2 = _config(tmp_path, {"link_key": "00" * 15 + "01"})
    asyncio.run(secure_coordinator(c, cfg2))
    w2 = dict(c.written)
    assert w2[b"KY"] == bytes(15) + b"\x01" and w2[b"NK"] == nk


def test_no_zigbee_security_leaves_the_coordinator_alone(tmp_path):
    c = FakeCoordinator()
    asyncio.run(secure_coordinator(c, _config(tmp_path, None)))
    assert c.written == [] and not (tmp_path / "st" / "zigbee-keys.json").exists()


def test_random_link_key_when_none_given(tmp_path):
    c = FakeCoordinator()
    asyncio.run(secure_coordinator(c, _config(tmp_path, {})))
    ky = dict(c.written)[b"KY"]
    assert len(ky) == 16 and ky != bytes(16)


@pytest.mark.parametrize(
    "zs", [{"link_key": "12"}, {"link_key": "zz" * 16}, {"nk": KY}, "on", {"link_key": 5}]
)
def test_bad_zigbee_security_config_is_refused(tmp_path, zs):
    with pytest.raises(GatewayError, match="zigbee_security"):
        _config(tmp_path, zs)


def test_register_zigbee_writes_digis_register_joining_device_frame(tmp_path):
    """`pair --zigbee-install-code`: the 0x24 frame the coordinator gets is
    the one Digi's library builds; a mistyped code is refused."""
    from digi.xbee.models.address import XBee64BitAddress
    from digi.xbee.models.options import RegisterKeyOptions
    from digi.xbee.packets.zigbee import RegisterJoiningDevicePacket

    from host_tools.gateway import Gateway
    from host_tools.gateway.control import dispatch
    from host_tools.install_code import format_code, new_install_code

    class Raw:
        def __init__(self):
            self.data = b""

        def write(self, b):
            self.data += bytes(b)

    gw = Gateway(_config(tmp_path, None))
    gw.serial = Raw()
    code = new_install_code()
    addr = bytes.fromhex("0013A20041000007")
    req = {"cmd": "register_zigbee", "addr64": addr.hex(), "install_code": format_code(code)}
    assert dispatch(gw, req) == {"ok": True}
    digi = RegisterJoiningDevicePacket(
        0, XBee64BitAddress(bytearray(addr)), RegisterKeyOptions.INSTALL_CODE, bytearray(code)
    )
    assert gw.serial.data == bytes(digi.output())
    bad = dict(req, install_code=format_code(code)[:-1] + "X")
    with pytest.raises(GatewayError, match="register_zigbee"):
        dispatch(gw, bad)
