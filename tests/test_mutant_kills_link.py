"""atls.link boundaries that `make mutants` (tests/mutants/) found no test
pinning down; the link's own tests (tests/test_link.py) belong to the
protocol work, so these live apart.  docs/PROTOCOL.md §2-§3."""

import pytest

from atls.errors import UsageError
from atls.link import Link, LinkConfig


def test_a_flight_of_exactly_max_flight_bytes_is_sent_one_more_is_refused():
    for size in (1, 4096):
        cli = Link("client", LinkConfig(mtu=64, max_flight=4096))
        cli.send_flight(bytes(size), 0)
        assert cli.flight_pending() and cli.datagrams(0)
    for size in (0, 4097):
        cli = Link("client", LinkConfig(mtu=64, max_flight=4096))
        with pytest.raises(UsageError):
            cli.send_flight(bytes(size), 0)
        assert not cli.flight_pending()
