"""The app's side of updates: what atls.app does with the update channel.

    Agent(release_key_hex, board_name, log, now_ms)
        on_up()           a handshake with the service completed: confirm a
                          version on trial (atls.ota.boot.confirm), once
        on_message(p)     a channel-2 payload -> the STATUS to send back on
                          channel 2, or None; the Updater (atls.ota.updater)
                          is imported and built only at the first one, so a
                          device that is never offered anything keeps its heap
        reset_due(now_ms, idle)
                          True when the board must restart: the update switched
                          and its STATUS was acknowledged (`idle`: nothing of
                          ours pending), or a version on trial has not
                          confirmed within boot.TRIAL_MS
    reset()  machine.reset() on a board; on the unix port (the simulator, the
             tests) SystemExit(RESET_EXIT), which the simulator answers by
             starting the device again (a reboot).

A payload that is no update message is counted (`dropped`) and ignored.  A
MemoryError in the update code drops the Updater and its modules (`nomem`,
status line `ota_nomem`): the readings go on, the service offers again; after
MAX_NOMEM of them updates wait for the next boot (each reload fragments the
heap further).
"""

import sys

from atls.ota import boot

RESET_EXIT = 75  # unix port: the exit status that means "reboot me" (sim/fleet.py)
MAX_NOMEM = 2  # MemoryErrors in the update code before updates wait for the next boot


class Agent:
    def __init__(self, release_key, board, log=None, now_ms=0, root=None, trial_ms=None):
        from binascii import unhexlify

        self.key = unhexlify(release_key)
        self.board = board
        self.log = log
        self.root = boot.default_root() if root is None else root
        self.updater = None
        self.confirmed = False
        self.dropped = 0
        self.nomem = 0  # update messages dropped for want of heap
        self.switched = False
        trial_ms = boot.TRIAL_MS if trial_ms is None else trial_ms
        self.trial_until = now_ms + trial_ms if boot.on_trial(self.root) else None

    def on_up(self):
        if self.confirmed:
            return
        self.confirmed = True
        self.trial_until = None
        if boot.confirm(self.root):
            from atls.ota import running_version

            self._log("ota_confirmed", version=running_version(self.root))

    def on_message(self, payload):
        from atls.errors import DecodeError

        if self.nomem >= MAX_NOMEM:
            return None  # no heap for updates in this power-up: readings first
        try:
            if self.updater is None:
                import gc

                gc.collect()
                from atls.ota.updater import Updater

                self.updater = Updater(self.root, self.key, self.board, log=self.log)
            reply = self.updater.on_message(payload)
        except DecodeError:
            self.dropped += 1
            return None
        except MemoryError:  # the readings go on; the service offers again later
            self._unload()
            self.nomem += 1
            self._log("ota_nomem", n=self.nomem)
            return None
        if self.updater.state == "SWITCHED":
            self.switched = True
        return reply

    def _unload(self):
        """Give the update code's heap back (it is loaded again when needed)."""
        import gc

        self.updater = None
        for name in ("atls.ota.updater", "atls.ota.bundle"):
            if name in sys.modules:
                del sys.modules[name]
        gc.collect()

    def reset_due(self, now_ms, idle):
        if self.switched and idle:
            self._log("ota_reboot", reason="switched")
            return True
        if self.trial_until is not None and now_ms >= self.trial_until:
            self._log("ota_reboot", reason="trial_timeout")
            return True
        return False

    def _log(self, event, **fields):
        if self.log is not None:
            self.log(event, **fields)


def reset():
    if sys.platform in ("linux", "darwin", "win32"):
        raise SystemExit(RESET_EXIT)
    import machine

    machine.reset()
