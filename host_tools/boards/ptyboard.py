"""A MicroPython unix port behind a pseudo-terminal, standing in for a board
on a serial port: `make deploy|provision PORT=<link>` then talk to it with
mpremote exactly as to a board.  Its working directory is the "board's"
filesystem.  Python's own pty handling, no socat (tests/test_boards.py).

    python -m host_tools.boards.ptyboard --link /tmp/ttyV0 [--dir FS] [--micropython BIN]

Two pseudo-terminals: the unix port's REPL runs on the slave of one (its stdin
and stdout, raw, no echo; stderr stays this process's), the other's slave is
the serial port, published as a symlink once the REPL has printed its first
prompt.  This process copies bytes between the two masters until the unix
port exits or SIGTERM/SIGINT arrives.  It keeps the serial end open itself, so
that mpremote may connect and disconnect any number of times (pyserial flushes
what the REPL wrote while nobody listened).
"""

import argparse
import errno
import os
import pty
import select
import signal
import subprocess
import sys
import time
import tty

from host_tools.toolchain import micropython_binary

_CHUNK = 4096
_HIGH = 65536  # stop reading a side while this much waits for the other


def _raw_pair():
    master, slave = pty.openpty()
    tty.setraw(slave)  # raw, no echo (socat's pty,raw,echo=0)
    os.set_blocking(master, False)
    return master, slave


class PtyBoard:
    def __init__(self, link, cwd=".", micropython=None, env=None):
        self.link = str(link)
        self.cwd = str(cwd)
        self.micropython = micropython or micropython_binary()
        self.env = env
        self.proc = None
        self.tty = None  # the serial end's device path (/dev/pts/N)
        self._serial = self._repl = self._held = None
        self._stopping = False
        self._to_repl = bytearray()
        self._to_serial = bytearray()
        self._tail = b""  # the last bytes the unix port wrote (its prompt, at start)

    def start(self, timeout=10.0):
        """Start the unix port, wait for its first prompt, publish the link."""
        self._serial, self._held = _raw_pair()
        self.tty = os.ttyname(self._held)
        self._repl, repl_slave = _raw_pair()
        try:
            self.proc = subprocess.Popen(
                [self.micropython, "-i"],
                stdin=repl_slave,
                stdout=repl_slave,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        finally:
            os.close(repl_slave)
        deadline = time.monotonic() + timeout
        # the tail of what it wrote, not _to_serial: _step may have passed the
        # prompt on to the serial side already (banner and prompt read apart)
        while not self._tail.endswith(b">>> "):
            if time.monotonic() > deadline or not self._step(0.1):
                raise RuntimeError("the unix port did not show its REPL prompt")
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(self.tty, self.link)

    def stop(self):
        """Ask serve() to return (safe from a signal handler)."""
        self._stopping = True

    def serve(self):
        """Copy bytes both ways until the unix port exits (its exit status)
        or stop() is called (0)."""
        while not self._stopping:
            if not self._step(0.2):
                return self.proc.wait()
        return 0

    def _step(self, timeout):
        """One select round; False once the unix port's terminal has closed."""
        fills = ((self._serial, self._to_repl), (self._repl, self._to_serial))
        drains = ((self._repl, self._to_repl), (self._serial, self._to_serial))
        rl = [fd for fd, buf in fills if len(buf) < _HIGH]
        wl = [fd for fd, buf in drains if buf]
        r, w, _ = select.select(rl, wl, [], timeout)
        if self._serial in r:
            self._to_repl += self._read(self._serial) or b""
        if self._repl in r:
            data = self._read(self._repl)
            if data is None:
                return False
            self._to_serial += data
            self._tail = (self._tail + data)[-8:]
        for fd, buf in drains:
            if fd in w:
                try:
                    del buf[: os.write(fd, buf)]
                except BlockingIOError:
                    pass
        return True

    @staticmethod
    def _read(fd):
        """Bytes from a master; b"" when none are ready; None at hang-up."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # the slave side is closed for good
                return None
            raise
        return data or None

    def close(self):
        """End the unix port and remove the link."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if os.path.islink(self.link) and os.readlink(self.link) == self.tty:
            os.unlink(self.link)
        for fd in (self._serial, self._held, self._repl):
            if fd is not None:
                os.close(fd)
        self._serial = self._held = self._repl = None


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.boards.ptyboard", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--link", required=True, help="symlink to create for the serial end")
    ap.add_argument("--dir", default=".", help="the board's filesystem (working directory)")
    ap.add_argument("--micropython", help="the unix port (default: the one `make setup` installs)")
    a = ap.parse_args(argv)
    board = PtyBoard(a.link, cwd=a.dir, micropython=a.micropython)
    signal.signal(signal.SIGTERM, lambda *_: board.stop())
    try:
        board.start()
        print("%s -> %s: MicroPython unix port in %s" % (a.link, board.tty, a.dir), flush=True)
        return board.serve()
    except KeyboardInterrupt:
        return 0
    finally:
        board.close()


if __name__ == "__main__":
    sys.exit(main())
