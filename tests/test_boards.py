"""Boards, flashing, deployment and provisioning (issue 7), without hardware.

- board data (boards/*/board.json, board_config.json, manifest.py) is complete
  and valid, and the code never tests a board's name;
- mpy-cross compiles every firmware module for each board, and the unix port
  imports all of them from the .mpy files;
- `make flash ... DRY_RUN=1` prints the esptool erase + write at 0x1000 and
  the UF2 copy; the UF2 copy also runs for real into a stand-in drive;
- `make deploy` and `make provision` run for real against a MicroPython unix
  port behind a pty (host_tools.boards.ptyboard, Python's own pty handling; no
  socat): the deployed files alone then run the firmware
  (`micropython main.py`, firmware/ not on the path) and complete an ATLS
  session with a real service process that reads the registry provision wrote,
  in PSK and in certificate mode;
- every error case exits non-zero with its message (tool failures carry the
  tool's own message).
"""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import conftest
import pytest
from e2e import wait_file

from host_tools import boards, pki
from host_tools.toolchain import free_port, micropython_binary

ROOT = conftest.ROOT
MICROPYTHON = micropython_binary()
APP = json.dumps({"count": 3, "period_ms": 50, "exit_when_done": True})


def make(target, timeout=120, **variables):
    """`make -s TARGET K=V ...` in the repository (the venv stamp is taken as
    up to date: the tests never reinstall tools)."""
    cmd = ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", target, "PY=" + sys.executable]
    cmd += ["%s=%s" % (k, v) for k, v in variables.items()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def commands(res):
    return [shlex.split(line) for line in res.stdout.splitlines() if line.strip()]


def failed(res, status, message):
    """make failed because the tool exited with `status`, saying `message`."""
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Error %d" % status in res.stderr, res.stderr
    assert message in res.stderr, res.stderr


# -- firmware images (minimal, with the headers the checks read) -------------------


def esp_image(path, chip_id=0, magic=0xE9):
    img = bytearray(256)
    img[0], img[1], img[2], img[3] = magic, 3, 2, 0x20  # magic, segments, DIO, 4MB/40MHz
    struct.pack_into("<H", img, 12, chip_id)  # extended header: chip id
    Path(path).write_bytes(bytes(img))
    return str(path)


def uf2_image(path, family=0xE48BFF56, blocks=4, bad_block=None):
    out = bytearray()
    for i in range(blocks):
        b = bytearray(512)
        struct.pack_into(
            "<8I",
            b,
            0,
            0x0A324655,
            0x9E5D5157,
            0x2000,
            0x10000000 + 256 * i,
            256,
            i,
            blocks,
            family,
        )
        struct.pack_into("<I", b, 508, 0x0AB16F30 if i != bad_block else 0)
        out += b
    Path(path).write_bytes(bytes(out))
    return str(path)


@pytest.fixture
def images(tmp_path):
    return {
        "bin": esp_image(tmp_path / "ESP32_GENERIC-20250415-v1.25.0.bin"),
        "uf2": uf2_image(tmp_path / "RPI_PICO_W-20250415-v1.25.0.uf2"),
    }


@pytest.fixture
def drive(tmp_path):
    d = tmp_path / "media" / "RPI-RP2"
    d.mkdir(parents=True)
    (d / "INFO_UF2.TXT").write_text(
        "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
    )
    return d


# -- board data ----------------------------------------------------------------------


def test_board_data_is_complete_and_valid():
    assert boards.known_boards() == ["esp32", "pico_w", "unix"]
    esp, pico, unix = (boards.load_board(n) for n in ("esp32", "pico_w", "unix"))
    assert (esp["port"], esp["mpy_arch"]) == ("esp32", "xtensawin")
    assert (pico["port"], pico["mpy_arch"]) == ("rp2", "armv6m")
    assert unix["port"] == "unix" and unix["mpy_arch"] in (None, "x64")
    assert esp["flash"] == {
        "method": "esptool",
        "chip": "esp32",
        "offset": "0x1000",
        "baud": 460800,
        "erase": True,
    }
    assert esp["firmware"]["extension"] == ".bin"
    assert esp["firmware"]["download"] == "https://micropython.org/download/ESP32_GENERIC/"
    assert pico["flash"]["method"] == "uf2" and pico["firmware"]["extension"] == ".uf2"
    assert pico["firmware"]["download"] == "https://micropython.org/download/RPI_PICO_W/"
    for b in (esp, pico):
        cfg = b["config"]
        assert cfg["link"] == {"type": "xbee"}
        assert {"uart", "tx", "rx", "baudrate", "ap"} <= set(cfg["xbee"])
        assert cfg["xbee"]["ap"] == 2 and "escaped" not in cfg["xbee"]  # AP=2 is escaping
        assert cfg["led"]["pin"] is not None and cfg["button"]["pin"] is not None
        assert cfg["wifi"] == {"ssid": "", "password": ""}
    assert unix["config"]["link"] == {"type": "udp"}


def test_code_never_tests_a_board_name():
    files = sorted((ROOT / "host_tools" / "boards").glob("*.py"))
    assert files
    for f in files:
        src = f.read_text()
        assert not re.search(r"""(==|!=|\bin)\s*\(?["'](esp32|pico_w|unix)["']""", src), f
        assert "pico_w" not in src, f


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda b: b.update(mpy_arch="xtensa-lx7"), "mpy_arch"),
        (lambda b: b.update(port="stm32"), "port must be"),
        (lambda b: b["flash"].update(method="dfu"), "flash.method"),
        (lambda b: b["flash"].update(offset="at the start"), "flash.offset"),
        (lambda b: b["firmware"].update(chip_id="esp32"), "chip_id"),
        (lambda b: b["config"]["xbee"].pop("uart"), "xbee.uart"),
        (lambda b: b["config"]["xbee"].update(ap=3), "xbee.ap must be 1 or 2"),
        (lambda b: b["config"]["link"].update(type="lora"), "link.type"),
        (lambda b: b["config"].update(button={"gpio": 0}), "button"),
        (lambda b: b["config"].update(wifi={"ssid": None}), "wifi"),
        (lambda b: b.update(name="esp32s3"), "differs from its folder"),
    ],
)
def test_validation_names_each_problem(edit, problem):
    b = json.loads((ROOT / "boards/esp32/board.json").read_text())
    b["config"] = json.loads((ROOT / "boards/esp32/board_config.json").read_text())
    assert boards.validate_board(b, "esp32") == []
    edit(b)
    problems = boards.validate_board(b, "esp32")
    assert problems and any(problem in p for p in problems), problems


