"""The service's side of firmware updates: one offer/transfer state machine
per device, sans-I/O (messages and `now_ms` in, messages out), for the update
channel (channel 2) of a v2 session.

Theory of operation
-------------------
Per device one state (`Transfer.state`): IDLE -> OFFERED -> SENDING ->
SWITCHED -> DONE, or REFUSED.  on_connect(device, running_version) after
the session's HELLO: when the registry targets a newer version than the
device runs, and the store has that bundle for the device's board, OFFER
goes out.  The device answers STATUS: RECEIVING(offset) starts or resumes
the transfer at that offset (the device is the authority on what it holds,
so a reconnect, a service restart or a device reboot all resume from the
device's last persisted offset); later RECEIVING messages are cumulative
acknowledgements.  poll(now_ms) sends CHUNKs at the next offset while the
unacknowledged bytes stay within `window` chunks and both token buckets
allow (per device `rate_fps`, and the shared `airtime_fps` for the whole
network: ZigBee airtime is shared; bursts of `burst` frames at most).  No progress for `rto_ms` -> go back to
the acknowledged offset (go-back-N; the device keeps only in-order bytes);
a RECEIVING that does not advance while chunks are out is the device
saying where it waits after a gap: go back there once there was no progress
for rto_ms/4 (at once would resend a window for every reordered chunk).
SWITCHED: the device verified and switched, and reboots; the next
on_connect with the target version is DONE.  CURRENT is DONE at once.  A
refusal ends the transfer; the bundle is not offered to that device again,
except for the codes that can change (UNCONFIRMED, NO_SPACE, IO_ERROR): at
the next connection.

Chunk size: a ZigBee frame carries `frame_bytes` (66) of ATLS; a CDATA
message spends `overhead` (13: header 3, seq 1, channel 1, tag 8 with CCM_8)
and CHUNK 5 more, so 48 bytes of bundle per frame by default.

The registry is anything with `target_version(device_id) -> "x.y.z" | None`
and, optionally, `device_board(device_id) -> str | None` (without it, or when
it says None, the one board the store has the target version for).
"""

from atls.ota import format_version, parse_version, wire
from host_tools.ratelimit import TokenBuckets

IDLE = "IDLE"
OFFERED = "OFFERED"
SENDING = "SENDING"
SWITCHED = "SWITCHED"
DONE = "DONE"
REFUSED = "REFUSED"

RETRYABLE = (wire.UNCONFIRMED, wire.NO_SPACE, wire.IO_ERROR)


def chunk_size(frame_bytes=66, overhead=13):
    """Bundle bytes per CHUNK so that one CHUNK fills one radio frame."""
    n = frame_bytes - overhead - wire.CHUNK_HEAD
    if not 1 <= n <= wire.MAX_CHUNK:
        raise ValueError("frame_bytes %d leaves no room for a chunk" % frame_bytes)
    return n


