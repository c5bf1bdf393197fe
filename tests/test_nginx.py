"""docs/nginx-atls.conf in front of two service workers (docs/SCALE.md,
"Several machines"): a real nginx (stream module, UDP, consistent hash of
the device's address and port) and two real service processes with server
ids 0 and 1; devices (the firmware's DeviceSession, tests/udp_devices.py)
reach them only through nginx."""

import re
import signal
import subprocess
import time
from pathlib import Path

import conftest
import pytest
from e2e import ServiceProc
from udp_devices import Devices, psk_of

from host_tools.toolchain import free_port

ROOT = conftest.ROOT
NGINX = Path("/usr/sbin/nginx")
STREAM = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
INSTALL = "apt-get install -y nginx-light libnginx-mod-stream (tools/system-deps.sh install)"


def render(conf, tmp, listen, upstreams):
    """The documented config with this test's addresses, logs and pid in tmp."""
    text = conf.read_text()
    servers = re.findall(r"^\s*server \S+:5684 [^;]*;\n", text, re.M)
    assert len(servers) == 2, "docs/nginx-atls.conf: two example upstream servers"
    text = text.replace(servers[0], "".join("server %s:%d;\n" % u for u in upstreams))
    text = text.replace(servers[1], "")
    text, n = re.subn(r"listen 5684 udp[^;]*;", "listen %s:%d udp;" % listen, text)
    assert n == 1
    head = "daemon off;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n" % (tmp, tmp)
    return head + text.replace("worker_processes auto;", "worker_processes 1;")


def test_the_documented_config_uses_consistent_hashing_and_no_response_limit():
    text = (ROOT / "docs" / "nginx-atls.conf").read_text()
    active = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "hash $remote_addr$remote_port consistent;" in active
    assert "proxy_responses" not in active  # unlimited: any number of datagrams per request
    timeout = int(re.search(r"proxy_timeout (\d+)s;", active).group(1))
    assert timeout > 300  # above the service's default idle_timeout_s


def test_device_sessions_through_nginx_to_two_workers(tmp_path):
    for need in (NGINX, STREAM):
        if not need.exists():
            pytest.fail("%s is missing: %s" % (need, INSTALL))
    names = ["n%02d" % i for i in range(12)]
    psks = {n: psk_of(n) for n in names}
    workers = []
    nginx = devs = None
    try:
        for i in range(2):
            d = tmp_path / ("w%d" % i)
            d.mkdir()
            routing = {"routing": {"server_id": i, "server_bits": 1}}
            workers.append(ServiceProc(d, devices=psks, extra=routing))
        listen = ("127.0.0.1", free_port())
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            render(ROOT / "docs" / "nginx-atls.conf", tmp_path, listen, [w.addr for w in workers])
        )
        err = tmp_path / "error.log"
        argv = [str(NGINX), "-p", str(tmp_path), "-c", str(conf), "-e", str(err)]
        check = subprocess.run(argv + ["-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        assert nginx.poll() is None, nginx.stderr.read()

        devs = Devices(names, listen, period_ms=150)
        devs.run(devs.all_up, 60, "every device up through nginx")
        devs.run(lambda: all(d.n >= 3 for d in devs.devs), 30, "three readings each")
        devs.sending = False
        devs.run(devs.settled, 30, "every reading acknowledged and echoed")
        held = [w.counters() for w in workers]
    finally:
        if devs is not None:
            devs.close()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
        for w in workers:
            w.stop()
    by_server = [0, 0]
    for d in devs.devs:
        assert len(d.sids) == 1, d.downs  # one handshake: the flow stayed on one worker
        assert sorted(d.echoes) == list(range(d.n))  # every reading echoed once
        by_server[d.sids[0] >> 15] += 1
    assert [c["handshakes_ok"] for c in held] == by_server
    assert [c["messages_in"] for c in held] == [
        sum(d.n for d in devs.devs if d.sids[0] >> 15 == i) for i in range(2)
    ]
    assert all(by_server), by_server  # the hash spread the devices over both
