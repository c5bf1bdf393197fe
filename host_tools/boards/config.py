"""Board data (docs/BOARDS.md): boards/<board>/board.json (what the board is)
and board_config.json (deployed; read by firmware/atls/app.py), loaded and
validated.  Nothing here tests a board's name: a board is its data."""

import json
import re
from pathlib import Path

from host_tools.toolchain import ROOT

BOARDS = ROOT / "boards"

MICROPYTHON_PORTS = ("esp32", "rp2", "unix")  # ports this project has boards for
MPY_ARCHS = (
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)
FLASH_METHODS = ("esptool", "uf2", "none")
FIRMWARE_FORMATS = ("esp-image", "uf2")
LINK_TYPES = ("udp", "xbee")
# board_config cpu_freq_mhz a port accepts (machine.freq); a port not listed
# takes any positive number and the firmware reports a refused one at boot
CPU_FREQS_MHZ = {"esp32": (80, 160, 240)}
UART_BUF_RANGE = (256, 32768)  # xbee.txbuf / rxbuf bytes (ESP32: txbuf > 128 or 0)


class BoardError(Exception):
    """A usage or data problem: exit status 2."""

    status = 2


class ToolError(Exception):
    """An external tool failed: exit status 1."""

    status = 1


def known_boards(boards_dir=BOARDS):
    return sorted(p.parent.name for p in Path(boards_dir).glob("*/board.json"))


