"""The device's update receiver: sans-I/O (messages in, STATUS out), its only
side effects the files under the OTA root.

Theory of operation
-------------------
States (one value, `state`): IDLE -> RECEIVING -> SWITCHED, or REFUSED.
TRANSITIONS maps (state, message type) to a handler; anything else is
ignored (no reply).  The service sends OFFER {version, total, id}; the device
answers STATUS:
  - CURRENT / ROLLBACK / FAILED_BEFORE / UNCONFIRMED / NO_SPACE / NO_KEY at
    once from the offer (nothing is downloaded);
  - RECEIVING(offset): the offset to (re)start from.  A staging area of the
    same bundle id resumes where its progress file says; anything else in
    `stage/` is discarded first.
CHUNK {offset, data} is written only at the next offset wanted (a chunk that
overlaps it is cut; early chunks are held in RAM up to `hold_bytes` and
written when the gap fills; a duplicate or a gap is answered with
RECEIVING(next), a cumulative acknowledgement, so the service goes back
there; on the first of a run of them and every 8th after it).  Bytes [0, H+64)
go to `stage/head`; once complete, the Ed25519 signature is checked before
any field is believed, then board, version (> running, != a version that
failed here, running >= min_version), the offered id and total.  The file
bodies go to `stage/<path>`; each file is hashed as it completes.  Progress
(`stage/prog`: id, total, offset) is written by rename after the data is
flushed, at most every `persist_bytes` and at each file's end, so a reboot
resumes at or before what was acknowledged.  At the end every file is hashed
again, then the switch (atls.ota.boot.install): remove the inactive slot,
rename `stage/` to it, write the pointer (trial).  A power cut between any two steps leaves the old pointer
or the new one, each naming a verified slot (atls.ota.boot).
Refusals discard the staging area; the running firmware is never touched.
"""

from atls.errors import CryptoError
from atls.ota import boot, bundle, wire
from atls.ota import fs as _fs

IDLE = "IDLE"
RECEIVING = "RECEIVING"
SWITCHED = "SWITCHED"
REFUSED = "REFUSED"


