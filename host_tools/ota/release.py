"""`make release` and `python -m host_tools.ota`:

  keygen  [--key build/release/release.key] [--force]
          the release key (private PEM 0600, public hex in <key>.pub)
  release --version X.Y.Z --board B [--min-version X.Y.Z] [--key …] [--out build/release]
          the board's firmware as .mpy (host_tools.boards.mpy), signed: <out>/<board>-<version>.atb
  verify  BUNDLE [--pub <key>.pub]    structure, hashes, and the signature when a key is given
  info    BUNDLE                      the header as JSON

Only `keygen` and `release` read the private key; nothing of the service needs it.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from host_tools.boards.config import BoardError, ToolError
from host_tools.ota import keys
from host_tools.ota.bundle import Bundle, BundleError, build, from_build_dir

DEFAULT_OUT = "build/release"


def release(
    version, board, min_version="0.0.0", key_path=keys.DEFAULT_KEY, out=DEFAULT_OUT, build_root=None
):
    """Build, sign and write the bundle; returns (path, Bundle).  The .mpy
    build goes to a temporary folder, or to build_root/<board>/ (kept)."""
    from atls.ota import parse_version
    from host_tools.boards.mpy import build_mpy

    parse_version(version), parse_version(min_version)  # before a long build
    key = keys.load_private(key_path)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_mpy(board, out_root=build_root or tmp)
        data = build(from_build_dir(built["dir"]), version, min_version, board, key)
    b = Bundle(data, keys.public_bytes(key))  # what a device will check, checked here first
    path = Path(out) / ("%s-%s.atb" % (board, b.version))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, b


def _args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.ota", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="create the release key")
    k.add_argument("--key", default=keys.DEFAULT_KEY)
    k.add_argument("--force", action="store_true")
    r = sub.add_parser("release", help="build and sign a bundle")
    r.add_argument("--version", required=True)
    r.add_argument("--board", required=True)
    r.add_argument("--min-version", default="0.0.0")
    r.add_argument("--key", default=keys.DEFAULT_KEY)
    r.add_argument("--out", default=DEFAULT_OUT)
    v = sub.add_parser("verify", help="check a bundle")
    v.add_argument("bundle")
    v.add_argument("--pub", help="release public key (<key>.pub) to check the signature")
    i = sub.add_parser("info", help="print a bundle's header")
    i.add_argument("bundle")
    return ap.parse_args(argv)


def main(argv=None):
    a = _args(argv)
    try:
        if a.cmd == "keygen":
            pub = keys.generate(a.key, a.force)
            print(
                "release key %s (mode 0600; keep it off the service and the gateway), "
                "public key %s: %s" % (a.key, keys.public_path(a.key), pub.hex())
            )
        elif a.cmd == "release":
            path, b = release(a.version, a.board, a.min_version, a.key, a.out)
            info = b.info()
            print(
                "release %s for %s: %s (%d bytes, %d files, id %s)"
                % (b.version, b.board, path, info["bytes"], info["files"], info["id"])
            )
        else:
            data = Path(a.bundle).read_bytes()
            pub = keys.load_public(a.pub) if getattr(a, "pub", None) else None
            b = Bundle(data, pub)
            if a.cmd == "info":
                info = b.info()
                info["file_table"] = [[p, n, d.hex()] for p, n, d in b.header.files()]
                print(json.dumps(info, indent=1))
            else:
                print(
                    "%s: ok (%s %s, hashes%s)"
                    % (a.bundle, b.board, b.version, ", signature" if pub else "")
                )
    except (keys.ReleaseKeyError, BundleError, BoardError, ToolError, ValueError, OSError) as e:
        print("%s: %s" % (a.cmd, e), file=sys.stderr)
        return 2
    return 0
