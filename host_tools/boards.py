"""Boards: compile, flash, deploy and provision (`make mpy|flash|deploy|provision`).

    python -m host_tools.boards mpy       [--board B]
    python -m host_tools.boards flash     --board B [--port P] --firmware F [--mount M] [--baud N]
    python -m host_tools.boards deploy    --board B --port P
    python -m host_tools.boards provision --board B --port P --device ID [--mode psk|cert]
                                          [--service HOST:PORT] [--service-ca PEM]
                                          [--server-name N] [--service-name N] [--app JSON]
                                          [--registry PATH] [--pki DIR] [--force]
    (flash, deploy and provision take --dry-run: print the commands, run nothing)

Everything about a board is data in boards/<board>/ (docs/BOARDS.md):
  board.json          what the board is: MicroPython port, mpy-cross arch, firmware image
                      format and where to download it, how to flash it
  board_config.json   deployed to the device; read by firmware/atls/app.py
  manifest.py         freezes firmware/atls into a user-built MicroPython image
The code below knows firmware *formats* (ESP image, UF2) and flash *methods*
(esptool, UF2 drive/picotool); it never tests a board's name.

mpy: every firmware module is compiled with mpy-cross for the board's arch into
build/<board>/ (package layout kept, main.py stays source), next to a copy of
board_config.json.  deploy: mpy, then mpremote creates the package folders,
copies every .mpy, main.py and board_config.json.  mpremote always runs with
`resume` (no soft reset: a soft reset would end a unix port standing in for a
board; on a board, mpremote still interrupts the running program).

provision: a new identity for DEVICE, written to the device as device.json and
registered with the *service's* registry (host_tools/service.py `Registry`):
  psk   32 random bytes; registry devices[ID] = {"psk": hex}
  cert  a P-256 key and a client certificate (CN = ID) signed by the local device
        CA in PKI/ (device-ca.pem + device-ca.key, created on first use, key 0600);
        registry device_ca = that CA, devices[ID] = {"cert_sha256": ...}; the
        device gets the service's CA (SERVICE_CA) to check the server.
Secrets are never printed; files holding them are written 0600 (the registry,
the CA key, the staged device.json, which is removed once copied); an existing
registry entry is kept unless --force.

Errors are one line on stderr and a non-zero exit: 2 for a usage or data
problem (unknown board, missing PORT/FIRMWARE, port not present, wrong image),
1 when a tool (mpy-cross, esptool, mpremote, cp, picotool) fails, with the
tool's own message.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ROOT / "boards"
FIRMWARE = ROOT / "firmware"
BUILD = ROOT / "build"

DEFAULT_REGISTRY = "build/service/devices.json"
DEFAULT_PKI = "build/pki"
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
MPY_VERSION = 6  # .mpy format written by mpy-cross >= 1.22 (byte 1 of every .mpy)

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


class BoardError(Exception):
    """A usage or data problem: exit status 2."""

    status = 2


class ToolError(Exception):
    """An external tool failed: exit status 1."""

    status = 1


# -- board data -------------------------------------------------------------------


def known_boards(boards_dir=BOARDS):
    return sorted(p.parent.name for p in Path(boards_dir).glob("*/board.json"))


def _json(path):
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
    board = _json(d / "board.json")
    if isinstance(board, dict):
        board["config"] = _json(d / "board_config.json")
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
    fw = board.get("firmware")
    if method in ("esptool", "uf2"):
        if not isinstance(fw, dict) or fw.get("format") not in FIRMWARE_FORMATS:
            p.append("firmware.format must be one of %s" % ", ".join(FIRMWARE_FORMATS))
        else:
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
    cfg = board.get("config")
    if not isinstance(cfg, dict):
        p.append("board_config.json must be a JSON object")
        return p
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
            elif "escaped" in x and bool(x["escaped"]) != (x["ap"] == 2):
                p.append("board_config xbee.escaped must match ap (escaped is AP=2)")
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
    return p


# -- tools --------------------------------------------------------------------------


def tool(name, required=True):
    """Path of a command-line tool: next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return _rel(here)
    found = shutil.which(name)
    if found:
        return found
    if required:
        raise BoardError("%s not found: `make setup` installs it (pip install %s)" % (name, name))
    return None