def test_invalid_board_folder_is_refused(tmp_path):
    shutil.copytree(ROOT / "boards" / "pico_w", tmp_path / "pico_w")
    (tmp_path / "pico_w" / "board_config.json").write_text('{"link": {"type": "xbee"}')
    with pytest.raises(boards.BoardError, match="not valid JSON"):
        boards.load_board("pico_w", tmp_path)


def test_manifests_freeze_every_firmware_module():
    """Run each boards/*/manifest.py the way MicroPython's manifestfile.py does
    (each manifest from its own folder; $(...) includes are the port's own)."""
    for name in boards.known_boards():
        frozen, port_includes = [], []

        class Options(dict):
            def defaults(self, **kw):
                for k, v in kw.items():
                    self.setdefault(k, v)

            __getattr__ = dict.__getitem__

        def include(path, **kwargs):
            if path.startswith("$("):
                port_includes.append(path)
                return
            full = Path(os.getcwd(), path).resolve()
            prev = os.getcwd()
            os.chdir(full.parent)
            try:
                g = {"include": include, "package": package, "options": Options(kwargs)}
                exec(full.read_text(), g)
            finally:
                os.chdir(prev)

        def package(pkg, files=None, base_path="."):
            frozen.extend(Path(pkg, f) for f in files)

        prev = os.getcwd()
        os.chdir(ROOT / "boards" / name)
        try:
            include("manifest.py")
        finally:
            os.chdir(prev)
        assert len(port_includes) == 1, (name, port_includes)
        if name == "unix":  # like the standard unix variant: its manifest brings asyncio
            assert port_includes == ["$(PORT_DIR)/variants/standard/manifest.py"]
        arch = boards.load_board(name)["mpy_arch"]
        want = {m for m in boards.firmware_modules(arch=arch) if m.parts[0] == "atls"}
        assert want and want == set(frozen), name  # the Thumb code only where it assembles


