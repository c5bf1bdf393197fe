"""ATLS over HTTP and CoAP: the binding's own wire conventions, defined once.

The service's listeners (host_tools.service.bindings) and the client
(host_tools.atls_http_client) both import them; docs/BINDINGS.md describes
them in full.

* Handshake: a request body is one TLS flight exactly as the client wrote it,
  the answer body the service's next flight exactly as OpenSSL wrote it
  (draft-friel-tls-atls-00 §9.1), Content-Type CT_FLIGHT (draft-00 §9.2; the
  latest draft's CT_FLIGHT_LATEST is accepted too), CoAP Content-Format
  CF_FLIGHT.  HTTP requests go to one of HTTP_PATHS; the first answer sets the
  session cookie COOKIE (§9.4).  CoAP requests go to COAP_PATH; the first
  answer (2.01 Created) names the session resource below it in Location-Path.
* Every successful answer names the session id the link packets use: header
  SID_HEADER (decimal), CoAP option SID_OPTION (2 bytes, big-endian).
* Data: a body is a batch of link packets (docs/PROTOCOL.md §1), each preceded
  by its length as 2 bytes big-endian (`pack_packets` / `unpack_packets`),
  Content-Type CT_DATA, CoAP Content-Format CF_DATA.  An empty batch polls;
  header WAIT_HEADER (CoAP Uri-Query WAIT_QUERY=ms) lets the service hold the
  answer until it has something to send.
* A refused request names its reason in header ERROR_HEADER (HTTP) and as
  the start of the body ("reason: detail", both bindings).
"""

__all__ = [
    "CT_FLIGHT",
    "CT_FLIGHT_LATEST",
    "FLIGHT_TYPES",
    "CT_DATA",
    "CF_FLIGHT",
    "CF_DATA",
    "SID_OPTION",
    "COOKIE",
    "SID_HEADER",
    "WAIT_HEADER",
    "WAIT_QUERY",
    "ERROR_HEADER",
    "MAX_BODY",
    "HTTP_PATHS",
    "COAP_PATH",
    "FramingError",
    "pack_packets",
    "unpack_packets",
]

CT_FLIGHT = "application/atls+octet-stream"  # draft-00 §9.2
CT_FLIGHT_LATEST = "application/atls"  # latest draft, "Content-Type Header"
FLIGHT_TYPES = (CT_FLIGHT, CT_FLIGHT_LATEST)
CT_DATA = "application/atls-data"  # ours: a batch of link packets (docs/BINDINGS.md)
CF_FLIGHT = 65000  # CoAP Content-Formats: experimental range (RFC 7252 §12.3);
CF_DATA = 65001  # the draft's application/atls ID is still TBD
SID_OPTION = 65004  # CoAP option, experimental range (RFC 7252 §12.2), elective
COOKIE = "atls-session"
SID_HEADER = "ATLS-Session-Id"
WAIT_HEADER = "ATLS-Wait"
WAIT_QUERY = "wait"  # CoAP Uri-Query wait=<ms>
ERROR_HEADER = "ATLS-Error"
MAX_BODY = 16384  # default bound of a request or answer body (bytes)
HTTP_PATHS = ("/atls", "/.well-known/atls")  # draft-00 §9.7; latest draft
COAP_PATH = (".well-known", "atls")


class FramingError(ValueError):
    pass


def pack_packets(packets):
    """len (2 bytes, big-endian) || packet, for each packet."""
    out = bytearray()
    for p in packets:
        if not 0 < len(p) <= 0xFFFF:
            raise FramingError("packet length must be 1..65535")
        out += len(p).to_bytes(2, "big")
        out += p
    return bytes(out)


def unpack_packets(body, max_packets=1024):
    """The packets of a batch; FramingError if it is not whole packets."""
    out = []
    pos = 0
    n = len(body)
    while pos < n:
        if n - pos < 2:
            raise FramingError("truncated length prefix")
        ln = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if ln == 0 or pos + ln > n:
            raise FramingError("bad packet length")
        if len(out) >= max_packets:
            raise FramingError("too many packets")
        out.append(bytes(body[pos : pos + ln]))
        pos += ln
    return out
