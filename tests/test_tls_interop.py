"""Interop: the firmware TLS 1.3 client under the MicroPython unix port
against an unmodified OpenSSL server (memory BIOs, host_tools.service.tls_engine),
for every suite x group x authentication mode, HelloRetryRequest and
resumption; both sides' exporter output must be equal (RFC 8446 §7.5)."""

import os

import pytest
from cryptography.hazmat.primitives import serialization
from tlspeer import run_pair

from host_tools import pki
from host_tools.service.tls_engine import ServerConfig

SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"]
SUITE_CODES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_128_CCM_SHA256": 0x1304,
    "TLS_AES_128_CCM_8_SHA256": 0x1305,
}
GROUPS = {"x25519": 0x1D, "secp256r1": 0x17}
LABEL = b"application-layer-tls"


@pytest.fixture(scope="module")
def pkiset():
    ca = pki.make_ca("ATLS Test CA", key_type="p256")
    rsa_ca = pki.make_ca("ATLS RSA CA", key_type="rsa2048")
    ed_ca = pki.make_ca("ATLS Ed CA", key_type="ed25519")
    dev_ca = pki.make_ca("ATLS Device CA", key_type="p256")
    return {
        "ca": ca,
        "rsa_ca": rsa_ca,
        "ed_ca": ed_ca,
        "dev_ca": dev_ca,
        "p256": pki.make_cert("service.local", issuer=ca, key_type="p256"),
        "rsa2048": pki.make_cert("service.local", issuer=rsa_ca, key_type="rsa2048"),
        "ed25519": pki.make_cert("service.local", issuer=ed_ca, key_type="ed25519"),
        "device": pki.make_cert("device-1", issuer=dev_ca, key_type="p256", client=True),
    }


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER).hex()


def client_cfg(suite=None, group=None, **kw):
    c = {
        "suites": [SUITE_CODES[suite]] if suite else list(SUITE_CODES.values()),
        "groups": [GROUPS[g] for g in group] if group else [0x1D, 0x17],
        "server_name": "service.local",
        "check_hostname": True,
    }
    c.update(kw)
    return c


def psk_pair(psk=None):
    psk = psk or os.urandom(32)
    return {"psk": psk.hex(), "psk_identity": "device-1"}, {b"device-1": psk}


def check_result(out, suite=None, group=None, mode=None):
    assert out["fail"] is None and out["server_error"] is None, (out["fail"], out["server_error"])
    res = out["results"][-1]
    server = out["servers"][-1]
    assert server.done
    info = server.info()
    assert res["exporter"] == server.export(LABEL, 56).hex()
    assert res["suite"] == info["suite"]
    if suite:
        assert res["suite"] == suite
    if group:
        assert res["group"] == group == info["group"]
    if mode:
        assert res["mode"] == mode
    return res, info


@pytest.mark.parametrize("group", ["x25519", "secp256r1"])
@pytest.mark.parametrize("suite", SUITES)
def test_psk_dhe_every_suite_and_group(mpyc, suite, group):
    ccfg, psks = psk_pair()
    ctx = ServerConfig(psks=psks, suites=(suite,)).build()
    out = run_pair(mpyc, client_cfg(suite, [group], **ccfg), ctx)
    check_result(out, suite, group, "psk_dhe")
    assert out["servers"][-1].info()["psk_identity"] == b"device-1"


@pytest.mark.parametrize("keytype", ["p256", "rsa2048", "ed25519"])
@pytest.mark.parametrize("suite", SUITES)
def test_certificate_mode_every_suite_and_key(mpyc, pkiset, suite, keytype):
    leaf = pkiset[keytype]
    anchor = pkiset[{"p256": "ca", "rsa2048": "rsa_ca", "ed25519": "ed_ca"}[keytype]]
    ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key, suites=(suite,)).build()
    out = run_pair(mpyc, client_cfg(suite, ca=[_der(anchor.cert)]), ctx)
    check_result(out, suite, "x25519", "cert")


@pytest.mark.parametrize("group", ["x25519", "secp256r1"])
def test_certificate_mode_groups(mpyc, pkiset, group):
    leaf = pkiset["p256"]
    ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key, groups=(group,)).build()
    out = run_pair(mpyc, client_cfg(group=[group], ca=[_der(pkiset["ca"].cert)]), ctx)
    check_result(out, group=group, mode="cert")


def test_client_certificate(mpyc, pkiset):
    leaf, dev = pkiset["p256"], pkiset["device"]
    ctx = ServerConfig(
        cert_chain=[leaf.cert], key=leaf.key, client_ca=[pkiset["dev_ca"].cert]
    ).build()
    key = dev.key.private_numbers().private_value.to_bytes(32, "big").hex()
    out = run_pair(
        mpyc, client_cfg(ca=[_der(pkiset["ca"].cert)], cert=[_der(dev.cert)], key=key), ctx
    )
    _, info = check_result(out, mode="cert")
    assert info["client_cert"] == dev.cert


