"""atls.crypto.transcript: the TLS 1.3 transcript hash (RFC 8446 §4.4.1).

Scenarios are lists of operations ("new", "up", "dig", ...) evaluated by the
same rules under CPython (in this file) and under the MicroPython unix port
with a 32 KiB heap (MPY_TRANSCRIPT, one operation per row).  Expected digests
come from hashlib over the concatenated bytes, or from the RFC 8448 traces:
  §3 Simple 1-RTT        Transcript-Hash values printed in the "derive secret"
                         steps, and the server Finished MAC
  §4 Resumed 0-RTT       the PSK "binder hash" over the ClientHello prefix
  §5 HelloRetryRequest   message_hash(ClientHello1) || HRR || ... hashes (the
                         client restarts with a new Transcript fed the
                         synthetic message_hash, as tested here)
"""

import hashlib
import os
import random
import sys

import pytest

from atls.crypto.hkdf import hmac_sha256
from atls.crypto.transcript import Transcript
from atls.errors import UsageError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "mpy"))
from rfctext import rfc8448_steps  # noqa: E402

H = bytes.fromhex


def sha(data):
    return hashlib.sha256(data).digest()


def message_hash(ch1):
    """RFC 8446 §4.4.1, built independently: handshake type message_hash (254),
    uint24 length 32, Hash(ClientHello1)."""
    return bytes([254]) + (32).to_bytes(3, "big") + sha(ch1)


# --------------------------------------------------------------------------
# Operation interpreter (CPython side); MPY_TRANSCRIPT mirrors it.
#   new n        t = Transcript(forks=n)
#   up data how  t.update(data) as bytes (b), bytearray (a) or a memoryview (m)
#   dig want     t.digest() == want
#   nodig        t.digest() raises UsageError
#   left n       t.forks_left == n


def as_kind(data, how):
    if how == "a":
        return bytearray(data)
    if how == "m":
        return memoryview(b"\x00" + data + b"\x00")[1 : 1 + len(data)]
    return data


def run_ops(ops):
    t = None
    for i, op in enumerate(ops):
        k = op[0]
        if k == "new":
            t = Transcript(forks=op[1])
        elif k == "up":
            t.update(as_kind(op[1], op[2]))
        elif k == "dig":
            assert t.digest() == op[1], "op %d" % i
        elif k == "nodig":
            with pytest.raises(UsageError):
                t.digest()
        elif k == "left":
            assert t.forks_left == op[1], "op %d" % i
        else:
            raise AssertionError(k)


MPY_TRANSCRIPT = """
import gc
from vecrun import rows, unhex, Tally
from atls.crypto.transcript import Transcript
from atls.errors import UsageError
tl = Tally()
t = None
for i, f in rows():
    gc.collect()
    k = f[0]
    ok = True
    if k == "new":
        t = Transcript(forks=int(f[1]))
    elif k == "up":
        d = unhex(f[1])
        if f[2] == "a":
            d = bytearray(d)
        elif f[2] == "m":
            d = memoryview(b"\\x00" + d + b"\\x00")[1:1 + len(d)]
        t.update(d)
    elif k == "dig":
        ok = t.digest() == unhex(f[1])
    elif k == "nodig":
        try:
            t.digest()
            ok = False
        except UsageError:
            pass
    elif k == "left":
        ok = t.forks_left == int(f[1])
    else:
        ok = False
    tl.check(i, ok, k)
tl.report()
"""


def check_mpy(mpy, ops):
    summary = mpy.run_rows(MPY_TRANSCRIPT, ops, heapsize="32K")
    assert summary == {"ok": len(ops), "failed": []}


# --------------------------------------------------------------------------
# RFC 8448 traces


def trace_messages(steps):
    """Handshake messages of a trace in order, as (who, name, bytes)."""
    names = (
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "Certificate",
        "CertificateVerify",
        "Finished",
    )
    out = []
    for heading, fields in steps:
        if "construct a" in heading:
            for name in names:
                if name in fields:
                    out.append((heading.split()[0], name, fields[name]))
    return out


