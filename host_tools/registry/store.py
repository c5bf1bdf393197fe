"""The device registry in SQLite: the embedded default of the service.

One database file (mode 0600) holds the devices (id, credential, created,
revoked, last seen, firmware version), the gateway's pairing state and a few
settings (`device_ca`).  PSKs are sealed with the service master key
(host_tools.registry.seal); certificate devices are registered by the
SHA-256 of their certificate or of its public key, as in devices.json.

Schema versions live in `PRAGMA user_version`; MIGRATIONS[i] takes a
database from version i to i + 1 inside one transaction, so opening an older
file upgrades it and a newer file (written by a later release) is refused.

Revocation keeps the row (revoked = time) so `list` shows it; a revoked
device's credentials are no longer in `credentials()`.  The running service
polls `changed()` (SQLite's `data_version`: moves when another connection
commits) and reloads: additions and revocations need no restart.
"""

import json
import os
import sqlite3
import time
from pathlib import Path

from host_tools.registry.seal import MasterKey, SealError

__all__ = [
    "Store",
    "RegistryError",
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "default_key_path",
    "provision_view",
    "provision_register",
    "firmware_version",
]


class RegistryError(Exception):
    """The registry file, a command's arguments or an imported file is unusable."""


MIGRATIONS = [
    # 0 -> 1: devices, pairing state, settings
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        psk_sealed BLOB,
        cert_sha256 TEXT UNIQUE,
        spki_sha256 TEXT UNIQUE,
        created REAL NOT NULL,
        revoked REAL,
        last_seen REAL,
        firmware TEXT
    );
    CREATE TABLE pairing (
        address TEXT PRIMARY KEY,
        device_id TEXT,
        service TEXT,
        state TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 1 -> 2: `list` and the fleet page order devices by last contact
    "CREATE INDEX devices_last_seen ON devices (last_seen);",
    # 2 -> 3: firmware updates (docs/OTA.md): the version a device should run,
    # its board, and whether it is granted updates (channel 2)
    """
    ALTER TABLE devices ADD COLUMN target_version TEXT;
    ALTER TABLE devices ADD COLUMN board TEXT;
    ALTER TABLE devices ADD COLUMN ota INTEGER NOT NULL DEFAULT 1;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_key_path(db_path):
    return str(db_path) + ".key"


def firmware_version(v):
    """The version string of a device HELLO's bytes (ASCII "x.y.z"), or None
    when empty or not printable ASCII (older firmware, garbage)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        try:
            v = bytes(v).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(v, str):
        return None
    v = v.strip()
    if not v or len(v) > 32 or not v.isprintable():
        return None
    return v


def _version(v):
    parts = v.split(".") if isinstance(v, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise RegistryError("version %r must be x.y.z" % (v,))
    return v


def _hex32(v, what):
    try:
        b = bytes.fromhex(v)
    except (TypeError, ValueError):
        b = b""
    if len(b) != 32:
        raise RegistryError("%s must be 64 hex digits" % what)
    return b.hex()


class Store:
    """An open registry database.  key_path: the master key file (default
    `<path>.key`, created 0600 when missing); with_key=False opens it without
    (no PSKs: what reads only the OTA targets does)."""

    def __init__(self, path, key_path=None, with_key=True):
        self.path = Path(path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=5, isolation_level=None)
            self._migrate()
            # a missing key file is made only while nothing is sealed with a lost one
            sealed = self.db.execute(
                "SELECT 1 FROM devices WHERE psk_sealed IS NOT NULL LIMIT 1"
            ).fetchone()
            self.key = None
            if with_key:
                path = key_path or default_key_path(self.path)
                self.key = MasterKey(path, create=sealed is None)
        except (sqlite3.Error, SealError, OSError) as e:
            raise RegistryError("registry %s: %s" % (self.path, e))
        self._data_version = None

    def close(self):
        self.db.close()

    # -- schema ---------------------------------------------------------------------
    def version(self):
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self):
        v = self.version()
        if v > SCHEMA_VERSION:
            raise RegistryError(
                "registry %s has schema %d, newer than this release's %d"
                % (self.path, v, SCHEMA_VERSION)
            )
        for i in range(v, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.version() == i:  # another process may have migrated meanwhile
                    for stmt in MIGRATIONS[i].split(";"):
                        if stmt.strip():
                            self.db.execute(stmt)
                    self.db.execute("PRAGMA user_version = %d" % (i + 1))
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise

    # -- devices --------------------------------------------------------------------
    def add(self, device_id, psk=None, cert_sha256=None, spki_sha256=None, replace=False):
        """Register a device with a PSK (bytes, 16..64) and/or a certificate
        fingerprint (hex SHA-256 of the DER cert or of its SPKI).  An existing
        device is an error unless replace (which also lifts a revocation)."""
        if not device_id or not isinstance(device_id, str):
            raise RegistryError("device id must be a non-empty string")
        if psk is None and cert_sha256 is None and spki_sha256 is None:
            raise RegistryError("device %r needs a psk, cert_sha256 or spki_sha256" % device_id)
        if psk is not None and not 16 <= len(psk) <= 64:
            raise RegistryError("device %r PSK must be 16..64 bytes" % device_id)
        cert = _hex32(cert_sha256, "cert_sha256") if cert_sha256 is not None else None
        spki = _hex32(spki_sha256, "spki_sha256") if spki_sha256 is not None else None
        sealed = self.key.seal(device_id, psk) if psk is not None else None
        row = self.db.execute("SELECT created FROM devices WHERE id = ?", (device_id,)).fetchone()
        if row is not None and not replace:
            raise RegistryError(
                "device %r is already registered (replace it with --force)" % device_id
            )
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO devices (id, psk_sealed, cert_sha256, spki_sha256,"
                " created, revoked, last_seen, firmware, target_version, board, ota)"
                " SELECT ?, ?, ?, ?, ?, NULL, o.last_seen, o.firmware, o.target_version,"
                " o.board, COALESCE(o.ota, 1) FROM (SELECT 1) LEFT JOIN"
                " (SELECT * FROM devices WHERE id = ?) o",
                (device_id, sealed, cert, spki, time.time(), device_id),
            )
        except sqlite3.IntegrityError:
            raise RegistryError("that certificate is already registered to another device")

    def revoke(self, device_id):
        """Mark a device revoked (its credentials stop working); False if unknown."""
        cur = self.db.execute(
            "UPDATE devices SET revoked = ? WHERE id = ? AND revoked IS NULL",
            (time.time(), device_id),
        )
        return cur.rowcount == 1

    def touch(self, device_id, last_seen=None, firmware=None):
        """Record a device's last contact (and firmware version when known:
        a str, or the bytes its HELLO carried)."""
        self.db.execute(
            "UPDATE devices SET last_seen = ?, firmware = COALESCE(?, firmware) WHERE id = ?",
            (
                time.time() if last_seen is None else last_seen,
                firmware_version(firmware),
                device_id,
            ),
        )

    # -- firmware updates (host_tools.ota.app.RegistryTargets) -----------------------
    def set_target(self, device_id, version, board=None):
        """Target a version ("x.y.z"; None clears the target and the board) and
        optionally the board's name; False if the device is unknown."""
        if version is None:
            sql, args = "target_version = NULL, board = NULL", ()
        else:
            sql, args = "target_version = ?, board = COALESCE(?, board)", (_version(version), board)
        cur = self.db.execute("UPDATE devices SET %s WHERE id = ?" % sql, args + (device_id,))
        return cur.rowcount == 1

    def set_ota(self, device_id, granted):
        """Grant (True) or refuse (False) updates; False if the device is unknown."""
        cur = self.db.execute(
            "UPDATE devices SET ota = ? WHERE id = ?", (1 if granted else 0, device_id)
        )
        return cur.rowcount == 1

    def ota_target(self, device_id):
        """{"target_version", "board", "ota"} of an active device, or None."""
        row = self.db.execute(
            "SELECT target_version, board, ota FROM devices WHERE id = ? AND revoked IS NULL",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        return {"target_version": row[0], "board": row[1], "ota": bool(row[2])}

    def devices(self):
        """Every device, revoked ones too, without secrets: a list of dicts."""
        rows = self.db.execute(
            "SELECT id, psk_sealed IS NOT NULL, cert_sha256, spki_sha256, created, revoked,"
            " last_seen, firmware, target_version, board, ota FROM devices ORDER BY id"
        ).fetchall()
        keys = ("id", "psk", "cert_sha256", "spki_sha256", "created", "revoked", "last_seen")
        keys += ("firmware", "target_version", "board", "ota")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["psk"], d["ota"] = bool(d["psk"]), bool(d["ota"])
            out.append(d)
        return out

    def credentials(self):
        """({identity bytes: psk}, {cert sha256: id}, {spki sha256: id}) of the
        devices not revoked."""
        psks, certs, spkis = {}, {}, {}
        for ident, sealed, cert, spki in self.db.execute(
            "SELECT id, psk_sealed, cert_sha256, spki_sha256 FROM devices WHERE revoked IS NULL"
        ):
            if sealed is not None:
                try:
                    psks[ident.encode()] = self.key.open(ident, sealed)
                except SealError as e:
                    raise RegistryError(str(e))
            if cert:
                certs[cert] = ident
            if spki:
                spkis[spki] = ident
        return psks, certs, spkis

    def changed(self):
        """True when another connection committed since the last call."""
        v = self.db.execute("PRAGMA data_version").fetchone()[0]
        old, self._data_version = self._data_version, v
        return old is not None and v != old

    # -- settings and pairing -------------------------------------------------------
    def setting(self, key, default=None):
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_setting(self, key, value):
        if value is None:
            self.db.execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, str(value)))

    def set_pairing(self, address, state, device_id=None, service=None):
        self.db.execute(
            "INSERT OR REPLACE INTO pairing VALUES (?, ?, ?, ?, ?)",
            (address, device_id, service, state, time.time()),
        )

    def pairings(self):
        keys = ("address", "device_id", "service", "state", "updated")
        return [dict(zip(keys, r)) for r in self.db.execute("SELECT * FROM pairing ORDER BY 1")]

    # -- import ---------------------------------------------------------------------
    def import_json(self, path, replace=False):
        """Import a devices.json (docs/CONFIG.md); returns how many devices.
        Its device_ca (relative to the JSON file) is stored as an absolute path."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RegistryError("import %s: %s" % (path, e))
        devices = data.get("devices") or {}
        if not isinstance(devices, dict):
            raise RegistryError("import %s: devices must be an object" % path)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for ident, e in devices.items():
                if not isinstance(e, dict):
                    raise RegistryError("import: device %r must be an object" % ident)
                try:
                    psk = bytes.fromhex(e["psk"]) if "psk" in e else None
                except (TypeError, ValueError):
                    raise RegistryError("import: device %r has a PSK that is not hex" % ident)
                self.add(ident, psk, e.get("cert_sha256"), e.get("spki_sha256"), replace)
                if e.get("target_version"):
                    self.set_target(ident, e["target_version"], e.get("board") or None)
                elif e.get("board"):
                    self.db.execute(
                        "UPDATE devices SET board = ? WHERE id = ?", (e["board"], ident)
                    )
                if "ota" in e:
                    if not isinstance(e["ota"], bool):
                        raise RegistryError("import: device %r ota must be true/false" % ident)
                    self.set_ota(ident, e["ota"])
            if data.get("device_ca"):
                self.set_setting("device_ca", str((path.parent / data["device_ca"]).resolve()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(devices)


def provision_view(path):
    """A SQLite registry as provisioning reads a devices.json: {"devices":
    {id: {...}} of active devices, "device_ca": the setting}."""
    st = Store(path)
    try:
        out = {"devices": {d["id"]: {} for d in st.devices() if not d["revoked"]}}
        ca = st.setting("device_ca")
        if ca:
            out["device_ca"] = ca
        return out
    finally:
        st.close()


def provision_register(path, device, entry, device_ca=None, force=False):
    """Register what provisioning made (entry: {"psk": hex} or
    {"cert_sha256": hex}); device_ca relative to the database's folder."""
    st = Store(path)
    try:
        psk = bytes.fromhex(entry["psk"]) if "psk" in entry else None
        st.add(device, psk, entry.get("cert_sha256"), entry.get("spki_sha256"), replace=force)
        if device_ca:
            st.set_setting("device_ca", device_ca)
    finally:
        st.close()
