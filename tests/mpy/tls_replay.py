"""Replays of RFC 8448 traces through the TLS client; dialect-neutral so the
same code runs under CPython (imported by pytest) and under MicroPython.

Each function takes a dict of hex strings (cut from the trace by pytest) and
returns a dict of hex strings produced by the client, for pytest to compare.
Only public behaviour is read: records sent, state, exporter output and
tickets (the trace's secrets are checked through them by pytest).
"""

from binascii import hexlify, unhexlify

from atls.protocol import SECP256R1, TLS_AES_128_GCM_SHA256, X25519
from atls.tls.client import ClientConfig, TLSClient

# exporter label and context the replays export with (RFC 8448 has no
# exporter vector: pytest derives the expected value from the trace's
# exporter master secret)
EXPORT_LABEL = b"rfc8448 replay"
EXPORT_CONTEXT = b"context"


def _hex(b):
    return hexlify(bytes(b)).decode()


class _Feed:
    """A deterministic rng that hands out the given byte strings in order."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def __call__(self, n):
        c = self.chunks.pop(0)
        if len(c) != n:
            raise ValueError("rng asked for %d bytes, trace has %d" % (n, len(c)))
        return c


class CounterRng:
    """A deterministic rng that is the same under CPython and MicroPython:
    SHA-256(seed || counter) blocks.  A client built with it sends the same
    ClientHello in both, so a server flight recorded in CPython can be
    replayed in MicroPython."""

    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, size):
        from atls.crypto.backend import sha256

        out = b""
        while len(out) < size:
            out += sha256(self.seed + self.n.to_bytes(4, "big")).digest()
            self.n += 1
        return out[:size]


def _spki_pin(cert_msg):
    """SPKI SHA-256 of the first certificate in a Certificate message."""
    from atls import x509
    from atls.tls.auth import pull_certificate

    _, certs = pull_certificate(memoryview(cert_msg)[4:], 4)
    with _AllowRsa1024():
        return x509.spki_sha256(x509.Certificate(certs[0]))


class _AllowRsa1024:
    """RFC 8448 §2's server key is RSA-1024, below the production minimum:
    lower the minimum for the replay only."""

    def __enter__(self):
        from atls import x509

        self.saved = x509.MIN_RSA_BITS
        x509.MIN_RSA_BITS = 1024

    def __exit__(self, *exc):
        from atls import x509

        x509.MIN_RSA_BITS = self.saved


def replay_simple_1rtt(v):
    """RFC 8448 §3."""
    with _AllowRsa1024():
        return _replay_simple_1rtt(v)


def _replay_simple_1rtt(v):
    u = unhexlify
    cfg = ClientConfig(
        spki_pins=[_spki_pin(u(v["certificate"]))],
        server_name="server",
        check_hostname=False,
        suites=(TLS_AES_128_GCM_SHA256,),
    )
    c = TLSClient(cfg, rng=_Feed([u(v["client_private"])]), hello_override=[u(v["client_hello"])])
    c.start()
    out = {"client_hello_record": _hex(c.data_to_send())}
    c.receive(u(v["server_hello_record"]))
    c.receive(u(v["server_flight_record"]))
    out["client_finished_record"] = _hex(c.data_to_send())
    out["state"] = c.state
    out["exporter"] = _hex(c.exporter(EXPORT_LABEL, EXPORT_CONTEXT, 32))
    c.receive(u(v["ticket_record"]))
    out["ticket_psk"] = _hex(c.tickets[0].psk)
    out["ticket"] = _hex(c.tickets[0].identity)
    return out


def binder_for(psk, prefix, resumption=True):
    """RFC 8448 §4: the binder over a truncated ClientHello."""
    from atls.crypto.backend import sha256
    from atls.tls.schedule import KeySchedule, finished_mac

    ks = KeySchedule(psk)
    return {
        "early": _hex(ks.early),
        "binder": _hex(finished_mac(ks.binder_key(resumption), sha256(prefix).digest())),
    }


def replay_hello_retry(v):
    """RFC 8448 §5."""
    with _AllowRsa1024():
        return _replay_hello_retry(v)


def _replay_hello_retry(v):
    u = unhexlify
    cfg = ClientConfig(
        spki_pins=[_spki_pin(u(v["certificate"]))],
        server_name="server",
        check_hostname=False,
        suites=(TLS_AES_128_GCM_SHA256,),
        groups=(X25519, SECP256R1),
    )
    c = TLSClient(
        cfg,
        rng=_Feed([u(v["client_private_x25519"]), u(v["client_private_p256"])]),
        hello_override=[u(v["client_hello1"]), u(v["client_hello2"])],
    )
    c.start()
    out = {"client_hello1_record": _hex(c.data_to_send())}
    c.receive(u(v["hrr_record"]))
    out["client_hello2_record"] = _hex(c.data_to_send())
    c.receive(u(v["server_hello_record"]))
    c.receive(u(v["server_flight_record"]))
    out["client_finished_record"] = _hex(c.data_to_send())
    out["state"] = c.state
    out["hrr"] = c.hrr
    out["group"] = c.group
    return out
