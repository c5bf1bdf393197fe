"""Install codes (Zigbee 3.0 style) for install-code onboarding (docs/BOARDS.md
"Install codes", docs/PROTOCOL.md §8): 16 random bytes and their CRC-16
(CRC-16/X-25, low byte first, as Zigbee install codes carry it), written as
36 hex digits in groups of four.  `make provision` creates one per device,
prints it and writes a QR code (segno) holding

    ATLS-IC:1:<device id>:<service>:<install code, 36 hex>

`make pair INSTALL_CODE=...` / `gateway pair --install-code` take the text;
`gateway pair --qr FILE` a PNG of the QR code (read with zxing-cpp) or a text
file holding the payload.  Every malformed or mistyped code raises
InstallCodeError before anything is pre-authorised.
"""

import os

__all__ = [
    "InstallCodeError",
    "new_install_code",
    "crc16_x25",
    "format_code",
    "parse_code",
    "qr_payload",
    "parse_payload",
    "write_qr",
    "terminal_qr",
    "read_qr",
    "register_device_frame",
]

PREFIX = "ATLS-IC:1:"


class InstallCodeError(ValueError):
    pass


def crc16_x25(data):
    """CRC-16/X-25 (poly 0x1021 reflected, init and xorout 0xFFFF); check
    value of b"123456789" is 0x906E."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def new_install_code(rng=os.urandom):
    """18 bytes: 16 random bytes and their CRC (low byte first)."""
    code = rng(16)
    return code + crc16_x25(code).to_bytes(2, "little")


def format_code(code):
    h = code.hex().upper()
    return "-".join(h[i : i + 4] for i in range(0, len(h), 4))


def parse_code(text):
    """18 bytes from 36 hex digits (spaces and dashes ignored); the CRC must match."""
    h = "".join(ch for ch in str(text) if ch not in " -:\t\n")
    try:
        raw = bytes.fromhex(h)
    except ValueError:
        raise InstallCodeError("install code: not hex")
    if len(raw) != 18:
        raise InstallCodeError("install code: 36 hex digits expected, got %d" % (2 * len(raw)))
    if crc16_x25(raw[:16]) != int.from_bytes(raw[16:], "little"):
        raise InstallCodeError("install code: CRC mismatch (mistyped?)")
    return raw


def qr_payload(device_id, service, code):
    return "%s%s:%s:%s" % (PREFIX, device_id, service, code.hex().upper())


def parse_payload(text):
    """(device_id, service, code) from a QR payload."""
    text = str(text).strip()
    if not text.startswith(PREFIX):
        raise InstallCodeError("not an ATLS install-code QR code")
    parts = text[len(PREFIX) :].split(":")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise InstallCodeError("install-code QR code: expected device:service:code")
    if len(parts[0].encode()) > 32 or len(parts[1].encode()) > 32:
        raise InstallCodeError("install-code QR code: names longer than 32 bytes")
    return parts[0], parts[1], parse_code(parts[2])


def write_qr(payload, path, scale=6):
    import segno

    segno.make(payload, error="m").save(str(path), scale=scale, border=4)


def terminal_qr(payload, out):
    import segno

    segno.make(payload, error="m").terminal(out=out, compact=True)


def read_qr(path):
    """(device_id, service, code) from a PNG of the QR code or a text file
    holding its payload."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise InstallCodeError("cannot read %s: %s" % (path, e))
    if not data.startswith(b"\x89PNG"):
        try:
            return parse_payload(data.decode())
        except UnicodeError:
            raise InstallCodeError("%s is neither a PNG nor a text payload" % path)
    try:
        import zxingcpp
        from PIL import Image
    except ImportError:
        raise InstallCodeError("reading a QR PNG needs zxing-cpp and Pillow (pip install .[dev])")
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # a corrupt PNG
        raise InstallCodeError("%s: not a readable image (%s)" % (path, e))
    codes = [
        r.text for r in zxingcpp.read_barcodes(img) if r.format == zxingcpp.BarcodeFormat.QRCode
    ]
    if len(codes) != 1:
        raise InstallCodeError("%s: %d QR codes found, expected one" % (path, len(codes)))
    return parse_payload(codes[0])


def register_device_frame(frame_id, addr64, key, install_code=True):
    """Frame data of an XBee 3 Zigbee Register Joining Device (0x24) for the
    trust center: 64-bit address, 0xFFFE, options (1: the key is the joiner's
    module install code, I?, 16 bytes + CRC; the joiner runs DC bit 0), key."""
    if len(addr64) != 8 or not 0 <= frame_id <= 255:
        raise ValueError("addr64 is 8 bytes, frame id 0..255")
    flags = bytes((1 if install_code else 0,))
    return bytes((0x24, frame_id)) + bytes(addr64) + b"\xff\xfe" + flags + bytes(key)
