"""The AT commands of an emulated XBee 3 Zigbee module, as a table.

A command is answered the same way whether it comes in a Local AT Command
frame (0x08 -> 0x88) or, in transparent mode (AP=0), as an ATxx line in
command mode (sim/radio/command_mode.py):

  AP  API mode 0/1/2 (an API-frame change applies after its response)
  NP  max unicast RF payload: 84, or 66 when network encryption EE=1
  SH SL  own 64-bit address    MY  16-bit network address (0xFFFE unjoined)
  AI  association: 00 joined, 21 no PAN, 22 wrong ID, 23 join closed,
      27 security mismatch (EE), FF joining
  OP OI  operating PAN (64-bit, and a 16-bit one derived from it)
  NJ  join time (s).  On the coordinator, writing NJ opens the join window for
      NJ seconds (0xFF: always open, 0: close)
  CB  commissioning button: 2 on the coordinator opens joining for 60 s;
      1 on a device starts a join attempt; 4 on a device leaves the network
  EO  encryption options (2: centralized trust center)   DC  joining device
      controls (bit 0: join with the install-code link key)
  NK KY  network key (coordinator) and trust-center link key: write-only,
      a query answers nothing; NK 0 picks a random key
  I?  the module's install code (16 bytes + CRC-16)
  EE ID CE NI DH DL GT CT VR HV  stored/reported; NR (device: leave and
      rescan), AC (no-op), WR (the AP survives a restart), FR (software reset)
  anything else: status 2 (invalid command); a bad value: status 3

COMMANDS maps the two command letters to a Command(get, put, text):
  get(module) -> bytes   the value a query (no parameter) returns; None for
                         an action, whose `put` runs with or without one;
  put(module, param, n)  a write (n: the parameter's big-endian value, None
                         without one) or the action -> status; None for a
                         read-only command, which refuses a parameter (3);
  text                   command mode passes the parameter as text, not hex.
"""

from atls import xbee as X

OK = X.AT_OK
BAD = X.AT_INVALID_PARAMETER


class Command:
    __slots__ = ("get", "put", "text")

    def __init__(self, get=None, put=None, text=False):
        self.get = get
        self.put = put
        self.text = text


def answer(module, cmd, param):
    """-> (status, value) of AT command `cmd` (upper case) on `module`."""
    c = COMMANDS.get(cmd)
    if c is None:
        return X.AT_INVALID_COMMAND, b""
    if param and c.put is None:
        return BAD, b""
    if param or c.get is None:
        return c.put(module, param, int.from_bytes(param, "big") if param else None), b""
    return OK, c.get(module)


def text_parameter(cmd):
    """True when command mode passes `cmd`'s parameter as text (NI)."""
    c = COMMANDS.get(cmd)
    return c is not None and c.text


# -- parameter kinds ------------------------------------------------------------------------
def _read_only(get):
    return Command(get)