def trace_hash(steps, label):
    """The 'hash' field of the derive-secret step for `label` (the step printed
    in full; the other side's says "(same as ...)")."""
    for heading, fields in steps:
        if '"tls13 %s"' % label in heading and "hash" in fields:
            return fields["hash"]
    raise KeyError(label)


@pytest.fixture(scope="module")
def s3(vectors):
    steps = rfc8448_steps(vectors("rfc8448.txt"), "3")
    msgs = trace_messages(steps)
    assert [m[1] for m in msgs] == [
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "Certificate",
        "CertificateVerify",
        "Finished",
        "Finished",
    ]
    return steps, [m[2] for m in msgs]


def rfc8448_s3_ops(s3):
    steps, (ch, sh, ee, cert, cv, sfin, cfin) = s3
    h_cv = sha(ch + sh + ee + cert + cv)  # Finished base, checked via the MAC below
    return [
        ["new", 4],
        ["left", 4],
        ["up", ch, "b"],
        ["up", sh, "m"],
        ["dig", trace_hash(steps, "c hs traffic")],  # 860c06ed...
        ["up", ee, "a"],
        ["up", cert, "b"],
        ["up", cv, "b"],
        ["dig", h_cv],
        ["up", sfin, "b"],
        ["dig", trace_hash(steps, "c ap traffic")],  # 9608102a...
        ["up", cfin, "b"],
        ["dig", trace_hash(steps, "res master")],  # 209145a9...
        ["left", 0],
        ["nodig"],
        ["up", b"more", "b"],
        ["left", 0],
    ]


def test_rfc8448_s3_transcript_hashes(s3):
    steps, msgs = s3
    ops = rfc8448_s3_ops(s3)
    run_ops(ops)
    # the CH..CV hash is the one the server Finished MAC is computed over
    # ({server} calculate finished "tls13 finished": expanded = finished_key)
    fin = [f for h, f in steps if h.startswith('{server}  calculate finished "tls13 finished":')][0]
    t = Transcript(forks=1)
    for m in msgs[:5]:
        t.update(m)
    assert hmac_sha256(fin["expanded"], t.digest()) == fin["finished"]
    assert msgs[5] == b"\x14\x00\x00\x20" + fin["finished"]  # the Finished message


def test_rfc8448_s3_under_micropython(mpy, s3):
    check_mpy(mpy, rfc8448_s3_ops(s3))


@pytest.fixture(scope="module")
def s5(vectors):
    steps = rfc8448_steps(vectors("rfc8448.txt"), "5")
    msgs = trace_messages(steps)
    assert [m[1] for m in msgs] == [
        "ClientHello",
        "ServerHello",
        "ClientHello",
        "ServerHello",
        "EncryptedExtensions",
        "Certificate",
        "CertificateVerify",
        "Finished",
        "Finished",
    ]
    return steps, [m[2] for m in msgs]


def rfc8448_s5_ops(s5):
    steps, (ch1, hrr, ch2, sh, ee, cert, cv, sfin, cfin) = s5
    return [
        ["new", 1],
        ["up", ch1, "b"],
        ["dig", sha(ch1)],
        # §4.4.1: restart with message_hash(ClientHello1), as the client does
        ["new", 3],
        ["up", bytes([254, 0, 0, 32]), "b"],
        ["up", sha(ch1), "a"],
        ["left", 3],
        ["up", hrr, "b"],
        ["up", ch2, "b"],
        ["up", sh, "b"],
        ["dig", trace_hash(steps, "c hs traffic")],  # 8aa8e828...
        ["up", ee, "b"],
        ["up", cert, "b"],
        ["up", cv, "b"],
        ["up", sfin, "b"],
        ["dig", trace_hash(steps, "c ap traffic")],  # 50f63cbf...
        ["up", cfin, "b"],
        ["dig", trace_hash(steps, "res master")],  # 0e8b3491...
        ["nodig"],
    ]


def test_rfc8448_s5_hello_retry_request_message_hash(s5):
    steps, msgs = s5
    run_ops(rfc8448_s5_ops(s5))
    # the same value from an independent construction of the synthetic message
    assert sha(message_hash(msgs[0]) + b"".join(msgs[1:4])) == trace_hash(steps, "c hs traffic")


