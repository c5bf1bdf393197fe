"""ATLS over HTTP(S) and CoAP, client side (CPython): the draft's
bootstrapping use case (draft-friel-tls-atls-00 §3.1) with the device's own
TLS client and link modules (firmware/atls, imported unchanged).

    python -m host_tools.atls_http_client --url http://127.0.0.1:8080/atls \\
        --psk-id device-1 --psk 00112233... [--ca ca.pem --server-name svc] [--count N]

sends N numbered messages through the service, prints each echo and, as the
last line, a JSON summary.  `--url coap://host:port/.well-known/atls` uses
CoAP instead; `https://` URLs cross TLS-terminating middleboxes (verify the
middlebox with --https-ca, or not at all with --https-insecure: ATLS
authenticates the service end to end either way).

The wire conventions (content types, cookie, headers, CoAP options, the
packet batch framing) are host_tools.http_binding's, shared with the
service; docs/BINDINGS.md describes them.

Parts: `transports` - `HttpTransport` / `CoapTransport`, one per ATLS
session, each with `post_flight(bytes) -> bytes` and
`post_packets([bytes], wait_ms) -> [bytes]` (reusable, e.g. by a gateway);
`client` - `AtlsClient` runs TLSClient + Link over either transport, `run`
is the CLI's session; `__main__` - the CLI.
"""

from host_tools.atls_http_client.client import AtlsClient, main, run, tls_config_from_args
from host_tools.atls_http_client.transports import (
    CoapTransport,
    HttpTransport,
    TransportError,
    make_transport,
)

__all__ = [
    "TransportError",
    "HttpTransport",
    "CoapTransport",
    "make_transport",
    "AtlsClient",
    "tls_config_from_args",
    "run",
    "main",
]