# -- mpy ------------------------------------------------------------------------------


def test_mpy_cross_builds_every_module_for_each_board(tmp_path):
    mods = boards.firmware_modules()
    assert Path("atls/app.py") in mods and Path("main.py") not in mods
    for name in boards.known_boards():
        b = boards.build_mpy(name, out_root=tmp_path)
        out = tmp_path / name
        mods = boards.firmware_modules(arch=boards.load_board(name)["mpy_arch"])
        assert b["modules"] == len(mods) and b["bytes"] > 20000
        for m in mods:
            head = (out / m.with_suffix(".mpy")).read_bytes()[:2]
            assert head == b"M\x06", m  # .mpy version 6
            assert not (out / m).exists()
        assert (out / "main.py").read_text() == (ROOT / "firmware/main.py").read_text()
        assert (
            json.loads((out / "board_config.json").read_text()) == boards.load_board(name)["config"]
        )
    sizes = boards.mpy_sizes()
    assert set(sizes) == {"esp32", "pico_w", "unix"} and min(sizes.values()) > 20000


def test_mpy_skips_the_host_only_crypto_backend(tmp_path):
    """firmware/atls/crypto/cpython.py (the CPython backend, it imports
    `cryptography`) never goes to a device."""
    src = tmp_path / "fw"
    (src / "atls" / "crypto").mkdir(parents=True)
    for rel in ("main.py", "atls/__init__.py", "atls/crypto/aead.py", "atls/crypto/cpython.py"):
        (src / rel).write_text("x = 1\n")
    assert boards.firmware_modules(src) == [Path("atls/__init__.py"), Path("atls/crypto/aead.py")]
    b = boards.build_mpy("pico_w", out_root=tmp_path / "out", src=src)
    assert b["modules"] == 2
    assert (tmp_path / "out/pico_w/atls/crypto/aead.mpy").exists()
    assert not (tmp_path / "out/pico_w/atls/crypto/cpython.mpy").exists()


def test_unix_port_imports_every_module_from_mpy():
    r = boards.import_ram("unix")
    unix = boards.firmware_modules(arch=boards.load_board("unix")["mpy_arch"])
    assert r["failed"] == [] and r["modules"] == len(unix)
    assert r["bytes"] > 0


def test_make_mpy_reports_total_size():
    res = make("mpy", BOARD="pico_w")
    assert res.returncode == 0, res.stderr
    assert re.search(
        r"pico_w\s+build/pico_w: \d+ modules, \d+ bytes of \.mpy \(arch armv6m\)", res.stdout
    ), res.stdout


# -- flash ------------------------------------------------------------------------------


def test_flash_esp32_dry_run_erases_then_writes_at_0x1000(images):
    res = make("flash", BOARD="esp32", PORT="/dev/ttyUSB0", FIRMWARE=images["bin"], DRY_RUN=1)
    assert res.returncode == 0, res.stderr
    erase, write = commands(res)
    assert Path(erase[0]).name == "esptool" and Path(write[0]).name == "esptool"
    base = ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800"]
    assert erase[1:] == base + ["erase-flash"]
    assert write[1:] == base + ["write-flash", "-z", "0x1000", images["bin"]]
    res = make(
        "flash", BOARD="esp32", PORT="/dev/ttyUSB1", FIRMWARE=images["bin"], DRY_RUN=1, BAUD=115200
    )
    assert [c[1:7] for c in commands(res)] == [
        ["--chip", "esp32", "--port", "/dev/ttyUSB1", "--baud", "115200"]
    ] * 2


