# Shared by boards/*/manifest.py: freeze the ATLS firmware package into a
# MicroPython image.  Paths are relative to this file (MicroPython manifest
# rules: each manifest runs from its own directory), so this works from any
# checkout location.  main.py, board_config.json and device.json stay on the
# board's filesystem (`make deploy` / `make provision` put them there).
# Every module of firmware/atls is frozen except the CPython crypto backend
# (atls/crypto/cpython.py imports `cryptography`; a device never loads it), and
# the inline-Thumb field arithmetic (native_*_thumb.py) unless the including
# manifest says the port has the Thumb assembler: include(..., thumb=True).
import os

options.defaults(thumb=False)
_HOST_ONLY = ("crypto/cpython.py",)
_files = []
for _dir, _subdirs, _names in os.walk("../firmware/atls"):
    _subdirs[:] = sorted(d for d in _subdirs if d != "__pycache__")
    for _n in sorted(_names):
        _rel = os.path.relpath(os.path.join(_dir, _n), "../firmware/atls").replace(os.sep, "/")
        _thumb_only = _n.startswith("native_") and _n.endswith("_thumb.py")
        if _n.endswith(".py") and _rel not in _HOST_ONLY and (options.thumb or not _thumb_only):
            _files.append(_rel)
package("atls", files=_files, base_path="../firmware")