def _number(attr, width, scale=1, ok=None, then=None):
    """A number kept in module.<attr>: read as `width` big-endian bytes of
    attr // scale; written with at most `width` bytes, checked by
    ok(module, n), stored as n * scale, then then(module, old) runs."""

    def get(m):
        return (getattr(m, attr) // scale).to_bytes(width, "big")

    def put(m, p, n):
        if len(p) > width or (ok is not None and not ok(m, n)):
            return BAD
        old = getattr(m, attr)
        setattr(m, attr, n * scale)
        if then is not None:
            then(m, old)
        return OK

    return Command(get, put)


def _action(run):
    return Command(None, run)


# -- handlers -------------------------------------------------------------------------------
def _role(m):
    return 1 if m.coordinator else 0


def _operating_pan(m):
    c = m.medium.coordinator
    return c.pan_id if m.joined and c is not None else 0


def _put_ap(m, p, n):
    if len(p) != 1 or n > 2:
        return BAD
    m.defer_api_mode(n)  # the response still goes out in the old mode
    return OK


def _nj_written(m, old):
    if m.coordinator:
        m.open_join(None if m.nj == 0xFF else m.nj)


def _network_setting_written(attr):
    def then(m, old):
        if getattr(m, attr) != old:
            m.clock.call_soon(m.medium.network_changed, m)

    return then


def _put_ce(m, p, n):
    return OK if n == _role(m) else BAD  # the role is fixed in the emulator


def _put_ni(m, p, n):
    if len(p) > 20:
        return BAD
    m.ni = bytes(p)
    return OK


def _commissioning_button(m, p, n):
    if n not in (1, 2, 4):
        return BAD
    if m.coordinator and n == 2:
        m.open_join(60)
    elif not m.coordinator and n == 4 and m.joined:
        m.clock.call_soon(m.leave)
    elif not m.coordinator and n == 1:
        m.clock.call_soon(m.try_join)
    return OK


def _network_reset(m, p, n):
    if n not in (None, 0, 1):
        return BAD
    if not m.coordinator and m.joined:
        m.clock.call_soon(m.leave)
    return OK


def _software_reset(m, p, n):
    m.clock.call_later(0.01, m.restart, X.WATCHDOG_RESET)
    return OK


def _rescan(m, old=None):
    """An unjoined device keeps scanning: a new key or option is tried at once."""
    if not m.coordinator and not m.joined:
        m.clock.call_soon(m.try_join)


def _write_key(attr):
    def put(m, p, n):
        if len(p) > 16 or (attr == "nk" and not m.coordinator):
            return BAD
        key = bytes(p).rjust(16, b"\0")
        if attr == "nk" and key == bytes(16):
            key = m.key_rng.randbytes(16)
        setattr(m, attr, key)
        _rescan(m)
        if attr == "nk":  # a centralized trust center updates every joined device
            for d in m.medium.modules.values():
                if d is not m and d.joined and d.ee:
                    d.nk = key
        return OK

    return Command(lambda m: b"", put)


def _no_op(m, p, n):
    return OK


def _write_settings(m, p, n):
    m.write_settings()
    return OK


COMMANDS = {
    b"AP": Command(lambda m: bytes((m.ap,)), _put_ap),
    b"NP": _read_only(lambda m: m.max_payload().to_bytes(2, "big")),
    b"SH": _read_only(lambda m: m.addr64[:4]),
    b"SL": _read_only(lambda m: m.addr64[4:]),
    b"MY": _read_only(lambda m: m.my16.to_bytes(2, "big")),
    b"AI": _read_only(lambda m: bytes((m.association(),))),
    b"OP": _read_only(lambda m: _operating_pan(m).to_bytes(8, "big")),
    b"OI": _read_only(lambda m: (_operating_pan(m) & 0xFFFF).to_bytes(2, "big")),
    b"VR": _read_only(lambda m: b"\x10\x0a"),
    b"HV": _read_only(lambda m: b"\x42\x47"),
    b"NJ": _number("nj", 1, then=_nj_written),
    b"CB": _action(_commissioning_button),
    b"NR": _action(_network_reset),
    b"EE": _number("ee", 1, ok=lambda m, n: n <= 1, then=_network_setting_written("ee")),
    b"EO": _number("eo", 1, then=_rescan),
    b"DC": _number("dc", 2, then=_rescan),
    b"NK": _write_key("nk"),
    b"KY": _write_key("ky"),
    b"I?": _read_only(lambda m: m.install_code),
    b"ID": _number("pan_id", 8, then=_network_setting_written("pan_id")),
    b"CE": Command(lambda m: bytes((_role(m),)), _put_ce),
    b"NI": Command(lambda m: m.ni, _put_ni, text=True),
    b"DH": _number("dh", 4),
    b"DL": _number("dl", 4),
    b"GT": _number("gt_ms", 2, ok=lambda m, n: n >= 2),
    b"CT": _number("ct_ms", 2, scale=100, ok=lambda m, n: n >= 2),
    b"AC": _action(_no_op),
    b"WR": _action(_write_settings),
    b"FR": _action(_software_reset),
}
