"""Pairs the firmware TLS client running under the MicroPython unix port
(tests/mpy/tls_pipe.py) with an OpenSSL server in this process
(host_tools.service.tls_engine, memory BIOs).  Host side of the interop tests."""

import json
import subprocess
import tempfile

import conftest

from host_tools.service.tls_engine import ServerConnection, TLSError


def run_pair(mpy, client_cfg, server_ctx, heapsize=None, timeout=120, inject=()):
    """Run one (or with client_cfg["resume"], two) handshakes.  `inject`:
    server flights the client gets first, one per exchange, before the
    server's own answer (stale or forged flights).  Returns
    {"results": [client JSON per handshake], "servers": [ServerConnection],
    "fail": (alert, message) or None, "server_error": TLSError or None}."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(client_cfg, f)
    cmd = [mpy.binary] + (["-X", "heapsize=" + heapsize] if heapsize else [])
    cmd += [str(conftest.TESTS / "mpy" / "tls_pipe.py"), f.name]
    env = mpy.env(
        {"MICROPYPATH": ":".join(list(mpy.path) + [str(conftest.ROOT / "host_tools" / "mpy")])}
    )
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    out = {
        "results": [],
        "servers": [ServerConnection(server_ctx)],
        "fail": None,
        "server_error": None,
        "wire": [],
    }
    inject, held = list(inject), b""
    try:
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("OUT "):
                data = b"" if line[4:] == "-" else bytes.fromhex(line[4:])
                out["wire"].append(("c", len(data)))
                try:
                    reply = out["servers"][-1].feed(data)
                except TLSError as e:
                    out["server_error"] = e
                    reply = e.outgoing or b""
                if inject:  # the server's answer waits for the injected flights
                    held, reply = held + reply, inject.pop(0)
                elif held:
                    held, reply = b"", held + reply
                out["wire"].append(("s", len(reply)))
                proc.stdin.write("IN " + (reply.hex() or "-") + "\n")
                proc.stdin.flush()
            elif line == "NEW":
                out["servers"].append(ServerConnection(server_ctx))
            elif line.startswith("RESULT "):
                out["results"].append(json.loads(line[7:]))
            elif line.startswith("FAIL "):
                alert, _, msg = line[5:].partition(" ")
                out["fail"] = (int(alert), msg)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise AssertionError("client crashed (%d): %s" % (proc.returncode, err[-3000:]))
    return out