def test_flash_pico_w_dry_run_copies_the_uf2_to_the_drive(images, drive):
    res = make("flash", BOARD="pico_w", FIRMWARE=images["uf2"], MOUNT=drive, DRY_RUN=1)
    assert res.returncode == 0, res.stderr
    assert commands(res) == [["cp", images["uf2"], str(drive) + "/"], ["sync"]]
    assert not (drive / Path(images["uf2"]).name).exists()  # nothing ran


def test_flash_pico_w_copies_for_real(images, drive):
    res = make("flash", BOARD="pico_w", FIRMWARE=images["uf2"], MOUNT=drive)
    assert res.returncode == 0, res.stderr
    copied = drive / Path(images["uf2"]).name
    assert copied.read_bytes() == Path(images["uf2"]).read_bytes()


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["mpy", "flash", "deploy", "provision"])
def test_unknown_board_lists_the_known_ones(target):
    res = make(target, BOARD="esp8266", PORT="/dev/ttyUSB0", DEVICE="d1", DRY_RUN=1)
    failed(res, 2, "unknown BOARD 'esp8266': known boards are esp32, pico_w, unix")


@pytest.mark.parametrize("target", ["flash", "deploy", "provision"])
def test_missing_board(target):
    failed(
        make(target, PORT="/dev/ttyUSB0", DRY_RUN=1),
        2,
        "BOARD is required: one of esp32, pico_w, unix",
    )


@pytest.mark.parametrize("target", ["flash", "deploy", "provision"])
def test_missing_port(target, images):
    res = make(target, BOARD="esp32", FIRMWARE=images["bin"], DEVICE="d1", DRY_RUN=1)
    failed(res, 2, "PORT is required")


@pytest.mark.parametrize("target", ["flash", "deploy", "provision"])
def test_port_not_present(target, images):
    res = make(
        target, BOARD="esp32", PORT="/dev/ttyATLS-missing", FIRMWARE=images["bin"], DEVICE="d1"
    )
    failed(res, 2, "PORT /dev/ttyATLS-missing is not present")


@pytest.mark.parametrize("board, port", [("esp32", "/dev/ttyUSB0"), ("pico_w", "")])
def test_missing_firmware_says_where_to_download(board, port):
    res = make("flash", BOARD=board, PORT=port, DRY_RUN=1)
    failed(res, 2, "FIRMWARE is required")
    assert "https://micropython.org/download/" in res.stderr


def test_firmware_file_missing(tmp_path):
    res = make(
        "flash", BOARD="esp32", PORT="/dev/ttyUSB0", FIRMWARE=tmp_path / "nope.bin", DRY_RUN=1
    )
    failed(res, 2, "nope.bin: no such file")


@pytest.mark.parametrize(
    "board, kind, message",
    [
        ("esp32", "uf2", "is not a .bin file: board esp32 takes a .bin image"),
        ("pico_w", "bin", "is not a .uf2 file: board pico_w takes a .uf2 image"),
        (
            "esp32",
            "bad_magic",
            "is not an ESP32 firmware image (first byte must be the image magic 0xE9)",
        ),
        ("esp32", "esp32s3", "is built for ESP32-S3 (chip id 9), not esp32 (chip id 0)"),
        ("pico_w", "uf2_bad_block", "is not a UF2 file (block 2 lacks the UF2 magic"),
        ("pico_w", "uf2_truncated", "is not a UF2 file (size is not a multiple of 512"),
        ("pico_w", "uf2_rp2350", "is a UF2 for RP2350-ARM-S, not for board pico_w"),
    ],
)
def test_firmware_of_the_wrong_kind(tmp_path, drive, board, kind, message):
    fw = {
        "uf2": lambda: uf2_image(tmp_path / "fw.uf2"),
        "bin": lambda: esp_image(tmp_path / "fw.bin"),
        "bad_magic": lambda: esp_image(tmp_path / "fw.bin", magic=0x7F),
        "esp32s3": lambda: esp_image(tmp_path / "fw.bin", chip_id=9),
        "uf2_bad_block": lambda: uf2_image(tmp_path / "fw.uf2", bad_block=2),
        "uf2_rp2350": lambda: uf2_image(tmp_path / "fw.uf2", family=0xE48BFF59),
    }
    if kind == "uf2_truncated":
        path = tmp_path / "fw.uf2"
        path.write_bytes(Path(uf2_image(path)).read_bytes()[:700])
        path = str(path)
    else:
        path = fw[kind]()
    res = make("flash", BOARD=board, PORT="/dev/ttyUSB0", FIRMWARE=path, MOUNT=drive, DRY_RUN=1)
    failed(res, 2, message)
    assert res.stdout == ""


