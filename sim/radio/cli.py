"""`python -m sim.radio`: an emulated network as a process.

    python -m sim.radio --devices 3 --loss 0.1 --latency-ms 5 --seed 1 --state-file radio.json

Prints the network's description (coordinator pty, device ports, addresses,
control port, pid) as one JSON line, and writes it to --state-file first;
writes medium stats to --stats-file every --stats-interval s; answers JSON
lines on the control port (RadioNetwork.command); stops on SIGINT/SIGTERM.
"""

import argparse
import asyncio
import json
import os
import signal

from sim.radio.network import RadioNetwork


def _write_json(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


async def _control(net, reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            reply = net.command(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reply = {"ok": False, "error": str(e)}
        writer.write((json.dumps(reply) + "\n").encode())
        await writer.drain()
    writer.close()


async def _amain(a):
    net = RadioNetwork(
        devices=a.devices,
        loss=a.loss,
        latency_ms=a.latency_ms,
        seed=a.seed,
        coordinator_ap=a.coordinator_ap,
        device_ap=a.device_ap,
        ee=a.ee,
        joined=a.joined,
        join_open=a.join_open,
        guard_ms=a.guard_ms,
    )
    await net.start()
    server = await asyncio.start_server(
        lambda r, w: _control(net, r, w), "127.0.0.1", a.control_port
    )
    state = net.describe()
    state["control_port"] = server.sockets[0].getsockname()[1]
    state["pid"] = os.getpid()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if a.state_file:
        _write_json(a.state_file, state)
    print(json.dumps(state), flush=True)  # last: the state file exists when this is read
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), a.stats_interval)
        except asyncio.TimeoutError:
            pass
        if a.stats_file:
            _write_json(a.stats_file, net.stats())
    server.close()
    net.close()


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m sim.radio",
        description="Simulated ZigBee medium with emulated XBee 3 "
        "modules (coordinator on a pty, devices on TCP).",
    )
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0, help="frame loss probability")
    ap.add_argument("--latency-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--coordinator-ap", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--device-ap", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--ee", type=int, choices=(0, 1), default=0, help="network encryption")
    ap.add_argument("--joined", action="store_true", help="devices start joined (paired before)")
    ap.add_argument("--join-open", action="store_true", help="coordinator NJ=0xFF at start")
    ap.add_argument("--guard-ms", type=int, default=1000, help="command-mode guard time GT")
    ap.add_argument("--state-file", help="write the pty path, ports and addresses here (JSON)")
    ap.add_argument("--stats-file", help="write medium.stats() here every --stats-interval s")
    ap.add_argument("--stats-interval", type=float, default=1.0)
    ap.add_argument(
        "--control-port",
        type=int,
        default=0,
        help="JSON-lines control port on 127.0.0.1 (0: any free port)",
    )
    a = ap.parse_args(argv)
    asyncio.run(_amain(a))
    return 0
