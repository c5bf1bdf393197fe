"""make mutants' warm pytest (tests/mutants/forkserver.py, fork_client.py):
the client's exit status is pytest's, a module is imported afresh for each
run (a mutant written between two runs is the one tested), and a client
killed for its timeout takes its test run with it.  Real processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "mutants"


@pytest.fixture
def server(tmp_path):
    sock = tmp_path / "pytest.sock"
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(HERE / "forkserver.py"), str(sock)], env=env)
    end = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < end, "forkserver.py did not start"
        time.sleep(0.05)
    yield sock
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def run(sock, cwd, *args, timeout=60):
    cmd = [sys.executable, "-S", str(HERE / "fork_client.py"), str(sock), "-q", "-p"]
    cmd += ["no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_exit_status_is_pytests_and_each_run_imports_the_module_afresh(server, tmp_path):
    (tmp_path / "target.py").write_text("VALUE = 1\n")
    (tmp_path / "test_target.py").write_text(
        "import target\n\ndef test_v():\n    assert target.VALUE == 1\n"
    )
    ok = run(server, tmp_path, "test_target.py")
    assert ok.returncode == 0 and "1 passed" in ok.stdout
    (tmp_path / "target.py").write_text("VALUE = 2\n")  # a mutant
    bad = run(server, tmp_path, "test_target.py")
    assert bad.returncode == 1 and "1 failed" in bad.stdout
    (tmp_path / "target.py").write_text("VALUE = 1\n")
    assert run(server, tmp_path, "test_target.py").returncode == 0


def test_a_killed_client_takes_its_test_run_with_it(server, tmp_path):
    mark = tmp_path / "still-running"
    (tmp_path / "test_hang.py").write_text(
        "import time, pathlib\n\ndef test_hang():\n"
        "    for _ in range(400):\n"
        "        pathlib.Path(%r).write_text('x')\n"
        "        time.sleep(0.05)\n" % str(mark)
    )
    cmd = [sys.executable, "-S", str(HERE / "fork_client.py"), str(server), "-q", "test_hang.py"]
    client = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < end
        time.sleep(0.05)
    client.kill()  # what cosmic-ray does at its timeout
    client.wait()
    time.sleep(0.5)
    mark.unlink()
    time.sleep(0.5)
    assert not mark.exists()  # the test run is gone too
    assert run(server, tmp_path, "--co", "test_hang.py").returncode == 0  # the server serves on


def test_without_a_server_the_client_runs_pytest_itself(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert False\n")
    r = run(tmp_path / "no.sock", tmp_path, "test_one.py")
    assert r.returncode == 1 and "1 failed" in r.stdout  # never a kill by a missing server
