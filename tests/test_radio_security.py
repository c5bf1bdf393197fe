"""ZigBee network security in the emulated radio (sim/radio, docs/BOARDS.md
"ZigBee network security"): EE=1 with a trust-center link key, install-code
registration (Register Joining Device 0x24, XBee 3 Zigbee user guide), and
frames from a radio without the network key never delivered."""

from test_radio import Net

from atls import xbee as X
from host_tools.install_code import register_device_frame
from sim.radio.module import BAD_LINK_KEY

KY = bytes(range(1, 17))


def secure(net):
    """The gateway's start-up on the coordinator (host_tools.gateway.cli)."""
    for cmd, v in ((b"EE", b"\x01"), (b"EO", b"\x02"), (b"NK", b"\x00"), (b"KY", KY)):
        assert net.at(net.c, cmd, v)[0] == X.AT_OK
    net.at(net.c, b"NJ", b"\x3c")
    net.clock.advance(0.01)


def device_joins_with(net, d, key=None, install_code=False):
    assert net.at(d, b"EE", b"\x01")[0] == X.AT_OK
    net.at(d, b"EO", b"\x02")
    if install_code:
        net.at(d, b"DC", b"\x00\x01")
    else:
        net.at(d, b"KY", key)
    net.clock.advance(1)
    return d.joined


def test_link_key_joins_a_wrong_key_does_not_and_keys_are_write_only():
    net = Net(devices=2)
    secure(net)
    assert device_joins_with(net, net.d[0], KY)
    assert not device_joins_with(net, net.d[1], bytes(16 * [7]))
    assert net.at(net.d[1], b"AI")[1] == bytes((BAD_LINK_KEY,))
    assert net.at(net.c, b"NK") == (X.AT_OK, b"") and net.at(net.c, b"KY") == (X.AT_OK, b"")
    assert net.d[0].nk == net.c.nk and net.d[1].nk is None


def test_install_code_registration_joins_the_device():
    net = Net(devices=1)
    secure(net)
    d = net.d[0]
    status, code = net.at(d, b"I?")
    assert status == X.AT_OK and len(code) == 18
    assert not device_joins_with(net, d, install_code=True)  # not registered yet
    frame = register_device_frame(7, d.addr64, code)
    assert X.encode_frame(frame) == _digi_register(7, d.addr64, code)
    net.c.serial_in(X.encode_frame(register_device_frame(0, d.addr64, code)))  # 0: no status
    assert net.c.counters["registered"] == 1
    net.at(net.c, b"NJ", b"\x3c")
    net.clock.advance(1)
    assert d.joined and d.nk == net.c.nk


def _digi_register(fid, addr, code):
    """The same frame from Digi's own library (digi-xbee)."""
    from digi.xbee.models.address import XBee64BitAddress
    from digi.xbee.models.options import RegisterKeyOptions
    from digi.xbee.packets.zigbee import RegisterJoiningDevicePacket

    a = XBee64BitAddress(bytearray(addr))
    p = RegisterJoiningDevicePacket(fid, a, RegisterKeyOptions.INSTALL_CODE, bytearray(code))
    return bytes(p.output())


def test_frames_from_a_radio_without_the_network_key_are_not_delivered():
    net = Net(devices=2)
    secure(net)
    good, rogue = net.d
    assert device_joins_with(net, good, KY)
    # the rogue keeps EE=0: it may join nothing and send nothing
    net.tx(good, b"\xa0hello", fid=1)
    net.clock.advance(0.1)
    assert [f[4] for _, f in net.take(net.c, "rx")] == [b"\xa0hello"]
    # spoofing the paired device's 64-bit address without the key
    net.m.inject(good.addr64, X.COORDINATOR64, b"\xa0forged")
    net.clock.advance(0.1)
    assert net.take(net.c, "rx") == [] and net.m.totals["no_key"] == 1
    # with the key (a member of the network) it would arrive: the model is
    # about the key, not the address
    net.m.inject(good.addr64, X.COORDINATOR64, b"\xa0member", nk=net.c.nk)
    net.clock.advance(0.1)
    assert [f[4] for _, f in net.take(net.c, "rx")] == [b"\xa0member"]
    # a device that lost the key (the network key changed under it) is cut off
    good.nk = bytes(16)
    net.tx(good, b"\xa0stale", fid=2)
    net.clock.advance(0.1)
    assert net.take(net.c, "rx") == [] and good.counters["no_key"] == 1
