"""The ZigBee ⇄ UDP gateway: bridges devices behind an XBee coordinator (and
WiFi devices on UDP) to the ATLS service, over UDP or, per service, over the
draft's HTTP(S) / CoAP bindings through a keyless relay (docs/BINDINGS.md
"Gateway").  It sees only ciphertext and holds no keys: it forwards packets
that carry the ATLS marker (docs/PROTOCOL.md §1) from paired devices, drops
and counts everything else, and pairs devices (§8) into an allowlist kept on
disk.

    python -m host_tools.gateway run    --config gateway.json
    python -m host_tools.gateway pair   --config gateway.json [--window 60] [--yes | --code 123456]
    python -m host_tools.gateway list   --config gateway.json
    python -m host_tools.gateway unpair --config gateway.json ADDR64|DEVICE
    python -m host_tools.gateway stats  --config gateway.json

Modules:
    config         the config file (its format is documented there), GatewayError
    pairing_table  the allowlist on disk
    bridge         Gateway: ZigBee serial side, WiFi/UDP side, flows, limits, counters
    flows          FlowTable: who gets a flow, quotas, per-IP limits, expiry, eviction
    relay          keyless flight/packet relay to HTTP(S)/CoAP services
    control        the control socket: server side and client (`control`)
    capture        the debugging capture file
    cli            the command line and the running loop (`run`)
"""

from host_tools.gateway.bridge import Gateway
from host_tools.gateway.cli import main, run
from host_tools.gateway.config import Config, GatewayError, describe_service
from host_tools.gateway.control import control
from host_tools.gateway.pairing_table import PairingTable

__all__ = [
    "Config",
    "GatewayError",
    "Gateway",
    "PairingTable",
    "control",
    "describe_service",
    "main",
    "run",
]
