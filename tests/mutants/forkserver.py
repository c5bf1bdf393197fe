"""A warm pytest for make mutants: pytest, hypothesis and the crypto
libraries imported once, one fork per test run.

Starting Python and importing pytest and the libraries the tests use took
about a third of a mutant's CPU time.  The server imports only third-party
modules, never the project's: each forked child imports the (mutated) module
and the tests from the work copy afresh, as a new process would.  The client
(`fork_client.py`, the test command cosmic-ray runs) hands over its stdin,
stdout and stderr and gets the exit status; when cosmic-ray kills a client
that timed out, the server kills that child's process group.  One request
at a time: cosmic-ray runs one test command at a time per work copy.

    python tests/mutants/forkserver.py SOCKET      (run.py starts and stops it)
"""

import json
import os
import random
import select
import signal
import socket
import sys

PRELOAD = (
    "pytest",
    "_pytest.assertion.rewrite",
    "_pytest.python",
    "_pytest.fixtures",
    "hypothesis",
    "hypothesis.strategies",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.x509",
    "OpenSSL.SSL",
    "asyncio",
)


def _run_child(conn, listener, fds, cwd, args):
    os.setpgid(0, 0)
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    conn.close()
    listener.close()
    os.chdir(cwd)
    random.seed()  # the server's state is shared by every child: not their seeds
    import pytest

    sys.argv = ["pytest"] + args
    try:
        code = int(pytest.main(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve_one(conn, listener):
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        _run_child(conn, listener, fds, req["cwd"], req["args"])
    for fd in fds:
        os.close(fd)
    while True:
        ready, _, _ = select.select([conn], [], [], 0.02)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall((code & 0xFFFFFFFF).to_bytes(4, "big"))
            except OSError:
                pass
            return
        if ready:  # the client went away (cosmic-ray's timeout): stop its tests
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return


def main(path):
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        conn, _ = listener.accept()
        try:
            _serve_one(conn, listener)
        finally:
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
