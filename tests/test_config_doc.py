"""docs/CONFIG.md: every example configuration is accepted by the real loader,
and the loaded values are the ones the example spells out."""

import json
import re
import shutil

from conftest import ROOT

from atls import app
from atls.protocol import TLS_AES_128_CCM_8_SHA256, X25519
from host_tools.boards.config import load_board
from host_tools.gateway.config import Config
from host_tools.service.config import build_from_config
from host_tools.service.registry import Registry

DOC = ROOT / "docs" / "CONFIG.md"


def examples():
    text = DOC.read_text()
    found = re.findall(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", text, re.S)
    return {name: json.loads(body) for name, body in found}


def _device_ca(folder):
    """The registry example's device_ca file."""
    from host_tools import pki

    (folder / "device-ca.pem").write_bytes(pki.pem(pki.make_ca("Doc Device CA").cert))


def test_every_config_file_has_an_example():
    assert set(examples()) == {"service", "registry", "gateway", "board_config", "device"}


def test_service_example_loads(tmp_path):
    ex = examples()
    (tmp_path / "service.json").write_text(json.dumps(ex["service"]))
    (tmp_path / "devices.json").write_text(json.dumps(ex["registry"]))
    _device_ca(tmp_path)
    service, addr = build_from_config(tmp_path / "service.json")
    assert addr == ("127.0.0.1", 5684)
    assert service.limits["max_half_open"] == 64 and service.limits["app_queue"] == 256
    assert service.link_config.mtu == 1200 and service.link_config.rto_max_ms == 8000
    assert (service.sids.server_id, service.sids.bits) == (0, 2)
    store = service.store  # the redis section: nothing connects before the first session
    assert store.prefix == "atls:" and store.ttl_ms == 600000 and store.retry_ms == 1000
    assert (tmp_path / "state-seal.key").stat().st_mode & 0o777 == 0o600


def test_registry_example_loads(tmp_path):
    (tmp_path / "devices.json").write_text(json.dumps(examples()["registry"]))
    _device_ca(tmp_path)
    reg = Registry(tmp_path / "devices.json")
    assert set(reg.psks) == {b"dev-01"} and len(reg.psks[b"dev-01"]) == 32
    assert set(reg.certs.values()) == {"dev-02"} and set(reg.spkis.values()) == {"dev-03"}


def test_gateway_example_loads(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps(examples()["gateway"]))
    cfg = Config(tmp_path / "gateway.json")
    assert cfg.serial == "/dev/ttyUSB0" and cfg.baudrate == 115200 and not cfg.escaped
    assert set(cfg.services) == {"default", "web", "coap"}
    assert cfg.limits["max_payload"] == 84


def test_board_config_example_is_the_esp32_board_and_loads(tmp_path):
    ex = examples()["board_config"]
    src = ROOT / "boards" / "esp32"
    assert ex == json.loads((src / "board_config.json").read_text())
    board_dir = tmp_path / "esp32"
    shutil.copytree(src, board_dir)
    (board_dir / "board_config.json").write_text(json.dumps(ex))
    assert load_board("esp32", boards_dir=tmp_path)["config"] == ex


def test_device_example_gives_a_client_config():
    cfg = app.tls_config(examples()["device"])
    assert cfg.psk_identity == b"dev-01" and len(cfg.psk) == 32
    assert list(cfg.suites) == [TLS_AES_128_CCM_8_SHA256] and list(cfg.groups) == [X25519]
