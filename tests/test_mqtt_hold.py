"""The link's "hold delivery ACK" mode (atls.link hold_acks/release) that the
MQTT bridge's PUBACK-before-ACK rule rests on, and the service hook
(host_tools.service.hold)."""

from test_link import connect, pump


def test_held_messages_are_not_acknowledged_until_released():
    cli, srv = connect()
    srv.hold_acks()
    for i in range(3):
        cli.send(b"m%d" % i, 10)
    pump(cli, srv, 10)
    assert [e for e in srv.events() if e[0] == "message"] == [
        ("message", b"m0"),
        ("message", b"m1"),
        ("message", b"m2"),
    ]
    assert len(cli.unacked()) == 3  # delivered to the app, not acknowledged
    # retransmissions are replays: delivered once, still not acknowledged
    pump(cli, srv, 2000)
    assert [e for e in srv.events() if e[0] == "message"] == []
    assert len(cli.unacked()) == 3
    srv.release(2, 2001)
    pump(cli, srv, 2001)
    assert cli.unacked() == [b"m2"]
    assert [e for e in cli.events() if e[0] == "delivered"] == [("delivered", 0), ("delivered", 1)]
    srv.release(5, 2002)  # never past what was delivered
    pump(cli, srv, 2002)
    assert cli.unacked() == []
    cli.send(b"m3", 2003)
    pump(cli, srv, 2003)
    assert cli.unacked() == [b"m3"]


def test_without_hold_delivery_is_the_ack():
    cli, srv = connect()
    cli.send(b"x", 10)
    pump(cli, srv, 10)
    assert cli.unacked() == []