def test_unix_board_has_nothing_to_flash(images):
    failed(
        make("flash", BOARD="unix", FIRMWARE=images["bin"], DRY_RUN=1),
        2,
        "board unix has no firmware to flash",
    )


def test_pico_w_drive_problems(images, tmp_path):
    failed(
        make("flash", BOARD="pico_w", FIRMWARE=images["uf2"], MOUNT=tmp_path / "none", DRY_RUN=1),
        2,
        "is not a mounted drive",
    )
    failed(
        make("flash", BOARD="pico_w", FIRMWARE=images["uf2"], MOUNT=tmp_path, DRY_RUN=1),
        2,
        "is not a RPI-RP2 bootloader drive (no INFO_UF2.TXT)",
    )
    board = boards.load_board("pico_w")
    if not boards.find_uf2_mount(board) and not shutil.which("picotool"):
        failed(
            make("flash", BOARD="pico_w", FIRMWARE=images["uf2"], DRY_RUN=1),
            2,
            "no RPI-RP2 drive found (looked in /media/*/RPI-RP2",
        )


def test_esptool_failure_carries_its_message(images, tmp_path):
    port = tmp_path / "ttyNotASerialPort"
    port.write_text("")
    res = make("flash", BOARD="esp32", PORT=port, FIRMWARE=images["bin"])
    failed(res, 1, "flash: esptool failed (exit 2):")
    assert "Could not open %s" % port in res.stderr


def test_mpremote_failure_carries_its_message(tmp_path):
    port = tmp_path / "ttyNotASerialPort"
    port.write_text("")
    res = make("deploy", BOARD="esp32", PORT=port)
    failed(res, 1, "deploy: mpremote failed (exit 1): mpremote: failed to access %s" % port)


def test_provision_tool_failure_registers_nothing(tmp_path):
    port = tmp_path / "ttyNotASerialPort"
    port.write_text("")
    reg = tmp_path / "svc" / "devices.json"
    res = make("provision", BOARD="esp32", PORT=port, DEVICE="d1", REGISTRY=reg)
    failed(res, 1, "provision: mpremote failed (exit 1): mpremote: failed to access")
    assert not reg.exists() and not (ROOT / "build/esp32/device.json").exists()


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "DEVICE is required"),
        ({"DEVICE": "bad id!"}, "DEVICE 'bad id!': use 1..64 letters"),
        ({"DEVICE": "d1", "MODE": "x509"}, "MODE must be psk or cert, not 'x509'"),
        ({"DEVICE": "d1", "BOARD": "unix"}, "SERVICE=host:port is required"),
        ({"DEVICE": "d1", "BOARD": "unix", "SERVICE": "localhost"}, "SERVICE must be host:port"),
        ({"DEVICE": "d1", "SERVICE": "127.0.0.1:5684"}, "SERVICE is not used by board esp32"),
        ({"DEVICE": "d1", "MODE": "cert"}, "SERVICE_CA is required in cert mode"),
        # issue 13 item 5: a CA without a name to check accepts any certificate it issued
        ({"DEVICE": "d1", "MODE": "cert", "SERVICE_CA": "ca.pem"}, "SERVER_NAME is required"),
        (
            {"DEVICE": "d1", "MODE": "cert", "SERVICE_CA": "/nonexistent/ca.pem"},
            "SERVICE_CA /nonexistent/ca.pem: No such file",
        ),
        ({"DEVICE": "d1", "APP": "{count: 3}"}, "APP must be a JSON object"),
        ({"DEVICE": "d1", "APP": "[3]"}, "APP must be a JSON object"),
    ],
)
def test_provision_usage_errors(tmp_path, variables, message):
    v = dict(
        {
            "BOARD": "esp32",
            "PORT": "/dev/ttyUSB0",
            "DRY_RUN": 1,
            "REGISTRY": tmp_path / "devices.json",
            "PKI": tmp_path / "pki",
        },
        **variables,
    )
    if v.get("SERVICE_CA") == "ca.pem":  # a real CA file
        v["SERVICE_CA"] = tmp_path / "ca.pem"
        v["SERVICE_CA"].write_bytes(pki.pem(pki.make_ca("Service CA").cert))
    failed(make("provision", **v), 2, message)
    assert not (tmp_path / "devices.json").exists() and not (tmp_path / "pki").exists()


