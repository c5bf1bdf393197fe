"""`make flash`: the board's MicroPython image checked (ESP image header or
UF2 blocks) before anything touches the board, then written with the board's
flash method (esptool, or a copy to the UF2 bootloader drive / picotool).
The code knows image *formats* and flash *methods*, never a board's name."""

import glob
import os
import struct
from pathlib import Path

from host_tools.boards.config import BoardError
from host_tools.boards.tools import check_port, tool

ESP_IMAGE_MAGIC = 0xE9  # esptool image header byte 0
ESP_CHIP_NAMES = {
    0: "ESP32",
    2: "ESP32-S2",
    5: "ESP32-C3",
    9: "ESP32-S3",
    12: "ESP32-C2",
    13: "ESP32-C6",
    16: "ESP32-H2",
    18: "ESP32-P4",
}
UF2_MAGIC_START0 = 0x0A324655  # "UF2\n"
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_FAMILY = 0x00002000
UF2_FAMILY_ABSOLUTE = 0xE48BFF57  # pico-sdk "absolute" blocks, allowed beside the board's
UF2_FAMILY_NAMES = {
    0xE48BFF56: "RP2040",
    0xE48BFF59: "RP2350-ARM-S",
    0xE48BFF5A: "RP2350-RISCV",
    0xE48BFF5B: "RP2350-ARM-NS",
    0xBFDD4EEE: "ESP32-S2",
    0xC47E5767: "ESP32-S3",
}


def check_firmware(board, path):
    """BoardError unless `path` is an image of the board's firmware format."""
    fw = board.get("firmware")
    if not path:
        hint = (" (MicroPython download: %s)" % fw["download"]) if fw else ""
        raise BoardError("FIRMWARE is required: the MicroPython image to flash%s" % hint)
    p = Path(path)
    if not p.is_file():
        raise BoardError("FIRMWARE %s: no such file" % path)
    ext = fw["extension"]
    if p.suffix.lower() != ext:
        raise BoardError(
            "FIRMWARE %s is not a %s file: board %s takes a %s image (%s)"
            % (path, ext, board["name"], ext, fw["download"])
        )
    data = p.read_bytes()
    if fw["format"] == "esp-image":
        _check_esp_image(board, path, data)
    else:
        _check_uf2(board, path, data)


def _check_esp_image(board, path, data):
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise BoardError(
            "FIRMWARE %s is not an ESP32 firmware image (first byte must be the "
            "image magic 0xE9)" % path
        )
    chip = struct.unpack_from("<H", data, 12)[0]  # extended header: chip id
    want = board["firmware"]["chip_id"]
    if chip != want:
        raise BoardError(
            "FIRMWARE %s is built for %s (chip id %d), not %s (chip id %d): "
            "download %s"
            % (
                path,
                ESP_CHIP_NAMES.get(chip, "another chip"),
                chip,
                board["flash"]["chip"],
                want,
                board["firmware"]["download"],
            )
        )


def _check_uf2(board, path, data):
    if len(data) < 512 or len(data) % 512:
        raise BoardError(
            "FIRMWARE %s is not a UF2 file (size is not a multiple of 512 bytes)" % path
        )
    want = {int(f, 16) for f in board["firmware"]["uf2_families"]}
    seen = set()
    for off in range(0, len(data), 512):
        m0, m1, flags = struct.unpack_from("<III", data, off)
        family = struct.unpack_from("<I", data, off + 28)[0]
        end = struct.unpack_from("<I", data, off + 508)[0]
        if m0 != UF2_MAGIC_START0 or m1 != UF2_MAGIC_START1 or end != UF2_MAGIC_END:
            raise BoardError(
                "FIRMWARE %s is not a UF2 file (block %d lacks the UF2 magic "
                "0x0A324655)" % (path, off // 512)
            )
        if flags & UF2_FLAG_FAMILY:
            seen.add(family)
    other = seen - want - {UF2_FAMILY_ABSOLUTE}
    if other or not seen & want:
        names = ", ".join(UF2_FAMILY_NAMES.get(f, "0x%08x" % f) for f in sorted(other or seen))
        raise BoardError(
            "FIRMWARE %s is a UF2 for %s, not for board %s: download %s"
            % (path, names or "no chip family", board["name"], board["firmware"]["download"])
        )


def find_uf2_mount(board, mount=None):
    """The mounted bootloader drive (MOUNT, else the board's mount_globs), or None."""
    vol = board["flash"].get("volume", "RPI-RP2")
    if mount:
        if not os.path.isdir(mount):
            raise BoardError("MOUNT %s is not a mounted drive" % mount)
        if not os.path.isfile(os.path.join(mount, "INFO_UF2.TXT")):
            raise BoardError(
                "MOUNT %s is not a %s bootloader drive (no INFO_UF2.TXT)" % (mount, vol)
            )
        return mount
    found = sorted(
        {
            m
            for g in board["flash"]["mount_globs"]
            for m in glob.glob(g)
            if os.path.isfile(os.path.join(m, "INFO_UF2.TXT"))
        }
    )
    if len(found) > 1:
        raise BoardError(
            "several %s drives are mounted (%s): choose one with MOUNT=" % (vol, ", ".join(found))
        )
    return found[0] if found else None


def flash_commands(board, port=None, firmware=None, mount=None, baud=None, dry_run=False):
    """The commands that flash `firmware` onto the board (checked first)."""
    flash = board["flash"]
    method = flash["method"]
    if method == "none":
        raise BoardError(
            "board %s has no firmware to flash (it is the MicroPython unix port "
            "on this machine)" % board["name"]
        )
    if method == "esptool":
        check_port(port, dry_run)
        check_firmware(board, firmware)
        esptool = tool("esptool", required=not dry_run) or "esptool"
        base = [
            esptool,
            "--chip",
            flash["chip"],
            "--port",
            port,
            "--baud",
            str(baud or flash["baud"]),
        ]
        cmds = [base + ["erase-flash"]] if flash.get("erase", True) else []
        return cmds + [base + ["write-flash", "-z", flash["offset"], firmware]]
    check_firmware(board, firmware)
    vol = flash.get("volume", "RPI-RP2")
    where = find_uf2_mount(board, mount)
    if where:
        return [["cp", firmware, os.path.join(where, "")], ["sync"]]
    picotool = flash.get("picotool") and tool("picotool", required=False)
    if picotool:
        return [[picotool, "load", "-x", firmware]]
    raise BoardError(
        "no %s drive found (looked in %s): hold BOOTSEL while plugging the board "
        "in, or give MOUNT=<where the drive is mounted>" % (vol, ", ".join(flash["mount_globs"]))
    )
