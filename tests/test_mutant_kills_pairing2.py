"""More gateway pairing (host_tools/gateway/pairing_table.py) behaviour that
`make mutants` (tests/mutants/) found no test pinning down: the bound on
pending exchanges, confirmation by a person (docs/PAIRING.md §8.3), NOT_PAIRED
pacing, and how the table is written."""

import json

import pytest
from test_mutant_kills_pairing import ADDR, device_request, make_pairer

from atls import pairing
from host_tools.gateway.config import GatewayError
from host_tools.gateway.pairing_table import NOT_PAIRED_INTERVAL_S, PairingTable

KEY = bytes(range(32))


def test_pending_exchanges_are_bounded_a_new_one_beyond_gets_pending_busy(tmp_path):
    """§8.3: at most max_pending_pairings exchanges are held; a new device
    beyond that gets PENDING 3 (busy, ask again) and no state."""
    pr, sent, _ = make_pairer(tmp_path)  # max_pending_pairings = 4
    for i in range(4):
        pr.on_packet(bytes(7) + bytes((i,)), device_request(i + 1)[1])
        assert pairing.decode(sent[-1][1])[0] == "response"
    pr.on_packet(ADDR, device_request(9)[1])
    assert pairing.decode(sent[-1][1]) == ("pending", 3) and len(pr.pending) == 4
    assert ADDR not in pr.pending and pr.counters["drops"]["pairing_busy"] == 1


def test_a_confirmed_exchange_answers_a_repeated_reveal_with_accept(tmp_path):
    """§8.3: once the person confirmed the code, the ACCEPT may be lost; the
    device's repeated REVEAL gets the same ACCEPT, not PENDING."""
    pr, sent, _ = make_pairer(tmp_path)
    pr.config.auto_confirm = False
    _, req, rv, _ = device_request()
    pr.on_packet(ADDR, req)
    pr.on_packet(ADDR, rv)
    assert pairing.decode(sent[-1][1]) == ("pending", 0)
    [shown] = pr.pending_requests()
    pr.confirm(ADDR.hex(), shown["code"])
    accept = sent[-1][1]
    assert pairing.decode(accept)[0] == "accept"
    pr.on_packet(ADDR, rv)
    assert sent[-1][1] == accept


def test_confirming_an_address_without_a_request_is_a_gateway_error(tmp_path):
    pr, _, _ = make_pairer(tmp_path)
    with pytest.raises(GatewayError):
        pr.confirm(ADDR.hex(), "123456")
    pr.on_packet(ADDR, device_request()[1])  # no REVEAL yet: no code to confirm
    with pytest.raises(GatewayError):
        pr.confirm(ADDR.hex())
    assert pr.table.get(ADDR) is None


def test_not_paired_goes_to_revoked_addresses_at_most_every_interval(tmp_path):
    """docs/PAIRING.md: NOT_PAIRED is sent only under the key of a removed
    pairing (never for an address never paired), at most once per
    NOT_PAIRED_INTERVAL_S; the revoked key survives a reload."""
    pr, sent, clock = make_pairer(tmp_path)
    pr.not_paired(ADDR)
    assert sent == []
    pr.table.add(ADDR, "dev-1", "default", KEY)
    assert pr.table.remove("dev-1") == [ADDR.hex()]
    pr.table = PairingTable(tmp_path / "p.json")  # as after a gateway restart
    want = pairing.encode_reply(pairing.NOT_PAIRED, tag=pairing.tag(KEY, b"not paired"))
    pr.not_paired(ADDR)
    assert sent == [(ADDR, want)]
    clock.t += NOT_PAIRED_INTERVAL_S - 0.5
    pr.not_paired(ADDR)
    assert len(sent) == 1
    clock.t += 0.5  # exactly the interval after the first
    pr.not_paired(ADDR)
    assert sent == [(ADDR, want)] * 2


def test_the_table_is_written_in_one_canonical_form_creating_its_directories(tmp_path):
    """The table file is sorted JSON (a copy or diff changes only with its
    content), written where the configuration says, directories included."""
    path = tmp_path / "a" / "b" / "pairing.json"
    t = PairingTable(path)
    t.add(bytes.fromhex("0013a200000000ff"), "z", "s")
    t.add(bytes.fromhex("0013a20000000001"), "a", "s")
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True)


def test_the_shortest_response_has_a_one_byte_gateway_id():
    """§8.1: RESPONSE is 0xB4, Ng (16), Pg (32), addr64 (8), then a 1..n-byte
    gateway id with its length: 59 bytes at the least, and those decode."""
    nonce, pub, addr = bytes(range(16)), bytes(range(32, 64)), bytes(range(8))
    packet = pairing.encode_response(nonce, pub, addr, "g")
    assert len(packet) == 59
    assert pairing.decode(packet) == ("response", nonce, pub, addr, "g")
