"""The test's end of an XBee UART, in Digi's own codec (digi-xbee,
`digi.xbee.packets`): frames the tests write to a module (or to the gateway)
are encoded by Digi, and every frame read back is decoded by Digi (checksum,
AP=2 escaping) and must re-encode to the same wire bytes.  Conversions to and
from atls.xbee.parse's tuples let the tests keep their assertions and compare
both decoders on the same stream."""

from digi.xbee.models.address import XBee16BitAddress, XBee64BitAddress
from digi.xbee.models.mode import OperatingMode
from digi.xbee.packets.base import XBeePacket
from digi.xbee.packets.common import (
    ATCommPacket,
    ATCommResponsePacket,
    ModemStatusPacket,
    ReceivePacket,
    TransmitPacket,
    TransmitStatusPacket,
)
from digi.xbee.packets.factory import build_frame

from atls import xbee as X

MODES = {False: OperatingMode.API_MODE, True: OperatingMode.ESCAPED_API_MODE}


def _int(addr):
    return int.from_bytes(bytes(addr.address), "big")


def _a16(v):
    return XBee16BitAddress(bytearray(v.to_bytes(2, "big")))


def from_digi(pkt):
    """A Digi packet as atls.xbee.parse's tuple."""
    if isinstance(pkt, ATCommResponsePacket):
        val = bytes(pkt.command_value or b"")
        return ("at_response", pkt.frame_id, pkt.command.encode(), pkt.real_status, val)
    if isinstance(pkt, ATCommPacket):
        par = bytes(pkt.parameter or b"")
        return ("at_command", pkt.frame_id, pkt.command.encode(), par)
    if isinstance(pkt, TransmitStatusPacket):
        return (
            "tx_status",
            pkt.frame_id,
            _int(pkt.x16bit_dest_addr),
            pkt.transmit_retry_count,
            pkt.transmit_status.code,
            pkt.discovery_status.code,
        )
    if isinstance(pkt, TransmitPacket):
        return (
            "tx_request",
            pkt.frame_id,
            bytes(pkt.x64bit_dest_addr.address),
            _int(pkt.x16bit_dest_addr),
            pkt.broadcast_radius,
            pkt.transmit_options,
            bytes(pkt.rf_data or b""),
        )
    if isinstance(pkt, ReceivePacket):
        return (
            "rx",
            bytes(pkt.x64bit_source_addr.address),
            _int(pkt.x16bit_source_addr),
            pkt.receive_options,
            bytes(pkt.rf_data or b""),
        )
    if isinstance(pkt, ModemStatusPacket):
        return ("modem_status", pkt.modem_status.code)
    raise AssertionError("unexpected frame: %r" % pkt)


def to_digi(frame_data):
    """atls.xbee frame data (what a test means to send) as a Digi packet."""
    f = X.parse(frame_data)
    if f[0] == "at_command":
        return ATCommPacket(f[1], f[2].decode(), bytearray(f[3]) or None)
    if f[0] == "at_response":
        _, fid, cmd, status, val = f
        return ATCommResponsePacket(fid, cmd.decode(), status, bytearray(val) or None)
    if f[0] == "tx_request":
        _, fid, d64, d16, radius, opts, p = f
        a64 = XBee64BitAddress(bytearray(d64))
        return TransmitPacket(fid, a64, _a16(d16), radius, opts, bytearray(p) or None)
    if f[0] == "rx":
        _, s64, s16, opts, p = f
        a64 = XBee64BitAddress(bytearray(s64))
        return ReceivePacket(a64, _a16(s16), opts, bytearray(p) or None)
    raise AssertionError("no Digi packet for %r" % (f,))


def digi_encode(frame_data, escaped):
    return bytes(to_digi(frame_data).output(escaped))


def take_frame(buf, escaped):
    """(one whole API frame as on the wire, the rest) or (None, buf): where
    the frame ends, from its length field (escapes skipped in AP=2)."""
    assert buf[0] == 0x7E, buf[:16].hex()
    got, i, need = 0, 1, None
    length = bytearray()
    while i < len(buf):
        i += 2 if escaped and buf[i] == 0x7D else 1
        if i > len(buf):
            return None, buf
        got += 1
        if got <= 2:
            length.append(buf[i - 1] ^ (0x20 if escaped and buf[i - 2] == 0x7D else 0))
            if got == 2:
                need = 2 + int.from_bytes(length, "big") + 1  # length, data, checksum
        elif got == need:
            return bytes(buf[:i]), buf[i:]
    return None, buf


def digi_decode(raw, escaped):
    """Digi's decoder on one frame's wire bytes: checksum and escaping
    checked, and Digi's encoder gives the same bytes back."""
    plain = bytes(XBeePacket.unescape_data(bytearray(raw))) if escaped else raw
    pkt = build_frame(bytearray(plain), MODES[escaped])
    assert bytes(pkt.output(escaped)) == raw, raw.hex()
    return pkt


class DigiStream:
    """Decodes a UART byte stream with Digi's codec and with atls.xbee, and
    checks they agree frame by frame; feed() returns parse tuples."""

    def __init__(self, escaped):
        self.escaped = escaped
        self.buf = b""
        self.ours = X.FrameDecoder(escaped)
        self.frames = 0

    def feed(self, data):
        ours = [X.parse(f) for f in self.ours.feed(data)]
        theirs = []
        buf = self.buf + bytes(data)
        while buf:
            raw, buf = take_frame(buf, self.escaped)
            if raw is None:
                break
            theirs.append(from_digi(digi_decode(raw, self.escaped)))
        self.buf = buf
        assert ours == theirs, (ours, theirs)
        self.frames += len(theirs)
        return theirs
