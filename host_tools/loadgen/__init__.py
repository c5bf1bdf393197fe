"""The load generator (issue 19): thousands of simulated devices in one
process over loopback UDP, each running the firmware's own session code
(atls.session.DeviceSession: the TLS 1.3 client and the link) with the
CPython crypto backend, against the real service process.

    python -m host_tools.loadgen --devices 1000 --rate 500 --duration 20

Modules:
    provision  N PSK identities into a registry file and a service.json in a
               temporary directory; the service process (or its workers)
    app        CountingApp, the service application that records every
               message it receives (one line per delivery, per process), so
               lost and duplicated messages are counted exactly
    fleet      the devices: one UDP socket each (the service tells devices
               apart by address before a handshake), an epoll loop, timers,
               handshake ramp, send schedule, acknowledgements
    tally      what was sent, acknowledged and received, per device: lost,
               duplicated, re-handshakes
    run        one measured run (ramp, steady traffic, drain), CPU of the
               service processes; used by the CLI and `make bench` (scale)
"""
