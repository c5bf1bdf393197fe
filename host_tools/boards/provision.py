"""`make provision`: a new identity for DEVICE, written to the device as
device.json and registered with the *service's* registry (the file
`python -m host_tools.service` reads as `registry`):

  psk   32 random bytes; registry devices[ID] = {"psk": hex}
  cert  a P-256 key and a client certificate (CN = ID) signed by the local device
        CA in PKI/ (device-ca.pem + device-ca.key, created on first use, key 0600);
        registry device_ca = that CA, devices[ID] = {"cert_sha256": ...}; the
        device gets the service's CA (SERVICE_CA) to check the server.
In both modes device.json also gets `seed`: 32 fresh random bytes (hex), mixed
into the device's random generator at every boot (atls.entropy); only the
device has it (not the registry).

Install codes (docs/BOARDS.md "Install codes"): unless --no-install-code,
device.json also gets `install_code` (16 random bytes + CRC-16, 36 hex), and
provisioning prints it, shows it as a QR code in the terminal and writes the
QR code as a PNG (segno) to build/install-codes/<ID>.png (mode 0600): give it
to `make pair INSTALL_CODE=...` or `gateway pair --qr FILE` and the device
pairs on its own.  The install code is the one secret shown on purpose (it is
meant to travel on a label); it pre-authorises one pairing.  --zigbee-link-key
puts the ZigBee network's trust-center link key into device.json
(link.xbee.zigbee_security), so the device's XBee joins the encrypted network.

Other secrets are never printed; files holding them are written 0600 (the registry,
the CA key, the staged device.json, which is removed once copied); an existing
registry entry is kept unless --force.  When the copy to the device fails,
nothing is registered.
"""

import json
import os
import re
import shlex
import tempfile
from pathlib import Path

from host_tools.boards.config import BoardError, load_board, read_json
from host_tools.boards.deploy import mpremote
from host_tools.boards.tools import check_port, rel, run
from host_tools.registry.store import provision_register, provision_view
from host_tools.toolchain import BUILD

DEFAULT_REGISTRY = "build/service/devices.json"
DEFAULT_PKI = "build/pki"
DEFAULT_QR_DIR = "build/install-codes"


