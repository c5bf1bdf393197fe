"""Transitional: the names of the former atls.tls.keys that code outside the
TLS package still imports; nothing here is used by the TLS client.

Key shares are atls.tls.keyshare, the key schedule atls.tls.schedule, record
protection atls.tls.record, the AEAD atls.crypto.aead.new, suite names and
tag lengths atls.protocol.  Delete this module once firmware/atls/app.py and
host_tools/mpy/probe.py import SUITE_NAMES from atls.protocol and
firmware/atls/channel.py and tests/test_channel.py use atls.crypto.aead.new
(issue 11).
"""

from atls.protocol import SUITE_NAMES, suite_tag_len  # noqa: F401


def new_aead(suite, key):
    """atls.crypto.aead.new(suite, key), for channel.py until it calls that."""
    from atls.crypto.aead import new

    return new(suite, key)
