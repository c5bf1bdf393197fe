"""The name tables of the protocol facts; read them as atls.protocol.<NAME>
(atls.protocol imports this module on first use, see its docstring).

  SUITE_NAMES  code point -> IANA name of the TLS 1.3 suites the device speaks
  SUITES       IANA name -> code point (device.json `tls.suites`, service config)
  GROUP_NAMES  named group code point -> name (RFC 8446 §4.2.7)
  GROUPS       name -> code point (device.json `tls.groups`)
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