def _rel(path):
    """A path relative to the working directory when it lies below it."""
    path = os.path.abspath(str(path))
    cwd = os.getcwd()
    if path.startswith(cwd + os.sep):
        return os.path.relpath(path, cwd)
    return path


def _tail(text, n=6):
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def run(cmd, what=None, echo=True):
    """Run one command, echoing its output; ToolError with the tool's last
    lines when it fails."""
    what = what or os.path.basename(cmd[0])
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise ToolError("%s could not start: %s" % (what, e))
    out = bytearray()
    while True:
        chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read()
        if not chunk:
            break
        out += chunk
        if len(out) > 65536:
            del out[:-32768]
        if echo:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
    rc = proc.wait()
    text = out.decode("utf-8", "replace")
    if rc != 0:
        raise ToolError("%s failed (exit %d): %s" % (what, rc, _tail(text)))
    return text


def run_all(cmds, dry_run):
    for cmd in cmds:
        if isinstance(cmd, str):  # a comment line (dry run only)
            if dry_run:
                print(cmd)
            continue
        if dry_run:
            print(shlex.join(cmd))
        else:
            run(cmd)


def check_port(port, dry_run):
    if not port:
        raise BoardError(
            "PORT is required: the board's serial port, e.g. PORT=/dev/ttyUSB0 "
            "(ESP32) or PORT=/dev/ttyACM0 (Pico W)"
        )
    if not dry_run and port.startswith("/") and not os.path.exists(port):
        raise BoardError(
            "PORT %s is not present: is the board plugged in? (serial ports: "
            "`mpremote devs`)" % port
        )


# -- mpy ---------------------------------------------------------------------------


def firmware_modules(src=FIRMWARE):
    """Every firmware module (relative paths), main.py excluded."""
    src = Path(src)
    return sorted(
        p.relative_to(src)
        for p in src.rglob("*.py")
        if "__pycache__" not in p.parts and p.relative_to(src) != Path("main.py")
    )


def _mpy_cross(rel, src, out, arch):
    cmd = (
        [tool("mpy-cross")]
        + (["-march=" + arch] if arch else [])
        + ["-s", rel.as_posix(), "-o", str(out / rel.with_suffix(".mpy")), str(src / rel)]
    )
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise ToolError("mpy-cross %s failed: %s" % (rel.as_posix(), _tail(p.stderr + p.stdout)))


def build_mpy(board, out_root=BUILD, src=FIRMWARE):
    """Compile the firmware for `board` (a name or loaded board) into
    out_root/<board>/: {"dir", "modules", "bytes", "files"}."""
    if isinstance(board, str):
        board = load_board(board)
    out = Path(out_root) / board["name"]
    src = Path(src)
    mods = firmware_modules(src)
    for d in {m.parts[0] for m in mods if len(m.parts) > 1}:
        shutil.rmtree(out / d, ignore_errors=True)  # no stale modules from older builds
    for m in mods:
        (out / m).parent.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for f in [ex.submit(_mpy_cross, m, src, out, board.get("mpy_arch")) for m in mods]:
            f.result()
    shutil.copyfile(src / "main.py", out / "main.py")
    shutil.copyfile(board["dir"] / "board_config.json", out / "board_config.json")
    files = [m.with_suffix(".mpy") for m in mods]
    total = sum((out / f).stat().st_size for f in files)
    return {"dir": out, "modules": len(files), "bytes": total, "files": files}


def mpy_sizes(boards=None):
    """{board: total .mpy bytes} for every board (or those named), compiled in
    a temporary folder (build/ is left alone).  For `make bench`."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in boards or known_boards():
            res[name] = build_mpy(name, out_root=tmp)["bytes"]
    return res


_IMPORT_ALL = """import gc, json, sys
gc.collect()
base = gc.mem_alloc()
failed = []
for m in sys.argv[1:]:
    try:
        __import__(m)
    except Exception as e:
        failed.append(m + ": " + repr(e))