def test_client_certificate_missing_is_refused(mpyc, pkiset):
    leaf = pkiset["p256"]
    ctx = ServerConfig(
        cert_chain=[leaf.cert], key=leaf.key, client_ca=[pkiset["dev_ca"].cert]
    ).build()
    out = run_pair(mpyc, client_cfg(ca=[_der(pkiset["ca"].cert)]), ctx)
    assert out["server_error"] is not None and out["server_error"].alert == 116
    assert out["fail"] is not None and out["fail"][0] == 116  # certificate_required


@pytest.mark.parametrize("mode", ["psk", "cert"])
def test_hello_retry_request(mpyc, pkiset, mode):
    """Client offers an x25519 share first; a P-256-only server asks again."""
    leaf = pkiset["p256"]
    if mode == "psk":
        ccfg, psks = psk_pair()
        ctx = ServerConfig(psks=psks, groups=("secp256r1",)).build()
    else:
        ccfg = {"ca": [_der(pkiset["ca"].cert)]}
        ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key, groups=("secp256r1",)).build()
    out = run_pair(mpyc, client_cfg(group=["x25519", "secp256r1"], **ccfg), ctx)
    res, info = check_result(out, group="secp256r1")
    assert res["hrr"] and info["hrr"]


@pytest.mark.parametrize("mode", ["psk", "cert"])
def test_resumption_with_ticket(mpyc, pkiset, mode):
    leaf = pkiset["p256"]
    if mode == "psk":
        ccfg, psks = psk_pair()
        ctx = ServerConfig(psks=psks, tickets=1).build()
    else:
        ccfg = {"ca": [_der(pkiset["ca"].cert)]}
        ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key, tickets=1).build()
    out = run_pair(mpyc, client_cfg(resume=True, want_ticket=True, **ccfg), ctx)
    assert len(out["results"]) == 2
    check_result(out, mode="resumed")
    assert out["servers"][-1].info()["mode"] == "resumed"
    assert out["results"][0]["exporter"] != out["results"][1]["exporter"]


def test_wrong_psk_fails_cleanly(mpyc):
    ccfg, _ = psk_pair()
    _, psks = psk_pair()
    ctx = ServerConfig(psks=psks).build()
    out = run_pair(mpyc, client_cfg(**ccfg), ctx)
    assert not out["results"]
    # RFC 8446 §4.2.11: the server finds the identity, the binder made with
    # another key does not verify: decrypt_error, which the client reports
    assert out["server_error"] is not None and out["server_error"].alert == 51
    assert "binder" in out["server_error"].reason
    assert out["fail"][0] == 51


def test_unknown_ca_fails_cleanly(mpyc, pkiset):
    leaf = pkiset["p256"]
    ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build()
    out = run_pair(mpyc, client_cfg(ca=[_der(pkiset["rsa_ca"].cert)]), ctx)
    assert out["fail"] is not None and out["fail"][0] == 48  # unknown_ca
    assert out["server_error"] is not None and out["server_error"].peer_alert == 48
    assert not out["results"]


def test_hostname_mismatch_fails(mpyc, pkiset):
    leaf = pkiset["p256"]
    ctx = ServerConfig(cert_chain=[leaf.cert], key=leaf.key).build()
    cfg = client_cfg(ca=[_der(pkiset["ca"].cert)])
    cfg["server_name"] = "other.local"
    out = run_pair(mpyc, cfg, ctx)
    assert out["fail"] is not None and out["fail"][0] == 42  # bad_certificate
    assert out["server_error"] is not None and out["server_error"].peer_alert == 42


def _stale_flight(ctx, psk, group):
    """OpenSSL's answer to another ClientHello of the same device: the flight
    of an earlier attempt that reaches the device late (issue 14)."""
    from atls.tls.client import ClientConfig, TLSClient
    from host_tools.service.tls_engine import ServerConnection

    cl = TLSClient(ClientConfig(psk=psk, psk_identity=b"device-1", groups=(GROUPS[group],)))
    cl.start(0)
    return ServerConnection(ctx).feed(cl.data_to_send())


@pytest.mark.parametrize("group", ["x25519", "secp256r1"])
def test_stale_flights_are_discarded_up_to_the_bound(mpyc, group):
    """Under the unix port (.mpy): DISCARDS flights made for other
    ClientHellos come first; each is discarded (the transcript rebuilt from
    the kept ClientHello), the handshake completes with the server's real
    answer and the exporters agree.  One more ends it with bad_record_mac."""
    from atls.session import DISCARDS

    psk = os.urandom(32)
    ccfg = {"psk": psk.hex(), "psk_identity": "device-1", "discards": DISCARDS}
    ctx = ServerConfig(psks={b"device-1": psk}).build()
    stale = [_stale_flight(ctx, psk, group) for _ in range(DISCARDS)]
    out = run_pair(mpyc, client_cfg(group=[group], **ccfg), ctx, inject=stale)
    res, _ = check_result(out, group=group, mode="psk_dhe")
    assert res["discarded"] == DISCARDS
    out = run_pair(mpyc, client_cfg(group=[group], **ccfg), ctx, inject=stale + stale[:1])
    assert out["fail"] is not None and out["fail"][0] == 20 and not out["results"]