def airtime(total, frame_bytes=66, overhead=13, ack_bytes=256, network_fps=326.0, rate_fps=10.0):
    """What one update of `total` bundle bytes costs on a ZigBee network:
    frames each way, bytes on air (ATLS bytes, radio headers not counted), the
    share of the network's ~326 frames/s and the time at `rate_fps` (for
    `make bench`'s ota section; no loss)."""
    n = chunk_size(frame_bytes, overhead)
    down = -(-total // n)
    every = -(-ack_bytes // n) * n  # the device acknowledges after >= ack_bytes, whole chunks
    up = total // every + 2  # acknowledgements, the answer to OFFER, SWITCHED
    on_air = total + down * (overhead + wire.CHUNK_HEAD) + up * (overhead + wire.STATUS_LEN)
    on_air += overhead + wire.OFFER_LEN
    return {
        "chunk_bytes": n,
        "frames_down": down + 1,
        "frames_up": up,
        "bytes_on_air": on_air,
        "network_share": rate_fps / network_fps,
        "seconds": (down + 1) / rate_fps,
    }


class StaticTargets:
    """A registry stand-in: {device_id: version} and optional boards."""

    def __init__(self, targets=None, boards=None):
        self.targets = dict(targets or {})
        self.boards = dict(boards or {})

    def target_version(self, device_id):
        return self.targets.get(device_id)

    def device_board(self, device_id):
        return self.boards.get(device_id)


class Transfer:
    def __init__(self, device_id):
        self.device = device_id
        self.state = IDLE
        self.bundle = None
        self.running = None  # version string the device reported
        self.acked = 0  # every byte below it is at the device
        self.next = 0  # next byte to send
        self.progress_ms = 0  # last ack advance (or offer sent)
        self.nacked = False  # the device said where it waits, and it was behind `next`
        self.code = None  # last STATUS code from the device
        self.refused = {}  # bundle id -> code

    def info(self):
        b = self.bundle
        return {
            "state": self.state,
            "running": self.running,
            "target": b.version if b else None,
            "acked": self.acked,
            "total": len(b.data) if b else 0,
            "code": wire.STATUS_NAMES.get(self.code, self.code),
        }


class OtaService:
    def __init__(
        self,
        store,
        registry,
        frame_bytes=66,
        overhead=13,
        rate_fps=10.0,
        airtime_fps=None,
        window=16,
        burst=4,
        rto_ms=3000,
        max_devices=10000,
    ):
        self.store = store
        self.registry = registry
        self.chunk = chunk_size(frame_bytes, overhead)
        self.window = window
        self.rto_ms = rto_ms
        self.per_device = TokenBuckets(rate_fps, burst, max_devices)
        self.airtime = TokenBuckets(airtime_fps, burst, 1) if airtime_fps else None
        self.transfers = {}
        self.counters = {"offers": 0, "chunks": 0, "bytes": 0, "resent_bytes": 0, "switched": 0}
        self.counters.update(done=0, refused=0, resumed=0)

    def transfer(self, device_id):
        t = self.transfers.get(device_id)
        if t is None:
            t = self.transfers[device_id] = Transfer(device_id)
        return t

    def _target(self, device_id):
        v = self.registry.target_version(device_id)
        if not v:
            return None
        board = getattr(self.registry, "device_board", lambda d: None)(device_id)
        if not board:
            boards = self.store.boards_with(v)
            if len(boards) != 1:
                return None
            board = boards[0]
        return self.store.get(board, v)

    # ---- events from the session ------------------------------------------------

    def on_connect(self, device_id, running_version, now_ms):
        """The device's session is up (its HELLO said `running_version`)."""
        t = self.transfer(device_id)
        t.running = format_version(parse_version(running_version))
        b = self._target(device_id)
        if b is None:
            t.state = IDLE
            return []
        if b.header.version <= parse_version(t.running):
            if t.state in (SWITCHED, OFFERED, SENDING) or t.bundle is b:
                self.counters["done"] += t.state != DONE
            t.state, t.bundle = DONE, b
            return []
        code = t.refused.get(b.id)
        if code is not None and code not in RETRYABLE:
            t.state, t.bundle, t.code = REFUSED, b, code
            return []
        return self._offer(t, b, now_ms)

    def on_disconnect(self, device_id):
        """The session ended: the transfer waits for on_connect."""
        t = self.transfers.get(device_id)
        if t is not None and t.state in (OFFERED, SENDING):
            t.state = IDLE

    def on_message(self, device_id, msg, now_ms):
        """One update-channel message from the device; messages to send."""
        t = self.transfer(device_id)
        typ, fields = wire.pull(msg)
        if typ != wire.STATUS or t.bundle is None:
            return []
        code, offset = fields
        t.code = code
        if code == wire.RECEIVING:
            if t.state == OFFERED:
                t.state, t.acked, t.next, t.progress_ms = SENDING, offset, offset, now_ms
                self.counters["resumed"] += offset > 0
            elif t.state == SENDING and offset <= len(t.bundle.data):
                if offset > t.acked:
                    t.acked, t.progress_ms, t.nacked = offset, now_ms, False
                    t.next = max(t.next, offset)
                elif offset < t.next:
                    t.nacked = True  # the device waits there: go back once stalled
            return self.poll(device_id, now_ms)
        if code == wire.SWITCHED:
            if t.state != SWITCHED:
                self.counters["switched"] += 1
            t.state, t.acked = SWITCHED, len(t.bundle.data)
        elif code == wire.CURRENT:
            t.state = DONE
        else:
            t.state = REFUSED
            t.refused[t.bundle.id] = code
            self.counters["refused"] += 1
        return []

    def poll(self, device_id, now_ms):
        """Chunks (and a repeated OFFER) due now for one device."""
        t = self.transfers.get(device_id)
        if t is None:
            return []
        if t.state == OFFERED:
            if now_ms - t.progress_ms >= self.rto_ms:
                return self._offer(t, t.bundle, now_ms)
            return []
        if t.state != SENDING:
            return []
        stalled = now_ms - t.progress_ms
        if t.next > t.acked and (
            stalled >= self.rto_ms or (t.nacked and stalled >= self.rto_ms // 4)
        ):
            self._rewind(t, t.acked, now_ms)
        out = []
        data = t.bundle.data
        limit = min(len(data), t.acked + self.window * self.chunk)
        now_s = now_ms / 1000.0
        while t.next < limit:
            if self.airtime is not None and not self.airtime.allow("*", now_s):
                break
            if not self.per_device.allow(device_id, now_s):
                break
            part = data[t.next : t.next + self.chunk]
            out.append(wire.push_chunk(t.next, part))
            t.next += len(part)
            self.counters["chunks"] += 1
            self.counters["bytes"] += len(part)
        return out

    def status(self, device_id):
        t = self.transfers.get(device_id)
        return t.info() if t else None

    # ---- internals ----------------------------------------------------------------

    def _offer(self, t, b, now_ms):
        t.state, t.bundle, t.acked, t.next, t.progress_ms = OFFERED, b, 0, 0, now_ms
        t.nacked = False
        self.counters["offers"] += 1
        return [wire.push_offer(b.header.version, len(b.data), b.id)]

    def _rewind(self, t, offset, now_ms):
        self.counters["resent_bytes"] += max(0, t.next - offset)
        t.next = max(offset, t.acked)
        t.progress_ms, t.nacked = now_ms, False