def test_rfc8448_s5_under_micropython(mpy, s5):
    check_mpy(mpy, rfc8448_s5_ops(s5))


def rfc8448_s4_binder_ops(vectors):
    steps = rfc8448_steps(vectors("rfc8448.txt"), "4")
    f = [f for h, f in steps if h.startswith("{client}  calculate PSK binder:")][0]
    # §4.2.11.2 binder: Transcript-Hash(truncated ClientHello)
    return [
        ["new", 1],
        ["up", f["ClientHello prefix"], "m"],
        ["dig", f["binder hash"]],
        ["nodig"],
        ["left", 0],
    ]


def test_rfc8448_s4_psk_binder_hash(vectors):
    run_ops(rfc8448_s4_binder_ops(vectors))


def test_rfc8448_s4_under_micropython(mpy, vectors):
    check_mpy(mpy, rfc8448_s4_binder_ops(vectors))


# --------------------------------------------------------------------------
# Random scenarios vs hashlib (chunking, several digests, HRR restarts)


def random_ops(seed, n_scenarios=40):
    rnd = random.Random(seed)
    ops = []
    for _ in range(n_scenarios):
        forks = rnd.randint(1, 6)
        ops += [["new", forks], ["left", forks]]
        seen = b""  # bytes hashed so far, by the independent reckoning
        left = forks
        hrr_done = False
        for _ in range(rnd.randint(1, 12)):
            r = rnd.random()
            if r < 0.55:
                n = rnd.choice((0, 1, 4, 31, 32, 33, 64, 65, 100, 300))
                data = rnd.randbytes(n)
                ops.append(["up", data, rnd.choice("bam")])
                seen += data
            elif r < 0.8:
                if left:
                    ops.append(["dig", sha(seen)])
                    left -= 1
                else:
                    ops.append(["nodig"])
                ops.append(["left", left])
            elif not hrr_done:
                # the client's HelloRetryRequest restart (§4.4.1): a new
                # transcript fed message_hash(Hash(everything so far))
                seen = message_hash(seen)
                ops += [["new", forks], ["up", seen, rnd.choice("bam")], ["left", forks]]
                left = forks
                hrr_done = True
        if left:
            ops.append(["dig", sha(seen)])
    return ops


@pytest.fixture(scope="module")
def rnd_ops():
    ops = random_ops(8446)
    kinds = set(op[0] for op in ops)
    assert kinds >= {"new", "up", "dig", "nodig", "left"}
    return ops


def test_random_scenarios_vs_hashlib(rnd_ops):
    run_ops(rnd_ops)


def test_random_scenarios_under_micropython(mpy, rnd_ops):
    check_mpy(mpy, rnd_ops)


def test_random_chunking_many_digests_vs_hashlib():
    rnd = random.Random(5246)
    for _ in range(200):
        data = rnd.randbytes(rnd.randrange(0, 3000))
        points = sorted(rnd.sample(range(len(data) + 1), min(6, len(data) + 1)))
        t = Transcript(forks=len(points))
        pos = 0
        for p in points:
            while pos < p:  # random chunks up to the next digest point
                step = min(p - pos, rnd.randrange(0, 200))
                t.update(memoryview(data)[pos : pos + step])
                pos += step
            assert t.digest() == sha(data[:p])
        assert t.forks_left == 0


# --------------------------------------------------------------------------
# The forks rule and argument checks


def test_forks_rule_n_digests_update_always_works():
    t = Transcript(forks=2)
    t.update(b"a")
    assert t.digest() == sha(b"a")
    t.update(b"b")
    assert t.digest() == sha(b"ab")
    assert t.forks_left == 0
    with pytest.raises(UsageError):
        t.digest()
    t.update(b"c")  # the last live object is never handed out
    assert t.forks_left == 0


@pytest.mark.parametrize("bad", [0, -1, "2", None, 1.5])
def test_forks_must_be_positive_int(bad):
    with pytest.raises(UsageError):
        Transcript(forks=bad)


def test_default_forks():
    assert Transcript().forks_left == 4