def test_provision_dry_run_writes_nothing(tmp_path):
    reg, pki_dir = tmp_path / "svc" / "devices.json", tmp_path / "pki"
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.pem(pki.make_ca("Service CA").cert))
    for mode in ("psk", "cert"):
        res = make(
            "provision",
            BOARD="pico_w",
            PORT="/dev/ttyACM0",
            DEVICE="d1",
            MODE=mode,
            SERVICE_CA=ca,
            SERVER_NAME="service.local",
            REGISTRY=reg,
            PKI=pki_dir,
            DRY_RUN=1,
        )
        assert res.returncode == 0, res.stderr
        cmds = [c for c in commands(res) if c[0] != "#"]
        assert len(cmds) == 1
        assert Path(cmds[0][0]).name == "mpremote"
        assert cmds[0][1:] == [
            "connect",
            "/dev/ttyACM0",
            "resume",
            "fs",
            "cp",
            "build/pico_w/device.json",
            ":device.json",
        ]
        # the install code and its QR code are steps of their own
        notes = [line for line in res.stdout.splitlines() if line.startswith("#")]
        assert any("install code" in n and "QR code PNG" in n for n in notes), res.stdout
        assert any("make pair QR=build/install-codes/d1.png" in n for n in notes)
        assert not (ROOT / "build/install-codes/d1.png").exists()
        assert "register d1 (%s) in %s" % (mode, reg) in res.stdout
        assert "a fresh 32-byte random seed" in res.stdout  # named, never shown
    assert not reg.parent.exists() and not pki_dir.exists()
    assert not (ROOT / "build/pico_w/device.json").exists()


def test_exit_status_of_the_cli_itself(images, capsys):
    assert (
        boards.main(
            [
                "flash",
                "--board",
                "esp32",
                "--port",
                "/dev/ttyUSB0",
                "--firmware",
                images["uf2"],
                "--dry-run",
            ]
        )
        == 2
    )
    assert "not a .bin file" in capsys.readouterr().err
    assert (
        boards.main(
            [
                "flash",
                "--board",
                "esp32",
                "--port",
                "/dev/ttyUSB0",
                "--firmware",
                images["bin"],
                "--dry-run",
            ]
        )
        == 0
    )


# -- for real: a MicroPython unix port behind a pty stands in for a board ----------------


@pytest.fixture(scope="module")
def unix_board(tmp_path_factory):
    """The unix port's REPL behind a pty (python -m host_tools.boards.ptyboard:
    Python's own pty handling, no socat), its working directory standing in for
    the board's filesystem; deployed once with `make deploy`."""
    base = tmp_path_factory.mktemp("board")
    fs = base / "fs"
    (fs / "atls").mkdir(parents=True)
    (fs / "atls" / "app.py").write_text("raise SystemExit('stale source must not be run')\n")
    tty = base / "ttyV0"
    log = open(base / "ptyboard.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.boards.ptyboard",
            "--link",
            str(tty),
            "--micropython",
            MICROPYTHON,
        ],
        cwd=fs,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ, MICROPYPATH=".frozen"),
    )
    try:
        deadline = time.time() + 15
        while not tty.exists():
            assert proc.poll() is None and time.time() < deadline, (
                base / "ptyboard.log"
            ).read_text()
            time.sleep(0.05)
        res = make("deploy", BOARD="unix", PORT=tty)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        yield {"tty": tty, "fs": fs, "base": base, "deploy": res}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        log.close()


