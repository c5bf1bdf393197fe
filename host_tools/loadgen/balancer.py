"""nginx in front of the service for a load run: docs/nginx-atls.conf (the
documented configuration: UDP stream proxy, consistent hash of the device's
address and port) with this run's addresses, logs and pid in a temporary
directory.  On one machine the upstream is the workers' shared port (the
kernel's SO_REUSEPORT hash picks the worker); across machines it would be
one `server` line per machine."""

import re
import signal
import subprocess
import time
from pathlib import Path

from host_tools.toolchain import ROOT, free_port

__all__ = ["Nginx", "NGINX", "STREAM_MODULE", "INSTALL"]

NGINX = Path("/usr/sbin/nginx")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
INSTALL = "apt-get install -y nginx-light libnginx-mod-stream (or: make system-deps)"


def render(conf_text, tmp, listen, upstreams, nofile=40000):
    """The documented config with these addresses; one nginx worker process
    (this machine's cores go to the service), fds for one flow per device."""
    servers = re.findall(r"^\s*server \S+:5684 [^;]*;\n", conf_text, re.M)
    if not servers:
        raise ValueError("docs/nginx-atls.conf: no example upstream server")
    text = conf_text.replace(servers[0], "".join("server %s:%d;\n" % u for u in upstreams))
    for extra in servers[1:]:
        text = text.replace(extra, "")
    text, n = re.subn(r"listen 5684 udp[^;]*;", "listen %s:%d udp;" % listen, text)
    if n != 1:
        raise ValueError("docs/nginx-atls.conf: one `listen 5684 udp` expected")
    head = "daemon off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n" % (tmp, tmp)
    head += "worker_rlimit_nofile %d;\n" % nofile
    return head + text.replace("worker_processes auto;", "worker_processes 1;")


class Nginx:
    """A real nginx proxying UDP from `addr` to `upstreams`."""

    def __init__(self, tmp, upstreams):
        for need in (NGINX, STREAM_MODULE):
            if not need.exists():
                raise RuntimeError("%s is missing: %s" % (need, INSTALL))
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        self.addr = ("127.0.0.1", free_port())
        conf = tmp / "nginx.conf"
        text = (ROOT / "docs" / "nginx-atls.conf").read_text()
        conf.write_text(render(text, tmp, self.addr, upstreams))
        argv = [str(NGINX), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
        check = subprocess.run(argv + ["-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("nginx -t: %s" % check.stderr.strip()[-500:])
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError("nginx exited: %s" % self.proc.stderr.read()[-500:])

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast: UDP flows would hold a graceful quit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
