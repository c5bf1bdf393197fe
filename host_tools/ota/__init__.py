"""Signed firmware updates, host side (issue 20; docs/OTA.md).

    keys.py     the release key: generate (private key 0600), load, public key
    bundle.py   build and sign a bundle from a board's .mpy build; read/check one
    release.py  `make release VERSION=… BOARD=…` and the CLI (`python -m host_tools.ota`)
    store.py    the service's bundle store (bundles only, never a private key)
    service.py  sans-I/O offer/transfer state machine per device (channel 2)

The bundle and message formats are the firmware's (atls.ota.bundle,
atls.ota.wire): defined once, imported here.
"""