def _deployed(fs):
    return sorted(p.relative_to(fs).as_posix() for p in Path(fs).rglob("*") if p.is_file())


def test_deploy_copies_mpy_main_and_board_config(unix_board):
    files = _deployed(unix_board["fs"])
    want = sorted(
        [m.with_suffix(".mpy").as_posix() for m in boards.firmware_modules(arch="x64")]
        + ["main.py", "board_config.json"]
    )
    got = [f for f in files if f != "device.json"]
    assert got == want  # the stale atls/app.py source is gone, nothing else came along
    assert (unix_board["fs"] / "board_config.json").read_text() == (
        ROOT / "boards/unix/board_config.json"
    ).read_text()
    n = len(boards.firmware_modules(arch="x64"))
    assert "deployed %d modules" % n in unix_board["deploy"].stdout


def _service(svc_dir, listen, cert=None):
    cfg = {
        "listen": "127.0.0.1:%d" % listen,
        "registry": "devices.json",
        "link": {"mtu": 1200, "rto_ms": 300, "rto_max_ms": 2000},
    }
    if cert is not None:
        (svc_dir / "server.pem").write_bytes(pki.pem(cert.chain))
        (svc_dir / "server.key").write_bytes(pki.pem(cert.key))
        cfg.update(cert="server.pem", key="server.key")
    (svc_dir / "service.json").write_text(json.dumps(cfg))
    ready = svc_dir / "service.ready"
    logf = open(svc_dir / "service.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.service",
            "--config",
            str(svc_dir / "service.json"),
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=logf,
        stderr=subprocess.STDOUT,
    )
    proc.logf = logf
    wait_file(ready, proc)
    return proc


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    proc.logf.close()


def _run_deployed(unix_board, tmp_path):
    """Copy exactly the deployed files and run the firmware from them alone."""
    run_dir = tmp_path / "device"
    shutil.copytree(unix_board["fs"], run_dir)
    files = _deployed(run_dir)
    assert "device.json" in files and "main.py" in files
    assert [f for f in files if f.endswith(".py")] == ["main.py"]
    p = subprocess.run(
        [MICROPYTHON, "main.py"],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ, MICROPYPATH=".frozen"),
    )
    events = [json.loads(line[5:]) for line in p.stdout.splitlines() if line.startswith("ATLS ")]
    return p, events


def _check_session(p, events, device):
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    boot = dict(events[0])
    assert len(boot.pop("boot", "")) == 8  # a random id per power-up
    assert boot == {"ev": "boot", "device": device, "board": "unix"}
    assert any(e["ev"] == "up" for e in events)
    done = [e for e in events if e["ev"] == "done"]
    assert (
        done and done[0]["sent"] == 3 and done[0]["delivered"] == 3 and done[0]["received"] == 3
    ), events


