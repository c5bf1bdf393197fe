"""Transitional: names of the former atls.tls.keys that code outside the TLS
package still imports.  Key shares are atls.tls.keyshare, the key schedule
atls.tls.schedule, record protection atls.tls.record, the AEAD
atls.crypto.aead.new, and suite names atls.protocol.  Delete this module
once firmware/atls/app.py and host_tools/mpy/probe.py import SUITE_NAMES
from atls.protocol (issue 11).
"""

from atls.protocol import SUITE_NAMES  # noqa: F401
