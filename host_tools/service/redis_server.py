"""A private redis-server (the system package) for tests, the simulator and
the bench: `RedisServer(tmp)` starts one on a unix socket in `tmp` (no TCP
port, no persistence), `url` is what service.json's redis.url takes,
stop() ends it and start() starts it again on the same socket (empty: the
Redis-unavailable tests stop and restart it)."""

import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_server_binary", "INSTALL"]

INSTALL = "sudo apt-get install -y redis-server   (or: make system-deps)"


def redis_server_binary():
    """Path of redis-server, or None."""
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")


class RedisServer:
    def __init__(self, tmp, start=True):
        self.exe = redis_server_binary()
        if self.exe is None:
            raise RuntimeError("redis-server is not installed: " + INSTALL)
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "redis.sock"
        if len(str(self.sock)) > 100:
            raise ValueError("unix socket path too long: %s" % self.sock)
        self.url = "unix://%s" % self.sock
        self.proc = None
        if start:
            self.start()

    def start(self, timeout=10.0):
        if self.proc is not None:
            return
        self.log = open(self.dir / "redis.log", "a")
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                "0",
                "--unixsocket",
                str(self.sock),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import redis

        end = time.monotonic() + timeout
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()
                    raise RuntimeError("redis-server did not start (see %s)" % self.log.name)
                time.sleep(0.02)

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()

    def client(self):
        return self.client_for(self.url)

    @staticmethod
    def client_for(url):
        import redis

        return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
