"""Where the heap goes on the emulated Pico (issue 17): what importing each firmware
module costs as armv6m .mpy (or as .py source with --source), leaf modules first, so
each row is the module's own cost.  `qstr` is the growth of the qstr pools (interned
names: never freed, even when the module is dropped from sys.modules), `objects` the
rest (code objects, the module dict, its constants).  The qstr pools grow in chunks, so
a row can carry a chunk its neighbours share.

    python -m host_tools.bench.pico_profile [--source] [--mode psk|cert|all]

The module lists are what the application loads in each mode (docs/BENCHMARKS.md,
"Where the heap goes").
"""

import argparse
import ast

from host_tools.toolchain import FIRMWARE

COMMON = (
    "atls.ota.boot",
    "atls.buffers",
    "atls.app",
    "atls.supervisor",
    "atls.entropy",
    "atls.drivers.cpu",
    "atls.drivers.xbee",
    "atls.pairing_client",
    "atls.pairing_state",
    "atls.channel",
    "atls.crypto.aead",
    "atls.crypto.ccm",
    "atls.crypto.gcm",
    "atls.protocol_names",
    "atls.crypto.x25519",
)
CERT = (
    "atls.tls.auth",
    "atls.x509",
    "atls.x509_chain",
    "atls.crypto.p256",
    "atls.crypto.p256_sign",
)

DEVICE = r"""
import gc, micropython
_q = micropython.qstr_info  # "qstr pool: n_pool=.., n_qstr=.., ..., n_total_bytes=.."
gc.collect()
print("BASE", gc.mem_alloc(), gc.mem_free())
_q()
for _n in %r:
    gc.collect()
    _a = gc.mem_alloc()
    try:
        __import__(_n)
    except ImportError as e:
        print("MISSING", _n)
        continue
    gc.collect()
    print("IMP", _n, gc.mem_alloc() - _a)
    _q()
gc.collect()
print("END", gc.mem_alloc(), gc.mem_free())
micropython.mem_info()
"""


def _modname(p):
    parts = list(p.relative_to(FIRMWARE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_order(targets):
    """Leaf first: a module after the atls modules it imports at module level."""
    deps = {}
    for p in sorted((FIRMWARE / "atls").rglob("*.py")):
        d = set()
        # module level only: a conditional import (try:) counts with its importer,
        # as it may not load at run time
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("atls"):
                d.add(n.module)  # and `from atls.x import y` where y is a module
                d.update(n.module + "." + a.name for a in n.names)
            elif isinstance(n, ast.Import):
                d.update(a.name for a in n.names if a.name.startswith("atls"))
        deps[_modname(p)] = d
    order = []

    def visit(m, stack=()):
        if m in order or m not in deps or m in stack:
            return
        parts = m.split(".")
        for i in range(1, len(parts)):
            visit(".".join(parts[:i]), stack + (m,))
        for d in sorted(deps[m]):
            visit(d, stack + (m,))
        order.append(m)

    for t in targets:
        visit(t)
    return order


def profile(modules, source=False):
    """[(module, total bytes, qstr bytes)] and (alloc before, alloc after, free after)."""
    from sim.pico.driver import Pico, deployed

    with Pico(flash=deployed(source=source, leave_out=("main.py",))) as p:
        r = p.run(DEVICE % (import_order(modules),), timeout=900)
    rows, qstr, name, total = [], None, None, None
    base = end = None
    for line in r.out.splitlines():
        if line.startswith("BASE"):
            base = int(line.split()[1])
        elif line.startswith("END"):
            end = [int(v) for v in line.split()[1:3]]
        elif line.startswith("IMP"):
            _, name, total = line.split()
        elif line.startswith("qstr pool"):
            q = int(line.rsplit("n_total_bytes=", 1)[1])
            if name is not None:
                rows.append((name, int(total), q - qstr))
                name = None
            qstr = q
    return rows, (base, end[0], end[1]), r.out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench.pico_profile")
    ap.add_argument("--source", action="store_true", help="the firmware as .py, not .mpy")
    ap.add_argument("--mode", default="all", choices=("psk", "cert", "all"))
    a = ap.parse_args(argv)
    mods = COMMON + (CERT if a.mode != "psk" else ())
    rows, (base, end, free), out = profile(mods, a.source)
    print("| module | bytes | qstr | objects |\n|---|---:|---:|---:|")
    for name, total, q in rows:
        print("| %s | %d | %d | %d |" % (name, total, q, total - q))
    tq = sum(r[2] for r in rows)
    print("| **all** | %d | %d | %d |" % (end - base, tq, end - base - tq))
    print("\nfree after the imports: %d B; %s" % (free, out[out.index("stack:") :].strip()))


if __name__ == "__main__":
    main()
