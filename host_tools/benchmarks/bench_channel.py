"""Export-key channel and link framing (docs/PROTOCOL.md §2-§3).

Metrics:
  seal_open_<suite>_<n>B   µs for one DATA seal plus its open (both ends'
                           channel objects, replay window included)
  overhead_<suite>_bytes   bytes on the air per DATA message (header, seq, tag)
  framing_700B_mtu<m>_pct  extra bytes (in %) to carry a 700-byte flight as
                           HS fragments at MTU m (5-byte fragment header each)
  fragments_700B_mtu<m>    number of datagrams for that flight
"""

from benchutil import emit, per_op

from atls import protocol as P
from atls import wire
from atls.channel import Channel
from atls.link import Link, LinkConfig

SUITES = (
    ("gcm", P.TLS_AES_128_GCM_SHA256),
    ("ccm", P.TLS_AES_128_CCM_SHA256),
    ("ccm8", P.TLS_AES_128_CCM_8_SHA256),
)
KB = bytes(range(P.KEY_BLOCK_LEN))


def bench_suite(name, suite, out):
    tx = Channel(KB, suite, "client")
    rx = Channel(KB, suite, "server")
    for n in (16, 64):
        msg = bytes(n)
        state = [0]

        def op():
            seq = state[0]
            state[0] = seq + 1
            pkt = tx.seal(wire.DATA, 0x5A17, seq & 0xFFFF, 0, msg)
            if rx.open(wire.decode(pkt, rx.tag_len)) != msg:
                raise RuntimeError("round trip failed")
            rx.top = -1  # keep the window from calling later seqs replays
            rx.bits = 0

        out["seal_open_%s_%dB" % (name, n)] = per_op(op, min_us=200000, max_iter=20000)
    out["overhead_%s_bytes" % name] = len(tx.seal(wire.DATA, 1, 0, 0, b""))


def framing(mtu, out):
    link = Link("client", LinkConfig(mtu=mtu))
    link.send_flight(bytes(700), 0)
    dgs = link.datagrams(0)
    total = 0
    for d in dgs:
        total += len(d)
    out["framing_700B_mtu%d_pct" % mtu] = (total - 700) * 100.0 / 700
    out["fragments_700B_mtu%d" % mtu] = len(dgs)


def main():
    out = {}
    for name, suite in SUITES:
        bench_suite(name, suite, out)
    for mtu in (64, 84):
        framing(mtu, out)
    emit(out)


main()
