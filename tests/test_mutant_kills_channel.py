"""atls.channel behaviour that `make mutants` (tests/mutants/) found no test
pinning down: the replay window's state stays bounded by the window however
far the sequence numbers advance (bounded state per peer; docs/PROTOCOL.md §3
replay window)."""

from atls import channel


def test_the_replay_bitmap_never_holds_more_than_window_plus_one_bits():
    """In-order DATA shifts the bitmap one step per message: it is masked to
    bits 0..window, so a long session does not grow it, and the window still
    answers exactly (a replay within it is stale, the next seq is fresh)."""
    ch = channel.Channel(bytes(56), 0x1305, "server")
    for seq in range(1000):
        assert ch.fresh(seq)
        ch.accept(seq)
        assert ch.bits < 2 << ch.window, seq
    assert ch.bits == (2 << ch.window) - 2  # top-64..top-1 seen (top itself is implicit)
    assert not ch.fresh(999 - 64) and not ch.fresh(999) and ch.fresh(1000)
    ch.accept(1010)  # a gap of 10: ten unseen seqs inside the window
    assert ch.bits < 2 << ch.window and ch.fresh(1005) and not ch.fresh(999)