def test_provision_psk_then_run_the_deployed_firmware(unix_board, tmp_path):
    svc_dir = tmp_path / "svc"
    reg = svc_dir / "devices.json"
    port = free_port()
    res = make(
        "provision",
        BOARD="unix",
        PORT=unix_board["tty"],
        DEVICE="dev-9",
        SERVICE="127.0.0.1:%d" % port,
        REGISTRY=reg,
        APP=APP,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (ROOT / "build/unix/device.json").exists()  # the staged copy is gone
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600
    psk = json.loads(reg.read_text())["devices"]["dev-9"]["psk"]
    dev = json.loads((unix_board["fs"] / "device.json").read_text())
    seed = dev.pop("seed")
    assert len(bytes.fromhex(seed)) == 32 and seed not in reg.read_text()
    assert seed not in res.stdout + res.stderr  # never printed
    # the install code: printed with its QR code, the PNG written 0600
    from host_tools.install_code import format_code, parse_code, read_qr

    code = parse_code(dev.pop("install_code"))
    assert (
        format_code(code) in res.stdout and "QR code: build/install-codes/dev-9.png" in res.stdout
    )
    png = ROOT / "build/install-codes/dev-9.png"
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    assert read_qr(png) == ("dev-9", "default", code)
    assert dev == {
        "device_id": "dev-9",
        "service": "default",
        "tls": {"psk": psk, "psk_identity": "dev-9"},
        "link": {"host": "127.0.0.1", "port": port},
        "app": json.loads(APP),
    }
    assert len(bytes.fromhex(psk)) == 32
    assert psk not in res.stdout + res.stderr  # never printed

    # a second provisioning of the same id is refused, the registry untouched
    before = reg.read_text()
    res2 = make(
        "provision",
        BOARD="unix",
        PORT=unix_board["tty"],
        DEVICE="dev-9",
        SERVICE="127.0.0.1:%d" % port,
        REGISTRY=reg,
        APP=APP,
    )
    failed(res2, 2, "device dev-9 is already registered in %s: FORCE=1" % reg)
    assert reg.read_text() == before

    svc = _service(svc_dir, port)
    try:
        p, events = _run_deployed(unix_board, tmp_path)
    finally:
        _stop(svc)
    _check_session(p, events, "dev-9")
    log = (svc_dir / "service.log").read_text()
    assert '"identity": "dev-9"' in log and psk not in log
    assert seed not in p.stdout + p.stderr  # the device never logs its seed


def test_provision_cert_then_run_the_deployed_firmware(unix_board, tmp_path):
    svc_dir = tmp_path / "svc"
    svc_dir.mkdir()
    reg, pki_dir = svc_dir / "devices.json", tmp_path / "pki"
    service_ca = pki.make_ca("Service CA")
    server = pki.make_cert("service.local", issuer=service_ca)
    (tmp_path / "service-ca.pem").write_bytes(pki.pem(service_ca.cert))
    port = free_port()
    common = dict(
        BOARD="unix",
        PORT=unix_board["tty"],
        MODE="cert",
        REGISTRY=reg,
        PKI=pki_dir,
        SERVICE="127.0.0.1:%d" % port,
        SERVICE_CA=tmp_path / "service-ca.pem",
        SERVER_NAME="service.local",
        APP=APP,
    )
    res = make("provision", DEVICE="dev-10", **common)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "created the device CA" in res.stdout
    assert stat.S_IMODE((pki_dir / "device-ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700
    registry = json.loads(reg.read_text())
    assert registry["device_ca"] == "../pki/device-ca.pem"
    assert set(registry["devices"]["dev-10"]) == {"cert_sha256"}
    dev = json.loads((unix_board["fs"] / "device.json").read_text())
    assert len(bytes.fromhex(dev["seed"])) == 32
    tls = dev["tls"]
    assert set(tls) == {"ca", "cert", "key", "server_name"}
    assert bytes.fromhex(tls["ca"]) == pki.der(service_ca.cert)
    assert tls["server_name"] == "service.local" and len(tls["key"]) == 64
    assert tls["key"] not in res.stdout + res.stderr
    assert (pki_dir / "devices" / "dev-10.pem").exists()

    svc = _service(svc_dir, port, cert=server)
    try:
        p, events = _run_deployed(unix_board, tmp_path)
    finally:
        _stop(svc)
    _check_session(p, events, "dev-10")
    assert '"identity": "dev-10"' in (svc_dir / "service.log").read_text()

    assert dev["seed"] not in p.stdout + p.stderr + res.stdout + res.stderr

    # the next device reuses the same CA; FORCE=1 re-provisions an id
    ca_pem = (pki_dir / "device-ca.pem").read_bytes()
    res = make("provision", DEVICE="dev-10", FORCE=1, **common)
    assert res.returncode == 0, res.stderr
    again = json.loads((unix_board["fs"] / "device.json").read_text())
    assert again["seed"] != dev["seed"]  # a fresh seed every provisioning
    assert "created the device CA" not in res.stdout
    assert (pki_dir / "device-ca.pem").read_bytes() == ca_pem
    assert json.loads(reg.read_text())["devices"]["dev-10"] != registry["devices"]["dev-10"]
    # a registry that trusts another device CA is not silently switched
    res = make("provision", DEVICE="dev-11", **dict(common, PKI=tmp_path / "other-pki"))
    failed(res, 2, "already trusts another device CA")