gc.collect()
print(json.dumps({"bytes": gc.mem_alloc() - base, "failed": failed}))
"""


def import_ram(board="unix", modules=None):
    """Heap (bytes, after gc.collect) that importing every firmware module (or
    the dotted names in `modules`, e.g. ["atls.app"]) takes in the MicroPython
    unix port, from the board's .mpy files: {"bytes", "modules", "failed"}.
    For `make bench`; a 64-bit unix port needs more than a 32-bit MCU."""
    from host_tools.bench import micropython_binary

    with tempfile.TemporaryDirectory() as tmp:
        b = build_mpy(board, out_root=tmp)
        script = Path(tmp) / "import_all.py"
        script.write_text(_IMPORT_ALL)
        names = modules or [
            ".".join(f.with_suffix("").parts).replace(".__init__", "") for f in b["files"]
        ]
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(b["dir"]))
        p = subprocess.run(
            [micropython_binary(), str(script)] + names,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=120,
        )
        if p.returncode != 0:
            raise ToolError("import_ram: %s" % _tail(p.stderr + p.stdout))
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res["modules"] = len(names)
        return res


# -- flash -------------------------------------------------------------------------


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


# -- deploy ------------------------------------------------------------------------


def _mpremote(port, dry_run=False):
    return [tool("mpremote", required=not dry_run) or "mpremote", "connect", port, "resume"]


def _prepare_code(dirs):
    """Device-side: check the .mpy version, create the package folders, drop
    stale .py sources in them (a .py shadows the .mpy of the same module)."""
    code = (
        "import os, sys\n"
        'if getattr(sys.implementation, "_mpy", 0) & 255 != %d:\n'
        ' raise RuntimeError("this MicroPython cannot load .mpy version %d: flash '
        'MicroPython 1.22 or newer")\n'
        "for d in %s:\n"
        " try: os.mkdir(d)\n"
        " except OSError as e:\n"
        "  if e.args[0] != 17: raise\n"
        " for n in os.listdir(d):\n"
        '  if n.endswith(".py"): os.remove(d + "/" + n)\n'
        % (MPY_VERSION, MPY_VERSION, json.dumps(list(dirs)))
    )
    # json.dumps: a Python string literal with no single quotes (shell-quotes cleanly)
    return "exec(%s)" % json.dumps(code)


def deploy_commands(built, port, dry_run=False):
    out = Path(built["dir"])
    dirs = sorted({p.parent.as_posix() for p in built["files"] if p.parent != Path(".")})
    mp = _mpremote(port, dry_run)
    cmds = [mp + ["exec", _prepare_code(dirs)]]
    by_dir = {}
    for f in built["files"]:
        by_dir.setdefault(f.parent.as_posix(), []).append(_rel(out / f))
    for d in sorted(by_dir):
        dest = ":" if d == "." else ":%s/" % d
        cmds.append(mp + ["fs", "cp"] + by_dir[d] + [dest])
    cmds.append(
        mp
        + [
            "fs",
            "cp",
            _rel(out / "main.py"),
            ":main.py",
            "+",
            "fs",
            "cp",
            _rel(out / "board_config.json"),
            ":board_config.json",
        ]
    )
    return cmds


def deploy(board_name, port, dry_run=False):
    board = load_board(board_name)
    check_port(port, dry_run)
    _mpremote(port, dry_run)  # fail early when mpremote is missing
    built = build_mpy(board)
    run_all(deploy_commands(built, port, dry_run), dry_run)
    if not dry_run:
        print(
            "deployed %d modules (%d bytes of .mpy), main.py and board_config.json to %s"
            % (built["modules"], built["bytes"], port)
        )


# -- provision ---------------------------------------------------------------------


def _write_private(path, data):
    """Write bytes to `path` with mode 0600 (atomically, via a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_registry(path):
    path = Path(path)
    if not path.exists():
        return {"devices": {}}
    reg = _json(path)
    if not isinstance(reg, dict) or not isinstance(reg.get("devices", {}), dict):
        raise BoardError('registry %s must be a JSON object with a "devices" object' % path)
    reg.setdefault("devices", {})
    return reg


def _parse_service(service):
    host, _, port = (service or "").rpartition(":")
    try:
        port = int(port)
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        raise BoardError("SERVICE must be host:port (the service's UDP address), got %r" % service)
    return host.strip("[]"), port


def _load_service_ca(path):
    from cryptography import x509

    if not path:
        raise BoardError(
            "SERVICE_CA is required in cert mode: the PEM certificate of the CA "
            "that signed the service's certificate"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BoardError("SERVICE_CA %s: %s" % (path, e.strerror or e))
    try:
        certs = (
            x509.load_pem_x509_certificates(data)
            if b"-----BEGIN" in data
            else [x509.load_der_x509_certificate(data)]
        )
    except ValueError as e:
        raise BoardError("SERVICE_CA %s is not a certificate: %s" % (path, e))
    if len(certs) != 1:
        raise BoardError(
            "SERVICE_CA %s holds %d certificates: give the one CA certificate" % (path, len(certs))
        )
    return certs[0]


def device_ca(pki_dir, create=True):
    """The local device CA (pki.Credential) kept in pki_dir, created on first use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from host_tools import pki

    d = Path(pki_dir)
    cert_p, key_p = d / "device-ca.pem", d / "device-ca.key"
    if cert_p.exists() and key_p.exists():
        mode = key_p.stat().st_mode & 0o077
        if mode:
            raise BoardError("device CA key %s is readable by others: chmod 600 it" % key_p)
        try:
            key = serialization.load_pem_private_key(key_p.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        except ValueError as e:
            raise BoardError("device CA in %s is unreadable: %s" % (d, e))
        return pki.Credential(key, cert)
    if cert_p.exists() or key_p.exists():
        raise BoardError("device CA in %s is incomplete (need device-ca.pem and device-ca.key)" % d)
    if not create:
        return None
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ca = pki.make_ca("ATLS Device CA", key_type="p256", days=7300)
    _write_private(key_p, pki.pem(ca.key))
    cert_p.write_bytes(pki.pem(ca.cert))
    print("created the device CA in %s (key %s, mode 0600)" % (d, key_p))
    return ca


def provision(
    board_name,
    port,
    device,
    mode="psk",
    service=None,
    service_ca=None,
    server_name=None,
    service_name=None,
    app=None,
    registry=DEFAULT_REGISTRY,
    pki_dir=DEFAULT_PKI,
    force=False,
    dry_run=False,
):
    board = load_board(board_name)
    check_port(port, dry_run)
    if not device:
        raise BoardError("DEVICE is required: the device's id, e.g. DEVICE=sensor-1")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", device):
        raise BoardError("DEVICE %r: use 1..64 letters, digits, '.', '_' or '-'" % device)
    if mode not in ("psk", "cert"):
        raise BoardError("MODE must be psk or cert, not %r" % mode)
    link = {}
    if board["config"]["link"]["type"] == "udp":
        if not service:
            raise BoardError(
                "SERVICE=host:port is required: board %s reaches the service "
                "over UDP" % board["name"]
            )
        link["host"], link["port"] = _parse_service(service)
    elif service:
        raise BoardError(
            "SERVICE is not used by board %s: its %s link reaches the service "
            "through the gateway" % (board["name"], board["config"]["link"]["type"])
        )
    try:
        app_cfg = json.loads(app) if app else None
    except ValueError as e:
        raise BoardError("APP must be a JSON object: %s" % e)
    if app_cfg is not None and not isinstance(app_cfg, dict):
        raise BoardError("APP must be a JSON object, e.g. APP='{\"period_ms\": 10000}'")
    ca_cert = _load_service_ca(service_ca) if mode == "cert" else None
    reg_path = Path(registry)
    reg = _load_registry(reg_path)
    if device in reg["devices"] and not force:
        raise BoardError(
            "device %s is already registered in %s: FORCE=1 replaces its "
            "credential" % (device, reg_path)
        )
    pki_d = Path(pki_dir)
    ca_rel = os.path.relpath(
        os.path.abspath(pki_d / "device-ca.pem"), os.path.abspath(reg_path.parent)
    )
    if mode == "cert" and reg.get("device_ca"):
        have = os.path.abspath(reg_path.parent / reg["device_ca"])
        if have != os.path.abspath(pki_d / "device-ca.pem") and not force:
            raise BoardError(
                "registry %s already trusts another device CA (%s): give "
                "PKI=<its folder>, or FORCE=1 to replace it" % (reg_path, reg["device_ca"])
            )
    staged = Path(BUILD) / board["name"] / "device.json"
    copy = _mpremote(port, dry_run) + ["fs", "cp", _rel(staged), ":device.json"]
    if dry_run:
        print(
            "# provision %s (%s) for board %s; device.json is staged in %s (mode 0600)"
            % (device, mode, board["name"], _rel(staged))
        )
        print(shlex.join(copy))
        print(
            "# then register %s (%s) in %s%s"
            % (
                device,
                mode,
                reg_path,
                "" if mode == "psk" else " with device_ca %s (created on first use)" % ca_rel,
            )
        )
        return

    from cryptography.hazmat.primitives import hashes

    from host_tools import pki

    tls = {}
    entry = {}
    if server_name:
        tls["server_name"] = server_name
    if mode == "psk":
        _, psk = pki.make_psk(device, 32)
        tls.update(psk=psk.hex(), psk_identity=device)
        entry["psk"] = psk.hex()
    else:
        ca = device_ca(pki_d)
        cred = pki.make_cert(device, issuer=ca, key_type="p256", client=True, san=[], days=3650)
        scalar = cred.key.private_numbers().private_value.to_bytes(32, "big")
        tls.update(ca=pki.der(ca_cert).hex(), cert=pki.der(cred.cert).hex(), key=scalar.hex())
        entry["cert_sha256"] = cred.cert.fingerprint(hashes.SHA256()).hex()
    dev = {"device_id": device, "service": service_name or "default", "tls": tls}
    if link:
        dev["link"] = link
    if app_cfg is not None:
        dev["app"] = app_cfg
    try:
        _write_private(staged, (json.dumps(dev, indent=1) + "\n").encode())
        run(copy)
    finally:
        if staged.exists():
            staged.unlink()
    reg["devices"][device] = entry
    if mode == "cert":
        reg["device_ca"] = ca_rel
        (pki_d / "devices").mkdir(parents=True, exist_ok=True)
        (pki_d / "devices" / (device + ".pem")).write_bytes(pki.pem(cred.cert))
    _write_private(reg_path, (json.dumps(reg, indent=1, sort_keys=True) + "\n").encode())
    print(
        "provisioned %s (%s) on %s and registered it in %s%s"
        % (
            device,
            mode,
            port,
            reg_path,
            "" if mode == "psk" else "; certificate sha256 %s" % entry["cert_sha256"],
        )
    )


# -- command line -------------------------------------------------------------------


def cmd_mpy(a):
    names = [a.board] if a.board else known_boards()
    for name in names:
        b = build_mpy(name)
        print(
            "%-8s %s: %d modules, %d bytes of .mpy (arch %s)"
            % (
                name,
                _rel(b["dir"]),
                b["modules"],
                b["bytes"],
                load_board(name).get("mpy_arch") or "any",
            )
        )


def cmd_flash(a):
    board = load_board(a.board)
    run_all(flash_commands(board, a.port, a.firmware, a.mount, a.baud, a.dry_run), a.dry_run)
    if not a.dry_run:
        print(
            "flashed %s: the board restarts into MicroPython (next: make deploy BOARD=%s "
            "PORT=...)" % (a.firmware, a.board)
        )


def cmd_deploy(a):
    deploy(a.board, a.port, a.dry_run)


def cmd_provision(a):
    provision(
        a.board,
        a.port,
        a.device,
        a.mode or "psk",
        a.service,
        a.service_ca,
        a.server_name,
        a.service_name,
        a.app,
        a.registry or DEFAULT_REGISTRY,
        a.pki or DEFAULT_PKI,
        a.force,
        a.dry_run,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.boards", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mpy", help="compile the firmware for a board (all boards by default)")
    p.add_argument("--board")
    p.set_defaults(fn=cmd_mpy)
    for name, fn in (("flash", cmd_flash), ("deploy", cmd_deploy), ("provision", cmd_provision)):
        p = sub.add_parser(name)
        p.add_argument("--board")
        p.add_argument("--port")
        p.add_argument("--dry-run", action="store_true")
        p.set_defaults(fn=fn)
        if name == "flash":
            p.add_argument("--firmware")
            p.add_argument("--mount")
            p.add_argument("--baud", type=int)
        if name == "provision":
            p.add_argument("--device")
            p.add_argument("--mode")
            p.add_argument("--service")
            p.add_argument("--service-ca")
            p.add_argument("--server-name")
            p.add_argument("--service-name")
            p.add_argument("--app")
            p.add_argument("--registry")
            p.add_argument("--pki")
            p.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except (BoardError, ToolError) as e:
        sys.stdout.flush()
        print("%s: %s" % (a.cmd, e), file=sys.stderr)
        return e.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
