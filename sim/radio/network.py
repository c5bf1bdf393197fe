"""A whole emulated network: the coordinator on a pty and N device modules
on TCP ports, on one medium driven by an asyncio loop (RadioNetwork), also
runnable on a loop of its own in a thread (BackgroundRadio), and the JSON
commands of the control port."""

import asyncio
import concurrent.futures
import threading

from atls import xbee as X
from sim.radio.addresses import COORDINATOR_BASE, DEVICE_BASE, hex64
from sim.radio.medium import Medium
from sim.radio.module import Module
from sim.radio.serial_ends import PtySerial, TcpSerial


class RadioNetwork:
    """Coordinator on a pty + N device modules on TCP ports, on one medium
    driven by the running asyncio loop."""

    def __init__(
        self,
        devices=1,
        loss=0.0,
        latency_ms=5.0,
        seed=1,
        coordinator_ap=1,
        device_ap=1,
        ee=0,
        pan_id=0x0A715,
        joined=False,
        join_open=False,
        host="127.0.0.1",
        overhead_bytes=30,
        join_delay_ms=50,
        guard_ms=1000,
    ):
        self.n_devices = devices
        self.opts = dict(
            loss=loss,
            latency_ms=latency_ms,
            seed=seed,
            overhead_bytes=overhead_bytes,
            join_delay_ms=join_delay_ms,
        )
        self.coordinator_ap = coordinator_ap
        self.device_ap = device_ap
        self.ee = ee
        self.pan_id = pan_id
        self.joined = joined
        self.join_open = join_open
        self.host = host
        self.guard_ms = guard_ms
        self.medium = None
        self.pty = None
        self.devices = []  # (module, TcpSerial)

    async def start(self):
        loop = asyncio.get_running_loop()
        self.medium = Medium(loop, **self.opts)
        coord = self.medium.add(
            Module(
                self.medium,
                COORDINATOR_BASE + 1,
                coordinator=True,
                api_mode=self.coordinator_ap,
                ee=self.ee,
                pan_id=self.pan_id,
                guard_ms=self.guard_ms,
            )
        )
        self.pty = PtySerial(loop, coord)
        coord.emit(X.modem_status(X.COORDINATOR_STARTED))
        if self.join_open:
            coord.nj = 0xFF
            coord.open_join(None)
        for _ in range(self.n_devices):
            await self.add_device()
        return self

    async def add_device(self, address=None, api_mode=None, joined=None, ee=None, port=0):
        """Add one more device module (a new TCP port); returns its description."""
        m = self.medium
        if address is None:
            address = DEVICE_BASE + len(self.devices) + 1
        mod = m.add(
            Module(
                m,
                address,
                api_mode=self.device_ap if api_mode is None else api_mode,
                ee=self.ee if ee is None else ee,
                pan_id=self.pan_id,
                joined=self.joined if joined is None else joined,
                guard_ms=self.guard_ms,
            )
        )
        srv = await TcpSerial(mod).start(self.host, port)
        self.devices.append((mod, srv))
        mod.try_join()
        return self._dev(mod, srv)

    def _dev(self, mod, srv):
        return {"address64": hex64(mod.addr64), "host": srv.host, "port": srv.port, "ap": mod.ap}

    def describe(self):
        c = self.medium.coordinator
        return {
            "coordinator": {"address64": hex64(c.addr64), "pty": self.pty.path, "ap": c.ap},
            "devices": [self._dev(m, s) for m, s in self.devices],
            "pan_id": "%X" % self.pan_id,
            "ee": self.ee,
            "np": c.max_payload(),
            "loss": self.medium.loss,
            "latency_ms": self.medium.latency_ms,
            "seed": self.medium.seed,
        }

    def stats(self):
        s = self.medium.stats()
        for m, srv in self.devices:
            s["modules"][hex64(m.addr64)]["tcp_connections"] = srv.connections
        attackers = getattr(self, "attackers", None)
        if attackers:
            from sim.radio import attackers as atk

            s["attackers"] = atk.stats(attackers)
        return s

    def close(self):
        for _, srv in self.devices:
            srv.close()
        if self.pty is not None:
            self.pty.close()

    # JSON commands (control port and BackgroundRadio.command)
    def command(self, req):
        cmd = req.get("cmd")
        m = self.medium
        if cmd == "stats":
            return {"ok": True, "stats": self.stats()}
        if cmd == "describe":
            return {"ok": True, "state": self.describe()}
        if cmd in ("leave", "restart", "join", "silence"):
            mod = m.module(req["address64"])
            if cmd == "leave":
                mod.leave(req.get("rejoin", True))
            elif cmd == "restart":
                mod.restart()
            elif cmd == "join":
                mod.try_join()
            else:
                mod.silent = bool(req.get("on", True))
            return {"ok": True, "module": mod.describe()}
        if cmd == "join_window":
            s = req.get("seconds", 60)
            m.coordinator.open_join(None if s is None else float(s))
            return {"ok": True}
        if cmd == "attack":  # the pair-attack scenario's attackers (attackers.py)
            from sim.radio import attackers as atk

            if not hasattr(self, "attackers"):
                self.attackers = {}
            self.attackers.update(atk.start(m, req))
            return {"ok": True, "attackers": sorted(self.attackers)}
        if cmd == "set":
            for k in ("loss", "latency_ms"):
                if k in req:
                    setattr(m, k, float(req[k]))
            return {"ok": True}
        return {"ok": False, "error": "unknown command %r" % cmd}


class BackgroundRadio:
    """A RadioNetwork on its own asyncio loop in a thread (tests, tools).

    with BackgroundRadio(devices=1) as radio:
        state = radio.state            # describe()
        radio.call(radio.net.medium.leave, addr)   # run in the loop thread
    """

    def __init__(self, **kw):
        self.kw = kw
        self.net = None
        self.loop = None
        self.state = None
        self._thread = None

    def start(self):
        ready = threading.Event()
        err = []

        def main():
            self.loop = asyncio.new_event_loop()
            try:
                self.net = self.loop.run_until_complete(RadioNetwork(**self.kw).start())
                self.state = self.net.describe()
            except Exception as e:  # pragma: no cover - reported below
                err.append(e)
            ready.set()
            if not err:
                self.loop.run_forever()
                self.net.close()
            self.loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self.state

    def call(self, fn, *args, timeout=10):
        """Run fn(*args) in the loop thread and return its result."""
        fut = concurrent.futures.Future()

        def run():
            try:
                fut.set_result(fn(*args))
            except Exception as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def command(self, req):
        return self.call(self.net.command, req)

    def stop(self):
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