def read_json(path):
    """A JSON file's content, or BoardError naming the file and the problem."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise BoardError("%s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise BoardError("%s is not valid JSON: %s" % (path, e))


def load_board(name, boards_dir=BOARDS):
    """board.json of `name` with its board_config.json as ["config"], validated."""
    if not name:
        raise BoardError("BOARD is required: one of %s" % ", ".join(known_boards(boards_dir)))
    d = Path(boards_dir) / name
    if not re.match(r"^[A-Za-z0-9_.-]+$", name) or not (d / "board.json").is_file():
        raise BoardError(
            "unknown BOARD %r: known boards are %s" % (name, ", ".join(known_boards(boards_dir)))
        )
    board = read_json(d / "board.json")
    if isinstance(board, dict):
        board["config"] = read_json(d / "board_config.json")
        board["dir"] = d
    problems = validate_board(board, name)
    if problems:
        raise BoardError("boards/%s is invalid: %s" % (name, "; ".join(problems)))
    return board


def _pin_ok(v):
    return v is None or (
        isinstance(v, dict)
        and isinstance(v.get("pin"), (int, str))
        and not isinstance(v.get("pin"), bool)
    )


def _firmware_problems(fw):
    if not isinstance(fw, dict) or fw.get("format") not in FIRMWARE_FORMATS:
        return ["firmware.format must be one of %s" % ", ".join(FIRMWARE_FORMATS)]
    p = []
    if not str(fw.get("extension", "")).startswith("."):
        p.append("firmware.extension must start with a dot")
    if not str(fw.get("download", "")).startswith("https://"):
        p.append("firmware.download must be an https URL")
    if fw["format"] == "esp-image" and not isinstance(fw.get("chip_id"), int):
        p.append("firmware.chip_id (esp-image) must be an integer")
    if fw["format"] == "uf2":
        try:
            fams = [int(f, 16) for f in fw.get("uf2_families") or ()]
        except (TypeError, ValueError):
            fams = []
        if not fams:
            p.append("firmware.uf2_families must list hex family ids")
    return p


def _flash_problems(method, flash):
    p = []
    if method == "esptool":
        if not flash.get("chip"):
            p.append("flash.chip is required for esptool")
        try:
            int(str(flash.get("offset")), 0)
        except ValueError:
            p.append('flash.offset must be a number such as "0x1000"')
        if not isinstance(flash.get("baud"), int) or flash.get("baud") <= 0:
            p.append("flash.baud must be a positive integer")
    if method == "uf2" and not flash.get("mount_globs"):
        p.append("flash.mount_globs is required for uf2")
    return p


def _count_ok(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _config_problems(cfg, port=None):
    """board_config.json: the link, the XBee UART, LED, button, WiFi, CPU."""
    if not isinstance(cfg, dict):
        return ["board_config.json must be a JSON object"]
    p = []
    link = cfg.get("link")
    ltype = link.get("type") if isinstance(link, dict) else None
    if ltype not in LINK_TYPES:
        p.append("board_config link.type must be one of %s" % ", ".join(LINK_TYPES))
    if ltype == "xbee":
        x = cfg.get("xbee")
        if not isinstance(x, dict):
            p.append("board_config needs an xbee section for an xbee link")
        else:
            for k in ("uart", "tx", "rx", "baudrate"):
                if not isinstance(x.get(k), (int, str)) or isinstance(x.get(k), bool):
                    p.append("board_config xbee.%s is required" % k)
            if x.get("ap") not in (1, 2):
                p.append("board_config xbee.ap must be 1 or 2")
            for k in ("txbuf", "rxbuf"):
                if k in x and not _count_ok(x[k], *UART_BUF_RANGE):
                    p.append("board_config xbee.%s must be %d..%d bytes" % ((k,) + UART_BUF_RANGE))
            if "write_timeout_ms" in x and not _count_ok(x["write_timeout_ms"], 1, 60000):
                p.append("board_config xbee.write_timeout_ms must be 1..60000")
    for k in ("led", "button"):
        if k not in cfg or not _pin_ok(cfg[k]):
            p.append('board_config %s must be null or {"pin": ...}' % k)
    wifi = cfg.get("wifi", "missing")
    if wifi is not None and not (
        isinstance(wifi, dict)
        and isinstance(wifi.get("ssid"), str)
        and isinstance(wifi.get("password"), str)
    ):
        p.append('board_config wifi must be null or {"ssid": str, "password": str}')
    # the supervisor: hardware watchdog (RP2040 tops out at ~8.3 s) and the
    # failures in a row before machine.reset()
    if "watchdog_ms" in cfg and not _count_ok(cfg["watchdog_ms"], 1000, 8300):
        p.append("board_config watchdog_ms must be 1000..8300 (the RP2040 watchdog's limit)")
    if "max_failures" in cfg and not _count_ok(cfg["max_failures"], 1, 1000):
        p.append("board_config max_failures must be 1..1000")
    if "cpu_freq_mhz" in cfg:
        mhz = cfg["cpu_freq_mhz"]
        allowed = CPU_FREQS_MHZ.get(port)
        if not _count_ok(mhz, 1, 1000) or (allowed and mhz not in allowed):
            p.append(
                "board_config cpu_freq_mhz must be %s"
                % (" or ".join(str(f) for f in allowed) if allowed else "a number of MHz")
            )
    return p


def validate_board(board, name):
    """A list of problems with a board's data (empty when it is usable)."""
    if not isinstance(board, dict):
        return ["board.json must be a JSON object"]
    p = []
    if board.get("name") != name:
        p.append("board.json name %r differs from its folder %r" % (board.get("name"), name))
    if board.get("port") not in MICROPYTHON_PORTS:
        p.append("port must be one of %s (a MicroPython port)" % ", ".join(MICROPYTHON_PORTS))
    if board.get("mpy_arch") is not None and board.get("mpy_arch") not in MPY_ARCHS:
        p.append(
            "mpy_arch %r is not an mpy-cross arch (%s)"
            % (board.get("mpy_arch"), ", ".join(MPY_ARCHS))
        )
    flash = board.get("flash")
    method = flash.get("method") if isinstance(flash, dict) else None
    if method not in FLASH_METHODS:
        p.append("flash.method must be one of %s" % ", ".join(FLASH_METHODS))
    if method in ("esptool", "uf2"):
        p += _firmware_problems(board.get("firmware"))
    p += _flash_problems(method, flash)
    return p + _config_problems(board.get("config"), board.get("port"))
