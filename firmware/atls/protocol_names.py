"""The name tables of the protocol facts; read them as atls.protocol.<NAME>
(atls.protocol imports this module on first use, see its docstring).

  SUITE_NAMES  code point -> IANA name of the TLS 1.3 suites the device speaks
  SUITES       IANA name -> code point (device.json `tls.suites`, service config)
  GROUP_NAMES  named group code point -> name (RFC 8446 §4.2.7)
  GROUPS       name -> code point (device.json `tls.groups`)
  ERROR_NAMES  ERROR reason -> name (the link's error events)
"""

from atls import protocol as _p

SUITE_NAMES = {
    _p.TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    _p.TLS_AES_128_CCM_SHA256: "TLS_AES_128_CCM_SHA256",
    _p.TLS_AES_128_CCM_8_SHA256: "TLS_AES_128_CCM_8_SHA256",
}
SUITES = {name: code for code, name in SUITE_NAMES.items()}
GROUP_NAMES = {_p.X25519: "x25519", _p.SECP256R1: "secp256r1"}
GROUPS = {name: code for code, name in GROUP_NAMES.items()}
ERROR_NAMES = {  # ERROR reasons (docs/PROTOCOL.md §5)
    _p.UNKNOWN_SESSION: "unknown_session",
    _p.HANDSHAKE_FAILED: "handshake_failed",
    _p.BUSY: "busy",
    _p.RESET: "reset",
}

# -- link protocol version and channels (docs/PROTOCOL.md §1, §4) ---------------
VERSION = 2  # the version bit of the header byte is set
CHANNEL_APP = 0  # DATA: the application's messages (the app API)
CHANNEL_CONTROL = 1  # CDATA: HELLO (seq 0 of every session and direction)
CHANNEL_UPDATE = 2  # CDATA: firmware update (the OTA issue); 3-255 reserved
