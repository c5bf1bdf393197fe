"""The test command of make mutants with a warm pytest (forkserver.py):
`python -S fork_client.py SOCKET pytest-args...` runs pytest with those
arguments in a child of the server, on this process's stdin, stdout and
stderr, and exits with its status.  Kept to the standard library's socket
and json, and run with -S: it starts once per mutant."""

import json
import os
import socket
import sys


def _cold(args):
    """No server (or it went away before answering): the same run in a new
    process, never an exit status that would count a mutant as killed."""
    os.execv(sys.executable, [sys.executable, "-m", "pytest"] + args)


def main(argv):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(argv[0])
        msg = json.dumps({"cwd": os.getcwd(), "args": argv[1:]}).encode()
        socket.send_fds(s, [msg], [0, 1, 2])
    except OSError:
        _cold(argv[1:])
    got = b""
    while len(got) < 4:
        part = s.recv(4 - len(got))
        if not part:
            _cold(argv[1:])
        got += part
    code = int.from_bytes(got, "big")
    return code - (1 << 32) if code >= 1 << 31 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