class Refuse(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class Updater:
    def __init__(
        self,
        root,
        public_key,
        board,
        fs=None,
        ack_bytes=256,
        persist_bytes=2048,
        margin=4096,
        hold_bytes=512,
        log=None,
    ):
        self.root = root
        self.stage = root + "/stage"
        self.key = public_key
        self.board = board
        self.fs = fs or _fs.FS()
        self.ack_bytes = ack_bytes
        self.persist_bytes = persist_bytes
        self.margin = margin
        self.log = log  # log(event, **fields): the app's status line (atls.app.status)
        self.state = IDLE
        self.code = None  # the last STATUS code sent
        self.bid = None
        self.total = 0
        self.offset = 0  # next byte wanted
        self.hdr = None
        self.offered = None  # the version OFFER named
        self._fh = None  # open file of the current region
        self._end = 0  # bundle offset where that region ends
        self._head_end = 0  # H + 64 once known
        self._strays = 0  # gaps and duplicates since the last progress
        self.hold_bytes = hold_bytes  # early chunks kept in RAM (reordering)
        self._held = {}  # offset -> bytes
        self._held_bytes = 0
        self._unacked = 0
        self._unpersisted = 0
        _fs.makedirs(self.fs, root)
        self._recover()

    # ---- public API ---------------------------------------------------------

    def on_message(self, msg):
        """One update-channel message in; the STATUS to send back, or None."""
        t, fields = wire.pull(msg)
        handler = TRANSITIONS.get((self.state, t))
        if handler is None:
            return None
        try:
            return handler(self, *fields)
        except Refuse as r:
            return self._refuse(r.code)
        except OSError:
            return self._refuse(wire.IO_ERROR)

    def status(self):
        """For the app's status line: state, last code name, progress."""
        return {
            "state": self.state,
            "code": wire.STATUS_NAMES.get(self.code, self.code),
            "offset": self.offset,
            "total": self.total,
        }

    # ---- staging area ----------------------------------------------------------

    def _recover(self):
        """At start: keep a consistent staging area for resumption, discard a
        half-written one (no or bad progress file, head shorter than recorded)."""
        if not _fs.is_dir(self.stage):
            return
        try:
            prog = _fs.read_replaced(self.stage + "/prog", self.stage + "/prog.tmp")
            bid, total, off = str(prog, "ascii").split()
            bid, total, off = bytes.fromhex(bid), int(total), int(off)
            if len(bid) != bundle.ID_LEN or not 0 <= off <= total:
                raise ValueError
            need = off
            if off > bundle.FIXED:  # the whole signed header, or what of it arrived
                head = _fs.read(self.stage + "/head", bundle.FIXED)
                need = min(off, bundle.head_len(head) + bundle.SIG_LEN)
            if _fs.size(self.stage + "/head") < need:
                raise ValueError
        except (OSError, ValueError):
            _fs.rmtree(self.fs, self.stage)
            return
        self.bid, self.total, self.offset = bid, total, off

    def _persist(self):
        if self._fh is not None:
            self.fs.flush(self._fh)
        p = self.stage + "/prog"
        f = self.fs.open(p + ".tmp", "wb")
        try:
            self.fs.write(f, ("%s %d %d" % (self.bid.hex(), self.total, self.offset)).encode())
        finally:
            self.fs.close(f)
        _fs.replace(self.fs, p + ".tmp", p)
        self._unpersisted = 0

    def _close(self):
        if self._fh is not None:
            fh, self._fh = self._fh, None
            self.fs.close(fh)

    def _discard(self):
        self._close()
        self._held, self._held_bytes = {}, 0
        _fs.rmtree(self.fs, self.stage)
        self.bid, self.hdr, self.offset, self.total = None, None, 0, 0

    def _refuse(self, code):
        self._discard()
        self.state, self.code, self._strays = REFUSED, code, 0
        self._log("ota_refused", code=wire.STATUS_NAMES.get(code, code))
        return wire.push_status(code, 0)

    def _log(self, event, **fields):
        if self.log is not None:
            if self.offered is not None:
                fields["version"] = "%d.%d.%d" % self.offered
            self.log(event, **fields)

    def _reply(self, code):
        self.code = code
        self._unacked = 0
        return wire.push_status(code, self.offset)

    # ---- OFFER ------------------------------------------------------------------

    def _offer(self, version, total, bid):
        self._close()
        self._held, self._held_bytes = {}, 0
        p = boot.read_pointer(self.root) or {}
        if not self.key:
            raise Refuse(wire.NO_KEY)
        if p.get("state") == "trial":
            raise Refuse(wire.UNCONFIRMED)
        from atls.ota import parse_version, running_version

        running = parse_version(running_version(self.root))
        if version == running:
            self.state = IDLE
            return self._reply(wire.CURRENT)
        if version < running:
            raise Refuse(wire.ROLLBACK)
        if p.get("bad") and parse_version(p["bad"]) == version:
            raise Refuse(wire.FAILED_BEFORE)
        if self.bid != bid or self.total != total or not _fs.is_dir(self.stage):
            self._discard()
            _fs.rmtree(self.fs, self.root + "/" + boot.inactive(p))
            free = self.fs.free(self.root)
            if free is not None and free < total + self.margin:
                raise Refuse(wire.NO_SPACE)
            self.fs.mkdir(self.stage)
            self.bid, self.total, self.offset = bid, total, 0
            self._persist()
        self.state, self.hdr, self._end, self.offered = RECEIVING, None, 0, version
        if self.offset >= bundle.FIXED:
            self._load_head()  # resumed past the header: check it again
        if self.offset == self.total:
            return self._finish()
        self._log("ota_receiving", offset=self.offset, total=self.total)
        return self._reply(wire.RECEIVING)

    # ---- CHUNK ------------------------------------------------------------------

    def _chunk(self, offset, data):
        end = offset + len(data)
        if end > self.total:
            raise Refuse(wire.BAD_BUNDLE)
        if offset > self.offset or end <= self.offset:
            if offset > self.offset and self._held_bytes + len(data) <= self.hold_bytes:
                self._held[offset] = bytes(data)  # early: kept for when the gap fills
                self._held_bytes += len(data)
            return self._stray()
        self._strays = 0
        self._write(data[self.offset - offset :])
        while self._held and self.offset < self.total:  # held chunks that now fit
            nxt = None
            for k in list(self._held):
                if k + len(self._held[k]) <= self.offset:
                    self._held_bytes -= len(self._held.pop(k))
                elif k <= self.offset:
                    nxt = k
            if nxt is None:
                break
            v = self._held.pop(nxt)
            self._held_bytes -= len(v)
            self._write(memoryview(v)[self.offset - nxt :])
        if self.offset == self.total:
            return self._finish()
        if self._unpersisted >= self.persist_bytes:
            self._persist()
        if self._unacked >= self.ack_bytes:
            return self._reply(wire.RECEIVING)
        return None

    def _stray(self):
        """A gap or a duplicate: say where we are, on the first one and every
        8th after it (not on each: a window of them arrives at once; but again,
        as the answer may be lost and the service repeat itself)."""
        self._strays += 1
        if self._strays % 8 != 1:
            return None
        return self._reply(wire.RECEIVING)

    def _write(self, data):
        while data:
            if self._fh is None:
                self._open_region()
            n = min(len(data), self._end - self.offset)
            self.fs.write(self._fh, data[:n])
            data = data[n:]
            self.offset += n
            self._unacked += n
            self._unpersisted += n
            if self.offset == self._end:
                self._region_done()

    def _open_region(self):
        """Open the file that holds self.offset, positioned there."""
        if self.hdr is None:
            path, start = self.stage + "/head", 0
            self._end = bundle.FIXED if self.offset < bundle.FIXED else self._head_end
        else:
            start = self.hdr.head + bundle.SIG_LEN
            for entry in self.hdr.files():
                if self.offset < start + entry[1]:
                    break
                start += entry[1]
            path = self.stage + "/" + entry[0]
            self._end = start + entry[1]
            _fs.makedirs(self.fs, path.rpartition("/")[0])
        pos = self.offset - start
        if pos and _fs.size(path) < pos:
            raise Refuse(wire.IO_ERROR)  # staging lost data: start again
        self._fh = self.fs.open(path, "r+b" if pos else "wb")
        self._fh.seek(pos)

    def _region_done(self):
        self._close()
        if self.hdr is None and self.offset == bundle.FIXED:
            try:
                self._head_end = bundle.head_len(_fs.read(self.stage + "/head", bundle.FIXED))
            except bundle.BundleError:
                raise Refuse(wire.BAD_BUNDLE)
            self._head_end += bundle.SIG_LEN
        elif self.hdr is None:
            self._load_head()
        else:
            self._check_file(self.offset)
        self._skip_empty()
        self._persist()

    def _skip_empty(self):
        """Create the zero-length files that start at self.offset."""
        if self.hdr is None:
            return
        start = self.hdr.head + bundle.SIG_LEN
        for name, size, _ in self.hdr.files():  # _: the digest
            if start == self.offset and size == 0:
                path = self.stage + "/" + name
                _fs.makedirs(self.fs, path.rpartition("/")[0])
                self.fs.close(self.fs.open(path, "wb"))
                if _fs.sha256_file(path) != _:
                    raise Refuse(wire.BAD_HASH)
            start += size

    def _load_head(self):
        """Verify the staged header (signature first), then what it says."""
        import gc

        from atls.ota import parse_version, running_version

        gc.collect()  # one block of up to 8 KiB for the header
        head = _fs.read(self.stage + "/head")
        try:
            self._head_end = bundle.head_len(head) + bundle.SIG_LEN
        except bundle.BundleError:
            raise Refuse(wire.BAD_BUNDLE)
        if self.offset < self._head_end:
            return  # not complete yet
        head = head[: self._head_end]
        try:
            bundle.verify(head, self.key)
        except bundle.BundleError:
            raise Refuse(wire.BAD_BUNDLE)
        except CryptoError:  # AuthError, InvalidPointError (a MemoryError is no verdict)
            raise Refuse(wire.BAD_SIGNATURE)
        try:
            hdr = bundle.Header(head)
        except bundle.BundleError:
            raise Refuse(wire.BAD_BUNDLE)
        if bundle.bundle_id(head) != self.bid or hdr.total != self.total:
            raise Refuse(wire.BAD_BUNDLE)
        if hdr.version != self.offered:
            raise Refuse(wire.BAD_BUNDLE)
        if hdr.board != self.board:
            raise Refuse(wire.WRONG_BOARD)
        running = parse_version(running_version(self.root))
        if hdr.version <= running:
            raise Refuse(wire.ROLLBACK)
        p = boot.read_pointer(self.root) or {}
        if p.get("bad") and parse_version(p["bad"]) == hdr.version:
            raise Refuse(wire.FAILED_BEFORE)
        if running < hdr.min_version:
            raise Refuse(wire.MIN_VERSION)
        self.hdr = hdr

    def _check_file(self, end):
        """The file that ends at bundle offset `end` must match its hash."""
        start = self.hdr.head + bundle.SIG_LEN
        for name, size, digest in self.hdr.files():
            start += size
            if size and start == end and _fs.sha256_file(self.stage + "/" + name) != digest:
                raise Refuse(wire.BAD_HASH)

    # ---- the switch ---------------------------------------------------------------

    def _finish(self):
        self._close()
        if self.hdr is None:
            self._load_head()
        if self.hdr is None or not boot.slot_ok(self.root, "stage", hdr=self.hdr):
            raise Refuse(wire.BAD_HASH)
        from atls.ota import format_version

        new = boot.install(self.root, format_version(self.hdr.version), self.fs)
        self.state, self._strays = SWITCHED, 0
        self.offset = self.total
        self._log("ota_switched", slot=new)
        return self._reply(wire.SWITCHED)


def _switched_offer(self, version, total, bid):
    return self._reply(wire.SWITCHED)  # reboot pending: nothing more to do


def _after_end(self, offset, data):
    """A chunk after the transfer ended: the last STATUS may have been lost, so
    say it again (on the first and every 8th such chunk)."""
    self._strays += 1
    if self._strays % 8 != 1:
        return None
    return wire.push_status(self.code, self.offset if self.state == SWITCHED else 0)


TRANSITIONS = {
    (IDLE, wire.OFFER): Updater._offer,
    (REFUSED, wire.OFFER): Updater._offer,
    (RECEIVING, wire.OFFER): Updater._offer,
    (RECEIVING, wire.CHUNK): Updater._chunk,
    (SWITCHED, wire.OFFER): _switched_offer,
    (SWITCHED, wire.CHUNK): _after_end,
    (REFUSED, wire.CHUNK): _after_end,
}
