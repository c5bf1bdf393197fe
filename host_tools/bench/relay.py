"""The `zigbee` section's baseline forwarder: a minimal asyncio UDP relay with
the gateway's shape (a listening DatagramProtocol, one connected flow socket
per source read with add_reader), forwarding datagrams both ways as they are;
nothing else.

    python -m host_tools.bench.relay --listen HOST:PORT --target HOST:PORT --ready-file F
"""

import argparse
import asyncio
import signal
import socket
import sys
from pathlib import Path


def run(listen, target, ready_file):
    host, port = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    target = (thost, int(tport))

    class Side(asyncio.DatagramProtocol):
        def __init__(self):
            self.flows = {}
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            s = self.flows.get(addr)
            if s is None:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(target)
                loop.add_reader(s.fileno(), self.back, s, addr)
                self.flows[addr] = s
            try:
                s.send(data)
            except OSError:
                pass

        def back(self, s, addr):
            for _ in range(64):
                try:
                    data = s.recv(2048)
                except (BlockingIOError, InterruptedError, OSError):
                    return
                self.transport.sendto(data, addr)

    async def amain():
        await loop.create_datagram_endpoint(Side, local_addr=(host, int(port)))
        Path(ready_file).write_text("ok\n")
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(amain())
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.relay")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--ready-file", required=True)
    a = ap.parse_args(argv)
    return run(a.listen, a.target, a.ready_file)


if __name__ == "__main__":
    sys.exit(main())
