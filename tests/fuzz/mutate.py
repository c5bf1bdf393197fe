"""A seeded mutator, the same under CPython and MicroPython.

`Rng(seed)` is xorshift32 (small ints on every port, no `random` module
needed), so a (seed, input index) pair reproduces a mutant on both
interpreters.  `mutate(rng, data, others)` applies 1..4 stacked mutations;
`others` (the rest of the corpus) feeds splices.
"""

# values a length or type field likes to be fuzzed with
_INTERESTING = (0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 254, 255)


class Rng:
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        """0 <= r < n (n >= 1)"""
        return self.next() % n

    def chance(self, k):
        """True once in k"""
        return self.next() % k == 0


def _bitflip(rng, d, others):
    if d:
        i = rng.below(len(d))
        d[i] ^= 1 << rng.below(8)
    return d


def _byte_set(rng, d, others):
    if d:
        d[rng.below(len(d))] = rng.below(256) if rng.chance(2) else _INTERESTING[rng.below(18)]
    return d


def _insert(rng, d, others):
    i = rng.below(len(d) + 1)
    n = 1 + rng.below(4 if rng.chance(2) else 64)
    ins = bytearray(n)
    for k in range(n):
        ins[k] = rng.below(256)
    return d[:i] + ins + d[i:]


def _delete(rng, d, others):
    if not d:
        return d
    i = rng.below(len(d))
    n = 1 + rng.below(min(len(d) - i, 16 if rng.chance(2) else 256))
    return d[:i] + d[i + n :]


def _duplicate(rng, d, others):
    if not d:
        return d
    i = rng.below(len(d))
    n = 1 + rng.below(min(len(d) - i, 64))
    j = rng.below(len(d) + 1)
    return d[:j] + d[i : i + n] + d[j:]


def _splice(rng, d, others):
    if not others:
        return d
    o = others[rng.below(len(others))]
    if not o:
        return d
    i = rng.below(len(d) + 1)
    j = rng.below(len(o))
    tail = o[j:] if rng.chance(2) else o[j : j + 1 + rng.below(32)]
    return d[:i] + bytearray(tail) + (d[i:] if rng.chance(2) else b"")


def _length(rng, d, others):
    # a 1- or 2-byte big-endian field nudged by a small delta or set to an
    # interesting value: most fields a parser bounds are lengths
    if len(d) < 2:
        return _byte_set(rng, d, others)
    i = rng.below(len(d) - 1)
    v = (d[i] << 8) | d[i + 1]
    if rng.chance(2):
        v = (v + (rng.below(9) - 4)) & 0xFFFF
    else:
        v = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x7FFF, 0xFFFF)[rng.below(10)]
    d[i] = v >> 8
    d[i + 1] = v & 0xFF
    return d


def _truncate(rng, d, others):
    return d[: rng.below(len(d) + 1)] if d else d


def _fill(rng, d, others):
    # a run of one value (0x00, 0xFF, 0x7E, ...) over a random span
    if not d:
        return d
    i = rng.below(len(d))
    n = 1 + rng.below(min(len(d) - i, 32))
    v = _INTERESTING[rng.below(18)] if rng.chance(2) else 0x7E
    for k in range(i, i + n):
        d[k] = v
    return d


MUTATORS = (
    _bitflip,
    _bitflip,
    _byte_set,
    _byte_set,
    _insert,
    _delete,
    _duplicate,
    _splice,
    _length,
    _length,
    _truncate,
    _fill,
)
NAMES = (
    "bitflip",
    "bitflip",
    "byte_set",
    "byte_set",
    "insert",
    "delete",
    "duplicate",
    "splice",
    "length",
    "length",
    "truncate",
    "fill",
)


def _token(rng, d, tokens):
    # a dictionary token (e.g. a whole TLS alert record) appended or inserted
    t = tokens[rng.below(len(tokens))]
    i = len(d) if rng.chance(2) else rng.below(len(d) + 1)
    return d[:i] + bytearray(t) + d[i:]


def mutate(rng, data, others=(), tokens=()):
    """A mutant of `data` (bytes): 1 to 4 stacked mutations, never equal to
    the input unless every mutation was a no-op.  `tokens`: a dictionary of
    byte strings a mutation may insert whole (AFL's dictionaries)."""
    d = bytearray(data)
    for _ in range(1 + (rng.below(4) if rng.chance(3) else 0)):
        if tokens and rng.chance(8):
            d = _token(rng, d, tokens)
        else:
            d = MUTATORS[rng.below(len(MUTATORS))](rng, d, others)
    return bytes(d)
