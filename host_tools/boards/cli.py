"""Boards: compile, flash, deploy and provision (`make mpy|flash|deploy|provision`).

    python -m host_tools.boards mpy       [--board B]
    python -m host_tools.boards flash     --board B [--port P] --firmware F [--mount M] [--baud N]
    python -m host_tools.boards deploy    --board B --port P
    python -m host_tools.boards provision --board B --port P --device ID [--mode psk|cert]
                                          [--service HOST:PORT] [--service-ca PEM]
                                          [--server-name N] [--service-name N] [--app JSON]
                                          [--registry PATH] [--pki DIR] [--force]
                                          [--no-install-code] [--qr-dir DIR]
                                          [--zigbee-link-key HEX]
    (flash, deploy and provision take --dry-run: print the commands, run nothing)

Errors are one line on stderr and a non-zero exit: 2 for a usage or data
problem (unknown board, missing PORT/FIRMWARE, port not present, wrong image),
1 when a tool (mpy-cross, esptool, mpremote, cp, picotool) fails, with the
tool's own message.
"""

import argparse
import sys

from host_tools.boards.config import BoardError, ToolError, known_boards, load_board
from host_tools.boards.deploy import deploy
from host_tools.boards.flash import flash_commands
from host_tools.boards.mpy import build_mpy
from host_tools.boards.provision import DEFAULT_PKI, DEFAULT_QR_DIR, DEFAULT_REGISTRY, provision
from host_tools.boards.tools import rel, run_all


def cmd_mpy(a):
    names = [a.board] if a.board else known_boards()
    for name in names:
        b = build_mpy(name)
        print(
            "%-8s %s: %d modules, %d bytes of .mpy (arch %s)"
            % (
                name,
                rel(b["dir"]),
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
        release_pub=a.release_pub,
        install_code=not a.no_install_code,
        qr_dir=a.qr_dir or DEFAULT_QR_DIR,
        zigbee_link_key=a.zigbee_link_key,
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
            p.add_argument("--release-pub")
            p.add_argument("--no-install-code", action="store_true")
            p.add_argument("--qr-dir", help="where the install code's QR PNG goes")
            p.add_argument("--zigbee-link-key", help="the ZigBee network's link key (32 hex)")
    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except (BoardError, ToolError) as e:
        sys.stdout.flush()
        print("%s: %s" % (a.cmd, e), file=sys.stderr)
        return e.status
    return 0
