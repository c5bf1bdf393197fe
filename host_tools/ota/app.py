"""Firmware updates in the running service: the application composition that
puts `OtaService` (host_tools.ota.service) on channel 2 of every session.

    service.json  "ota": {"bundles": "bundles", "release_pub": "release.key.pub",
                          "rate_fps": 10, "airtime_fps": 100, "window": 16,
                          "frame_bytes": 66, "overhead": 13, "rto_ms": 3000,
                          "poll_ms": 20}
                  (only "bundles" is required; paths relative to the config)

`OtaApp(app, ota, targets)` wraps the configured application: channel 0 goes
to `app` unchanged; channel 2 to the OtaService of devices granted updates;
a message on any other channel, or on channel 2 from a device not granted,
is refused and counted (`counters["channel_refused"]`).  The device's
firmware version comes in its HELLO (`session.device_hello`, "x.y.z"); the
transfer starts once that HELLO is in (poll), a device whose HELLO carries
no version (older firmware) is never offered anything.  `poll(now_ms)` runs
every `poll_ms` from the service's loop (`run_timers`, started by
host_tools.service.cli.serve); every `RETARGET_MS` it also asks the registry
again for each connected device that is not in a transfer, so a target set
while the device is online is offered without waiting for its next session.

Targets (`targets`): the small interface the registry implements:
    target_version(device_id) -> "x.y.z" | None
    device_board(device_id)   -> board name | None      (optional)
    ota_granted(device_id)    -> bool                   (optional; default True)
`RegistryTargets(path)` reads them from the service's registry, choosing the
backend as host_tools.service.registry does: a path ending in `.json` is the
JSON registry's device entries ({"devices": {"sensor-1": {"psk": ...,
"target_version": "1.2.0", "board": "esp32", "ota": true}}}, re-read when the
file changes); any other path is the SQLite registry (host_tools.registry,
columns target_version, board, ota), queried at every call, so
`python -m host_tools.registry --db … target|ota …` takes effect in the
running service without a restart.  A revoked or unknown device has no
target and is granted nothing in SQLite.
"""

import asyncio
import json
import sqlite3
from pathlib import Path

from atls.errors import DecodeError
from host_tools.common import log
from host_tools.ota.service import OtaService
from host_tools.ota.store import BundleStore
from host_tools.registry.store import RegistryError, Store
from host_tools.service.errors import ConfigError

__all__ = ["OtaApp", "RegistryTargets", "from_config", "UPDATE_CHANNEL"]

UPDATE_CHANNEL = 2
RETARGET_MS = 1000
_BUSY = ("OFFERED", "SENDING", "SWITCHED")  # host_tools.ota.service states mid-transfer
_KEYS = ("rate_fps", "airtime_fps", "window", "frame_bytes", "overhead", "rto_ms")


class RegistryTargets:
    """target_version / device_board / ota_granted from the registry (JSON or
    SQLite, by the path; see the module doc)."""

    def __init__(self, path):
        self.path = Path(path)
        self._mtime = None
        self._devices = {}
        self.store = None
        if self.path.suffix != ".json":
            try:  # no master key: the targets are not secret
                self.store = Store(self.path, with_key=False)
            except RegistryError as e:
                raise ConfigError(str(e))

    def _entry(self, device_id):
        if self.store is not None:
            try:
                row = self.store.ota_target(device_id)
            except sqlite3.Error as e:  # busy or broken: no offer this time
                log("registry_error", error=str(e))
                row = None
            return row or {"ota": False}
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                data = json.loads(self.path.read_text())
                self._devices, self._mtime = data.get("devices") or {}, mtime
        except (OSError, ValueError, AttributeError):
            pass  # keep what was read last (the registry reload reports errors)
        e = self._devices.get(device_id)
        return e if isinstance(e, dict) else {}

    def target_version(self, device_id):
        return self._entry(device_id).get("target_version") or None

    def device_board(self, device_id):
        return self._entry(device_id).get("board") or None

    def ota_granted(self, device_id):
        return self._entry(device_id).get("ota", True) is not False


