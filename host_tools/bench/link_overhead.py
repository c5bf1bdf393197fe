"""Section `link_overhead` (issue 4): bytes on the wire per message and for a
full PSK+ECDHE handshake, per suite and MTU.  Real handshakes: the firmware
TLS client + client Link against the service in-process (bench.pair)."""

from atls import protocol as P
from host_tools.bench.pair import Device, exchange, make_service, quiet_stderr, total_bytes

SUITES = (  # (key prefix, code point)
    ("ccm8", P.TLS_AES_128_CCM_8_SHA256),
    ("ccm", P.TLS_AES_128_CCM_SHA256),
    ("gcm", P.TLS_AES_128_GCM_SHA256),
)
MTUS = (64, 66, 84, 1200)
# draft-ietf-iotops-security-protocol-comparison (TLS 1.3 PSK+ECDHE, x25519,
# CCM_8, 1-byte identifiers): flights 163 + 157 + 50
ANCHOR_FLIGHTS = (163, 157, 50)
ANCHOR_HS = 370
ADDR = ("10.0.0.1", 5684)

NOTE = (
    "real handshakes (firmware TLSClient + Link vs Service in-process, no "
    "sockets, no loss); TLS bytes = flights as TLS produced them; wire = every "
    "link datagram incl. HS_ACK; PSK+ECDHE x25519"
)


def _ptype(d):
    return d[0] & 7


def _handshake(suite, mtu, identity=None):
    kw = {} if identity is None else {"identity": identity}
    with quiet_stderr():
        svc, tr = make_service(P.SUITE_NAMES[suite], mtu, **kw)
        dev = Device(suite, mtu, **kw)
        dev.start(0)
        up, down = exchange(dev, svc, tr, ADDR)
    if not dev.up:
        raise RuntimeError("handshake did not complete (%s, mtu %d)" % (P.SUITE_NAMES[suite], mtu))
    # the handshake's packets; the two HELLOs (v2, §4) and their ACKs are counted apart
    hs = (P.HS, P.HS_END, P.HS_ACK)
    dev.hello_bytes = total_bytes(d for d in up + down if _ptype(d) not in hs)
    return (
        svc,
        tr,
        dev,
        [d for d in up if _ptype(d) in hs],
        [d for d in down if _ptype(d) in hs],
    )


def _messages(res, short, dev, svc, tr):
    """A message and its ACK on the channel a handshake made (DATA: header 3 +
    seq 1 + tag, 12 bytes with CCM_8); CDATA on channel 2 one more."""
    with quiet_stderr():
        for size in (0, 16):
            dev.link.send(bytes(size), 0)
            u, dn = exchange(dev, svc, tr, ADDR)
            data = [d for d in u if _ptype(d) == P.DATA]
            acks = [d for d in dn if _ptype(d) == P.ACK]
            if size == 0:
                res["data_overhead_bytes_%s" % short] = len(data[0])
                res["channel_share_bytes_%s" % short] = len(data[0]) - P.HEADER_LEN
                res["ack_bytes_%s" % short] = len(acks[0])
            else:
                res["data_16B_wire_bytes_%s" % short] = len(data[0])
        # link protocol v2 (docs/PROTOCOL.md §4): another channel costs its sealed byte
        dev.link.send(b"", 0, 2)
        u, dn = exchange(dev, svc, tr, ADDR)
        res["cdata_overhead_bytes_%s" % short] = len([d for d in u if _ptype(d) == P.CDATA][0])


def link_overhead(quick=False):
    """Per-message overhead per suite; link framing on full handshakes."""
    res = {}
    for short, suite in SUITES:
        for mtu in (64, 1200) if quick and short != "ccm8" else MTUS:
            svc, tr, dev, up, down = _handshake(suite, mtu)
            c_tls = sum(n for who, n in dev.flights if who == "c")
            s_tls = sum(n for who, n in dev.flights if who == "s")
            tls, wire_b = c_tls + s_tls, total_bytes(up) + total_bytes(down)
            hs_ack = total_bytes(d for d in up + down if _ptype(d) == P.HS_ACK)
            k = "hs_%s_mtu%d_" % (short, mtu)
            if short == "ccm8":
                res[k + "up_tls_bytes"] = c_tls
                res[k + "up_wire_bytes"] = total_bytes(up)
                res[k + "down_tls_bytes"] = s_tls
                res[k + "down_wire_bytes"] = total_bytes(down)
                res[k + "datagrams"] = len(up) + len(down)
                res[k + "hs_ack_bytes"] = hs_ack
                res[k + "framing_no_hs_ack_pct"] = round((wire_b - hs_ack - tls) * 100.0 / tls, 2)
            res[k + "framing_pct"] = round((wire_b - tls) * 100.0 / tls, 2)
            if mtu == 1200:
                res["hs_%s_tls_bytes" % short] = tls
                res["hello_%s_wire_bytes" % short] = dev.hello_bytes
                res["hs_%s_flights" % short] = "+".join(str(n) for _, n in dev.flights)
            if mtu == 64:
                _messages(res, short, dev, svc, tr)
    res["hs_ccm8_vs_anchor_pct"] = round(
        (res["hs_ccm8_tls_bytes"] - ANCHOR_HS) * 100.0 / ANCHOR_HS, 1
    )
    # the anchor's assumptions (1-byte PSK identity): what differs is then OpenSSL's
    # record layout (EncryptedExtensions and Finished in two records, +14 bytes)
    dev = _handshake(P.TLS_AES_128_CCM_8_SHA256, 1200, identity=b"d")[2]
    res["hs_ccm8_1B_identity_flights"] = "+".join(str(n) for _, n in dev.flights)
    res["hs_ccm8_1B_identity_tls_bytes"] = sum(n for _, n in dev.flights)
    res["anchor_ietf_tls13_psk_ecdhe_bytes"] = ANCHOR_HS
    res["anchor_ietf_flights"] = "+".join(str(n) for n in ANCHOR_FLIGHTS)
    res["anchor_oscore_overhead_bytes"] = "13/11"
    res["anchor_tls13_record_overhead_ccm8_bytes"] = 14
    return res
