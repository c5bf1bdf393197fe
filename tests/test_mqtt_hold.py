"""The link's "hold delivery ACK" mode (atls.link ack_to/release) that the
MQTT bridge's PUBACK-before-ACK rule rests on, and the service hook
(host_tools.service.hold)."""

from test_link import connect, pump


def test_held_messages_are_not_acknowledged_until_released():
    cli, srv = connect()
    srv.ack_to = 1  # what host_tools.service.hold.start sets (seq 0: the HELLO)
    for i in range(3):
        cli.send(b"m%d" % i, 10)
    pump(cli, srv, 10)
    assert [e[1] for e in srv.events() if e[0] == "message"] == [b"m0", b"m1", b"m2"]
    assert len(cli.unacked()) == 3  # delivered to the app, not acknowledged
    # retransmissions are replays: delivered once, still not acknowledged
    pump(cli, srv, 2000)
    assert [e for e in srv.events() if e[0] == "message"] == []
    assert len(cli.unacked()) == 3
    srv.release(2, 2001)
    pump(cli, srv, 2001)
    assert cli.unacked() == [b"m2"]
    assert [e for e in cli.events() if e[0] == "delivered"] == [("delivered", 1), ("delivered", 2)]
    srv.release(1, 2002)
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


class _HoldingApp:
    """An application that keeps each message until the test says so."""

    hold_acks = True

    def __init__(self):
        self.futures = []
        self.closed = []

    def on_connect(self, session):
        pass

    def on_message(self, session, payload):
        import asyncio

        f = asyncio.get_running_loop().create_future()
        self.futures.append(f)
        return f

    def on_close(self, session, reason):
        self.closed.append(reason)


def _pair(app):
    from host_tools.bench.pair import CCM8, Device, exchange, make_service, quiet_stderr

    with quiet_stderr():
        svc, tr = make_service("TLS_AES_128_CCM_8_SHA256", 1200, app=app)
        dev = Device(CCM8, 1200)
        dev.start(0)
        exchange(dev, svc, tr, ("10.0.0.1", 5684))
    assert dev.up
    return svc, tr, dev, lambda: exchange(dev, svc, tr, ("10.0.0.1", 5684))


def test_service_acks_in_order_once_the_apps_futures_are_done():
    """host_tools.service.hold: the link ACK waits for on_message's future;
    a later message done first waits for the earlier one."""
    import asyncio

    async def main():
        app = _HoldingApp()
        svc, tr, dev, pump = _pair(app)
        for i in range(3):
            dev.link.send(b"m%d" % i, 0)
        pump()
        assert len(app.futures) == 3 and len(dev.link.unacked()) == 3
        app.futures[1].set_result(None)  # out of order: nothing may be acknowledged yet
        await asyncio.sleep(0)
        pump()
        assert len(dev.link.unacked()) == 3
        app.futures[0].set_result(None)
        await asyncio.sleep(0)
        pump()
        assert dev.link.unacked() == [b"m2"]
        app.futures[2].set_result(None)
        await asyncio.sleep(0)
        pump()
        assert dev.link.unacked() == []
        # a failed future ends the session: the device keeps the message for its next one
        dev.link.send(b"m3", 0)
        pump()
        app.futures[3].set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)
        pump()
        assert app.closed == ["application did not take a message"]
        assert svc.sessions == {} and dev.link.unacked() == [b"m3"]

    asyncio.run(main())


def _session(svc):
    (s,) = svc.sessions.values()
    return s


def test_the_device_hello_is_never_held():
    """Link protocol v2: seq 0 is the device's HELLO, never given to the app,
    so a hold_acks service acknowledges it at once (else the device would
    retransmit it forever)."""
    import asyncio

    async def main():
        app = _HoldingApp()
        svc, tr, dev, pump = _pair(app)
        assert dev.settled  # no timer left: the HELLO was acknowledged
        assert app.futures == []

    asyncio.run(main())


def test_a_duplicate_the_service_suppresses_is_acknowledged():
    """A message the service de-duplicates (its id is below the device's
    mark) never reaches the app, so nothing would release it: it is
    acknowledged in its turn."""
    import asyncio

    async def main():
        app = _HoldingApp()
        svc, tr, dev, pump = _pair(app)
        svc.peers.delivered(_session(svc).key, 0)  # id 0 was safe in an earlier session
        dev.link.send(b"again", 0)
        dev.link.send(b"new", 0)
        pump()
        assert len(app.futures) == 1 and dev.link.unacked() == [b"new"]
        app.futures[0].set_result(None)
        await asyncio.sleep(0)
        pump()
        assert dev.link.unacked() == []

    asyncio.run(main())


def test_the_dedupe_mark_moves_only_once_the_message_is_safe():
    """A service that dies (or whose publish fails) before the app's
    awaitable is done must not suppress the device's repeat of it."""
    import asyncio

    async def main():
        app = _HoldingApp()
        svc, tr, dev, pump = _pair(app)
        key = _session(svc).key
        dev.link.send(b"m0", 0)
        pump()
        assert not svc.peers.duplicate(key, 0)  # delivered to the app, not safe yet
        app.futures[0].set_result(None)
        await asyncio.sleep(0)
        assert svc.peers.duplicate(key, 0)

    asyncio.run(main())


def test_moved_messages_keep_their_on_delivered_callbacks():
    """A replacing session takes over what the device had not acknowledged
    (link protocol v2); send()'s on_delivered fires once the device
    acknowledges it there (the bridge's downlink PUBACK rule rests on it)."""
    from host_tools.bench.pair import CCM8, Device, exchange, make_service, quiet_stderr

    got = []
    with quiet_stderr():
        svc, tr = make_service("TLS_AES_128_CCM_8_SHA256", 1200)
        addr = ("10.0.0.1", 5684)
        dev = Device(CCM8, 1200)
        dev.start(0)
        exchange(dev, svc, tr, addr)
        s = _session(svc)
        s.send(b"down-1", on_delivered=lambda: got.append(1))
        s.send(b"down-2", on_delivered=lambda: got.append(2))
        tr.take()  # lost on the way: the device acknowledges nothing
        assert got == []
        dev2 = Device(CCM8, 1200)  # the device again, a new session
        dev2.start(0)
        exchange(dev2, svc, tr, addr)
    assert _session(svc) is not s and svc.counters["messages_moved"] == 2
    assert dev2.messages == [b"down-1", b"down-2"]
    assert got == [1, 2]
