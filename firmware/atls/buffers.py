"""Long-lived fixed buffers, allocated before the firmware's imports (issue 17).

Why: MicroPython's collector never moves an object.  Importing the firmware
(~90 KiB of .mpy code in PSK mode, ~120 KiB with certificates) leaves its
long-lived code between the loader's garbage (read buffers, outgrown dicts and
qstr pools), so afterwards the free heap is in pieces: on the emulated Pico the
XBee UART's 2 KiB receive ring failed with ~30 KiB free ("MemoryError
allocating 2049 bytes"), and the native P-256 workspace likewise.  early()
runs first (atls.supervisor.main, before `import atls.app`: after atls.ota.boot
chose the firmware slot, so these are the slot's modules), while the free heap
is one piece, and allocates what lives for the whole run:

  the board's XBee UART with its rx/tx rings   uart(): drivers.xbee.from_board
  the X25519 ladder's workspace (ECDHE with    take("x25519"): native_f25519
  x25519, the default)
  the native P-256 workspace (certificates,    take("p256"): native_p256.buffers
  or secp256r1 as the first group)

It reads only the two configuration files; what it cannot do (no UART on the
unix port or CPython, an emulated module over TCP, a file that does not load)
it leaves alone: the modules then allocate the same objects themselves, and the
application reports a bad configuration as before.  SIZES is where the sizes
are defined; a module given a buffer checks its size.
"""

import gc

SIZES = {"p256": 80 * 59, "x25519": 80 * 17}  # native_p256, native_f25519: elements of 80 B

_HELD = {}  # name -> bytearray; "uart" -> (id, args, UART)
_UART_KEYS = ("tx", "rx", "rts", "cts", "flow", "rxbuf", "txbuf")


def link_config(board, dev):
    """(link, xbee): the link section (board, then device.json's overrides) and
    its XBee section, the same way; app.open_link opens what they say."""
    link = dict(board.get("link") or {})
    link.update(dev.get("link") or {})
    xbee = dict(board.get("xbee") or {})
    xbee.update(link.get("xbee") or {})
    return link, xbee


def uart_args(cfg):
    """machine.UART keyword arguments from a board's xbee section."""
    args = {"baudrate": cfg["baudrate"], "timeout": 0}
    for k in _UART_KEYS:
        if k in cfg:
            args[k] = cfg[k]
    return args


def uart(uid, args):
    """UART `uid` opened with `args`: the one early() opened with the same
    arguments (its rings allocated while the heap was whole), else a new one."""
    held = _HELD.get("uart")
    if held is not None and held[0] == uid and held[1] == args:
        return held[2]
    from machine import UART

    return UART(uid, **args)


def take(name):
    """The buffer reserved under `name` (SIZES), or a new one when early() did
    not reserve it; the caller keeps it for the run."""
    b = _HELD.pop(name, None)
    return b if b is not None else bytearray(SIZES[name])


def early(board_path="board_config.json", device_path="device.json"):
    """Allocate the fixed buffers this configuration will use; returns their
    names.  Never raises for a missing or bad file (the application says)."""
    import json

    try:
        with open(board_path) as f:
            board = json.load(f)
        with open(device_path) as f:
            dev = json.load(f)
        link, x = link_config(board, dev)
        t = dev.get("tls") or {}
        groups = t.get("groups") or ()
        p256 = bool(t.get("ca")) or (len(groups) > 0 and groups[0] == "secp256r1")
        x25519 = not groups or "x25519" in groups  # the default groups have it
        want = None
        if link.get("type", "udp") == "xbee" and not x.get("tcp") and "uart" in x:
            want = (x["uart"], uart_args(x))
    except Exception:  # the application loads the files again and reports
        return []
    board = dev = link = x = t = groups = None
    gc.collect()  # the files' text and dicts: free before the buffers go in
    got = []
    if want is not None:
        try:
            from machine import UART

            _HELD["uart"] = (want[0], want[1], UART(want[0], **want[1]))
            got.append("uart")
        except Exception:  # no machine.UART (unix port), a bad pin: from_board says
            pass
    for name, used in (("x25519", x25519), ("p256", p256)):
        if used and name not in _HELD:
            _HELD[name] = bytearray(SIZES[name])
            got.append(name)
    return got