class OtaApp:
    def __init__(self, app, ota, targets, poll_ms=20):
        self.app = app
        self.ota = ota
        self.targets = targets
        self.poll_ms = poll_ms
        self.live = {}  # device id -> session whose HELLO the OtaService has seen
        self.waiting = []  # sessions up, HELLO not yet in
        self.seen = {}  # device id -> (target, board) its transfer was started with
        self._retarget_at = None
        self.counters = {"channel_refused": 0, "bad_messages": 0}

    # -- what core.Service calls --------------------------------------------------
    def granted_channels(self, session):
        """The granted-channels byte of the service's HELLO (bit n = channel n)."""
        return 1 << UPDATE_CHANNEL if self._granted(session.identity) else 0

    def on_connect(self, session):
        self.waiting.append(session)
        self.app.on_connect(session)

    def on_message(self, session, payload):
        self.app.on_message(session, payload)

    def on_close(self, session, reason):
        if session in self.waiting:
            self.waiting.remove(session)
        if self.live.get(session.identity) is session:
            del self.live[session.identity]
            self.ota.on_disconnect(session.identity)
        self.app.on_close(session, reason)

    def on_channel_message(self, session, channel, payload):
        dev = session.identity
        if channel != UPDATE_CHANNEL or not self._granted(dev):
            self.counters["channel_refused"] += 1
            log("channel_refused", device=dev, channel=channel)
            return
        if self.live.get(dev) is not session:
            self._start(session, session.service.now_ms())
            if self.live.get(dev) is not session:
                return
        try:
            out = self.ota.on_message(dev, payload, session.service.now_ms())
        except DecodeError:
            self.counters["bad_messages"] += 1
            return
        self._send(session, out)

    # -- timers ---------------------------------------------------------------------
    def poll(self, now_ms):
        for sess in list(self.waiting):
            if sess.device_hello is not None:
                self.waiting.remove(sess)
                self._start(sess, now_ms)
        if self._retarget_at is None or now_ms >= self._retarget_at:
            self._retarget_at = now_ms + RETARGET_MS
            for sess in list(self.live.values()):
                self._retarget(sess, now_ms)
        for dev, sess in list(self.live.items()):
            self._send(sess, self.ota.poll(dev, now_ms))

    async def run_timers(self, service):
        while True:
            await asyncio.sleep(self.poll_ms / 1000)
            try:
                self.poll(service.now_ms())
            except Exception as e:  # never take the service down
                log("ota_error", error=repr(e))

    def status(self, device_id):
        return self.ota.status(device_id)

    # -- internals -----------------------------------------------------------------
    def _granted(self, device_id):
        return bool(getattr(self.targets, "ota_granted", lambda d: True)(device_id))

    def _target(self, device_id):
        board = getattr(self.targets, "device_board", lambda d: None)(device_id)
        return self.targets.target_version(device_id), board

    def _retarget(self, session, now_ms):
        """Start the transfer again when the registry's target changed and no
        transfer is under way."""
        dev = session.identity
        if self.seen.get(dev) == self._target(dev):
            return
        if (self.ota.status(dev) or {}).get("state") not in _BUSY:
            self._start(session, now_ms)

    def _start(self, session, now_ms):
        if session in self.waiting:
            self.waiting.remove(session)
        dev = session.identity
        raw = bytes(session.device_hello or b"")
        if not raw or not self._granted(dev):
            return  # no version reported (older firmware), or updates not granted
        try:
            version = raw.decode("ascii")
            self.seen[dev] = self._target(dev)
            out = self.ota.on_connect(dev, version, now_ms)
        except ValueError:  # not x.y.z
            self.counters["bad_messages"] += 1
            return
        self.live[dev] = session
        log("ota_connect", device=dev, **(self.ota.status(dev) or {}))
        self._send(session, out)

    def _send(self, session, msgs):
        for m in msgs:
            session.send(m, UPDATE_CHANNEL)


def from_config(app, cfg, base, registry_path, targets=None):
    """The OtaApp of the service config's "ota" object (ConfigError if bad)."""
    if not isinstance(cfg, dict) or not cfg.get("bundles"):
        raise ConfigError('ota must be {"bundles": DIR, ...} (docs/CONFIG.md)')
    bad = set(cfg) - set(_KEYS) - {"bundles", "release_pub", "poll_ms"}
    if bad:
        raise ConfigError("ota: unknown keys %s" % ", ".join(sorted(bad)))
    pub = None
    if cfg.get("release_pub"):
        try:
            pub = bytes.fromhex((Path(base) / cfg["release_pub"]).read_text().strip())
        except (OSError, ValueError) as e:
            raise ConfigError("ota.release_pub: %s" % e)
    kw = {k: cfg[k] for k in _KEYS if k in cfg}
    if not all(isinstance(v, (int, float)) and v > 0 for v in kw.values()):
        raise ConfigError("ota: %s must be positive numbers" % ", ".join(_KEYS))
    try:
        ota = OtaService(BundleStore(Path(base) / cfg["bundles"], pub), None, **kw)
    except ValueError as e:
        raise ConfigError("ota: %s" % e)
    ota.registry = targets or RegistryTargets(registry_path)
    return OtaApp(app, ota, ota.registry, int(cfg.get("poll_ms", 20)))
