"""A lossy UDP relay for tests: forwards datagrams between clients and one
target, dropping each with probability --loss (seeded), so link-layer
recovery is exercised with real sockets.  Counts what it dropped.

    python tests/lossy_relay.py --target 127.0.0.1:5684 --loss 0.2 --seed 1 \
        --ready-file ready.txt [--stats stats.json] [--duration 120]
"""

import argparse
import json
import random
import selectors
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--target", required=True)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ready-file")
    ap.add_argument("--stats")
    ap.add_argument("--duration", type=float, default=300)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.target.rsplit(":", 1)
    target = (th, int(tp))
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind((lh, int(lp)))
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    backs = {}  # client addr -> socket toward the target
    stats = {"forwarded": 0, "dropped": 0}
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%s:%d\n" % front.getsockname())
    deadline = time.time() + a.duration
    last_stats = 0
    while time.time() < deadline:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            data, addr = sock.recvfrom(65535)
            if key.data is None:  # from a client
                back = backs.get(addr)
                if back is None:
                    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    back.bind(("127.0.0.1", 0))
                    backs[addr] = back
                    sel.register(back, selectors.EVENT_READ, addr)
                dest, out = target, back
            else:
                dest, out = key.data, front
            if rng.random() < a.loss:
                stats["dropped"] += 1
                continue
            stats["forwarded"] += 1
            out.sendto(data, dest)
        if a.stats and time.time() - last_stats > 0.5:
            last_stats = time.time()
            with open(a.stats, "w") as f:
                json.dump(stats, f)


if __name__ == "__main__":
    main()