def write_private(path, data):
    """Write bytes to `path` with mode 0600 (atomically, via a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_registry(path):
    path = Path(path)
    if not path.exists():
        return {"devices": {}}
    reg = read_json(path)
    if not isinstance(reg, dict) or not isinstance(reg.get("devices", {}), dict):
        raise BoardError('registry %s must be a JSON object with a "devices" object' % path)
    reg.setdefault("devices", {})
    return reg


def parse_service(service):
    """(host, port) of SERVICE=host:port."""
    host, _, port = (service or "").rpartition(":")
    try:
        port = int(port)
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        raise BoardError("SERVICE must be host:port (the service's UDP address), got %r" % service)
    return host.strip("[]"), port


def load_service_ca(path):
    """The one CA certificate (PEM or DER) in SERVICE_CA."""
    from cryptography import x509

    if not path:
        raise BoardError(
            "SERVICE_CA is required in cert mode: the PEM certificate of the CA "
            "that signed the service's certificate"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BoardError("SERVICE_CA %s: %s" % (path, e.strerror or e))
    try:
        certs = (
            x509.load_pem_x509_certificates(data)
            if b"-----BEGIN" in data
            else [x509.load_der_x509_certificate(data)]
        )
    except ValueError as e:
        raise BoardError("SERVICE_CA %s is not a certificate: %s" % (path, e))
    if len(certs) != 1:
        raise BoardError(
            "SERVICE_CA %s holds %d certificates: give the one CA certificate" % (path, len(certs))
        )
    return certs[0]


def device_ca(pki_dir, create=True):
    """The local device CA (pki.Credential) kept in pki_dir, created on first use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from host_tools import pki

    d = Path(pki_dir)
    cert_p, key_p = d / "device-ca.pem", d / "device-ca.key"
    if cert_p.exists() and key_p.exists():
        mode = key_p.stat().st_mode & 0o077
        if mode:
            raise BoardError("device CA key %s is readable by others: chmod 600 it" % key_p)
        try:
            key = serialization.load_pem_private_key(key_p.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        except ValueError as e:
            raise BoardError("device CA in %s is unreadable: %s" % (d, e))
        return pki.Credential(key, cert)
    if cert_p.exists() or key_p.exists():
        raise BoardError("device CA in %s is incomplete (need device-ca.pem and device-ca.key)" % d)
    if not create:
        return None
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ca = pki.make_ca("ATLS Device CA", key_type="p256", days=7300)
    write_private(key_p, pki.pem(ca.key))
    cert_p.write_bytes(pki.pem(ca.cert))
    print("created the device CA in %s (key %s, mode 0600)" % (d, key_p))
    return ca


def _check_request(board, device, mode, service, app):
    """Usage checks before anything is created: (link section, app config)."""
    if not device:
        raise BoardError("DEVICE is required: the device's id, e.g. DEVICE=sensor-1")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", device):
        raise BoardError("DEVICE %r: use 1..64 letters, digits, '.', '_' or '-'" % device)
    if mode not in ("psk", "cert"):
        raise BoardError("MODE must be psk or cert, not %r" % mode)
    link = {}
    ltype = board["config"]["link"]["type"]
    if ltype == "udp":
        if not service:
            raise BoardError(
                "SERVICE=host:port is required: board %s reaches the service "
                "over UDP" % board["name"]
            )
        link["host"], link["port"] = parse_service(service)
    elif service:
        raise BoardError(
            "SERVICE is not used by board %s: its %s link reaches the service "
            "through the gateway" % (board["name"], ltype)
        )
    try:
        app_cfg = json.loads(app) if app else None
    except ValueError as e:
        raise BoardError("APP must be a JSON object: %s" % e)
    if app_cfg is not None and not isinstance(app_cfg, dict):
        raise BoardError("APP must be a JSON object, e.g. APP='{\"period_ms\": 10000}'")
    return link, app_cfg


def _check_registry(reg, reg_path, device, mode, pki_d, force):
    if device in reg["devices"] and not force:
        raise BoardError(
            "device %s is already registered in %s: FORCE=1 replaces its "
            "credential" % (device, reg_path)
        )
    if mode == "cert" and reg.get("device_ca"):
        have = os.path.abspath(reg_path.parent / reg["device_ca"])
        if have != os.path.abspath(pki_d / "device-ca.pem") and not force:
            raise BoardError(
                "registry %s already trusts another device CA (%s): give "
                "PKI=<its folder>, or FORCE=1 to replace it" % (reg_path, reg["device_ca"])
            )


def _credential(device, mode, server_name, ca_cert, pki_d):
    """(device.json tls section, registry entry, issued certificate or None)."""
    from cryptography.hazmat.primitives import hashes

    from host_tools import pki

    tls = {}
    if server_name:
        tls["server_name"] = server_name
    if mode == "psk":
        _, psk = pki.make_psk(device, 32)
        tls.update(psk=psk.hex(), psk_identity=device)
        return tls, {"psk": psk.hex()}, None
    ca = device_ca(pki_d)
    cred = pki.make_cert(device, issuer=ca, key_type="p256", client=True, san=[], days=3650)
    scalar = cred.key.private_numbers().private_value.to_bytes(32, "big")
    tls.update(ca=pki.der(ca_cert).hex(), cert=pki.der(cred.cert).hex(), key=scalar.hex())
    return tls, {"cert_sha256": cred.cert.fingerprint(hashes.SHA256()).hex()}, cred.cert


def provision(
    board_name,
    port,
    device,
    mode="psk",
    service=None,
    service_ca=None,
    server_name=None,
    service_name=None,
    app=None,
    registry=DEFAULT_REGISTRY,
    pki_dir=DEFAULT_PKI,
    force=False,
    dry_run=False,
    release_pub=None,
    install_code=True,
    qr_dir=DEFAULT_QR_DIR,
    zigbee_link_key=None,
):
    board = load_board(board_name)
    ota = None
    if release_pub:  # the release public key (docs/OTA.md): updates signed by it are accepted
        from host_tools.ota.keys import ReleaseKeyError, load_public

        try:
            ota = {"release_key": load_public(release_pub).hex()}
        except ReleaseKeyError as e:
            raise BoardError(str(e))
    if zigbee_link_key is not None:
        try:
            ok = len(bytes.fromhex(zigbee_link_key)) == 16
        except ValueError:
            ok = False
        if not ok:
            raise BoardError("ZIGBEE_LINK_KEY must be 32 hex digits (the gateway's link_key)")
    check_port(port, dry_run)
    link, app_cfg = _check_request(board, device, mode, service, app)
    ca_cert = load_service_ca(service_ca) if mode == "cert" else None
    if mode == "cert" and not server_name:
        # the device checks the service's certificate against this name: a CA
        # without it would accept any certificate that CA issued
        raise BoardError(
            "SERVER_NAME is required in cert mode: the DNS name (or IP address) "
            "in the service's certificate"
        )
    reg_path = Path(registry)
    sqlite = reg_path.suffix != ".json"  # the SQLite registry (host_tools.registry)
    reg = provision_view(reg_path) if sqlite else load_registry(reg_path)
    pki_d = Path(pki_dir)
    _check_registry(reg, reg_path, device, mode, pki_d, force)
    ca_rel = os.path.relpath(
        os.path.abspath(pki_d / "device-ca.pem"), os.path.abspath(reg_path.parent)
    )
    staged = Path(BUILD) / board["name"] / "device.json"
    copy = mpremote(port, dry_run) + ["fs", "cp", rel(staged), ":device.json"]
    if dry_run:
        print(
            "# provision %s (%s) for board %s; device.json (the credential and a fresh "
            "32-byte random seed) is staged in %s (mode 0600)"
            % (device, mode, board["name"], rel(staged))
        )
        print(shlex.join(copy))
        print(
            "# then register %s (%s) in %s%s"
            % (
                device,
                mode,
                reg_path,
                "" if mode == "psk" else " with device_ca %s (created on first use)" % ca_rel,
            )
        )
        if install_code:
            qr = Path(qr_dir) / (device + ".png")
            print(
                "# install code: 16 random bytes + CRC-16 into device.json; printed with its "
                "QR code (terminal), QR code PNG %s (mode 0600); then on the gateway:" % qr
            )
            print("# " + shlex.join(["make", "pair", "QR=%s" % qr]))
        if zigbee_link_key:
            print("# device.json link.xbee.zigbee_security: the network's link key (not shown)")
        return

    from host_tools import pki

    tls, entry, cert = _credential(device, mode, server_name, ca_cert, pki_d)
    dev = {"device_id": device, "service": service_name or "default", "tls": tls}
    dev["seed"] = os.urandom(32).hex()  # the device's own; never printed, not registered
    code = None
    if install_code:
        from host_tools.install_code import new_install_code

        code = new_install_code()
        dev["install_code"] = code.hex()
    if zigbee_link_key:
        link = dict(link or {})
        x = dict(link.get("xbee") or {})
        x["zigbee_security"] = {"link_key": zigbee_link_key.lower()}
        link["xbee"] = x
    if link:
        dev["link"] = link
    if app_cfg is not None:
        dev["app"] = app_cfg
    if ota:
        dev["ota"] = ota
    try:
        write_private(staged, (json.dumps(dev, indent=1) + "\n").encode())
        run(copy)
    finally:
        if staged.exists():
            staged.unlink()
    reg["devices"][device] = entry
    if mode == "cert":
        reg["device_ca"] = ca_rel
        (pki_d / "devices").mkdir(parents=True, exist_ok=True)
        (pki_d / "devices" / (device + ".pem")).write_bytes(pki.pem(cert))
    if sqlite:
        provision_register(reg_path, device, entry, reg.get("device_ca"), force)
    else:
        write_private(reg_path, (json.dumps(reg, indent=1, sort_keys=True) + "\n").encode())
    print(
        "provisioned %s (%s) on %s and registered it in %s%s"
        % (
            device,
            mode,
            port,
            reg_path,
            "" if mode == "psk" else "; certificate sha256 %s" % entry["cert_sha256"],
        )
    )
    if code is not None:
        show_install_code(device, service_name or "default", code, qr_dir)


def show_install_code(device, service, code, qr_dir=DEFAULT_QR_DIR, out=None):
    """Print the install code and its QR code; write the QR code as a PNG
    (mode 0600).  Returns the PNG's path."""
    import sys

    from host_tools.install_code import format_code, qr_payload, terminal_qr, write_qr

    out = out or sys.stdout
    payload = qr_payload(device, service, code)
    qr = Path(qr_dir) / (device + ".png")
    qr.parent.mkdir(parents=True, exist_ok=True)
    write_qr(payload, qr)
    os.chmod(qr, 0o600)
    print("install code of %s: %s" % (device, format_code(code)), file=out)
    terminal_qr(payload, out)
    print("QR code: %s  (on the gateway: make pair QR=%s)" % (qr, qr), file=out)
    return qr
