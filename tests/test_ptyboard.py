"""host_tools.boards.ptyboard: the unix port behind a pty.  Regression: the
board waited for its REPL prompt in the bytes not yet passed to the serial
side, so when the prompt was read in the same round as that buffer was
drained (banner and prompt read apart, as under load) it never saw it and
gave up ("the unix port did not show its REPL prompt"; a CI failure of
test_registry_provision.py).  Reads of one byte make every split happen."""

import sys

import pytest

from host_tools.boards import ptyboard

FAKE_PORT = """import sys, time
sys.stdout.write("MicroPython fake%s\\n>>> ")
sys.stdout.flush()
time.sleep(30)
"""


@pytest.mark.parametrize("pad", ["", "x"])  # both parities of banner length
def test_the_prompt_is_seen_however_the_reads_split(tmp_path, monkeypatch, pad):
    script = tmp_path / "fake_port.py"
    script.write_text(FAKE_PORT % pad)
    launcher = tmp_path / "micropython"
    launcher.write_text("#!/bin/sh\nexec %s %s\n" % (sys.executable, script))
    launcher.chmod(0o755)
    monkeypatch.setattr(ptyboard, "_CHUNK", 1)
    board = ptyboard.PtyBoard(tmp_path / "tty", cwd=tmp_path, micropython=str(launcher))
    try:
        board.start(timeout=10.0)
        assert (tmp_path / "tty").is_symlink()
    finally:
        if board.proc is not None:
            board.proc.kill()
            board.proc.wait()
