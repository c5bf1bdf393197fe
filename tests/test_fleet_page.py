"""The fleet page in a real browser: Debian's headless Chromium driven by
selenium through chromedriver.  The page lists every registered device and
updates live (it polls /fleet.json) as a device connects and sends."""

import json
import os
import shutil

import pytest
from e2e import ServiceProc, start_device

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium/chromium-driver missing: tools/system-deps.sh"
)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    opts.add_argument("--user-data-dir=%s" % (tmp_path / "chromium-profile"))
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(20)
    yield drv
    drv.quit()


def _row(browser, device):
    """The row's cell texts as the browser shows them, read in one step (the
    page rebuilds its rows every second, so element handles go stale)."""
    return browser.execute_script(
        "var r = document.querySelector('tr[data-device=\"' + arguments[0] + '\"]');"
        "return r ? Array.from(r.cells).map(function (c) { return c.innerText; }) : null;",
        device,
    )


def test_fleet_page_updates_live_in_chromium(mpyc, tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    psk = os.urandom(32)
    svc = ServiceProc(
        tmp_path,
        devices={"dev-f": psk, "dev-idle": os.urandom(32)},
        extra={"metrics_listen": "127.0.0.1:0"},
    )
    dev = None
    try:
        addr = json.loads((tmp_path / "service.ready.json").read_text())["metrics"]
        browser.get("http://%s/fleet" % addr)
        wait = WebDriverWait(browser, 15, poll_frequency=0.2)
        wait.until(lambda b: _row(b, "dev-f") and _row(b, "dev-idle"))
        assert _row(browser, "dev-f")[1] == "offline" and _row(browser, "dev-f")[3] == "0"
        cfg = {"host": svc.addr[0], "port": svc.addr[1], "psk": psk.hex()}
        cfg.update(psk_identity="dev-f", count=1000, timeout_ms=20000)
        dev = start_device(mpyc, tmp_path, cfg)
        # no reload: the page itself picks up the connection and the messages
        wait.until(lambda b: _row(b, "dev-f")[1] == "online" and int(_row(b, "dev-f")[4]) > 0)
        row = _row(browser, "dev-f")
        assert row[3] == "1" and "ago" in row[2]
        assert _row(browser, "dev-idle")[1] == "offline"
        dev.kill()
        dev.wait(10)
        dev = None
        svc.proc.terminate()  # the page notices the service is gone
        wait.until(
            lambda b: (
                "unreachable"
                in b.execute_script("return document.getElementById('summary').innerText;")
            )
        )
    finally:
        if dev is not None:
            dev.kill()
        svc.stop()
