#!/usr/bin/env node
// An emulated Raspberry Pi Pico (rp2040js) running stock MicroPython, driven by a
// host process over JSON lines (sim/pico/driver.py is that host).
//
//   node emu.mjs --image RPI_PICO.uf2 [--flash F] [--persist F] [--uart0 tcp:HOST:PORT]
//                [--max-speed X] [--mark-pin 22]
//
// stdin, one JSON object a line:
//   {"op":"exec","id":N,"code":"..."}  run code through the raw REPL; output streams as
//                                      {"ev":"out","id":N,"data":...}, then
//                                      {"ev":"result","id":N,"err":"...","cycles":...}
//   {"op":"dump","id":N,"path":F}      write the whole 2 MiB flash to F ({"ev":"dumped"})
//   {"op":"interrupt"}                 Ctrl-C on the console
//   {"op":"quit"}
// stdout, one JSON object a line: {"ev":"console","data":...} (what the firmware prints
// outside a raw-REPL job: boot, main.py), {"ev":"prompt"} (the friendly REPL is up),
// {"ev":"span","n":..,"cycles":..} (GPIO --mark-pin high..low), {"ev":"uart0",...}.
// Every event carries "cycles": emulated time in 125 MHz CPU cycles.
//
// What the emulator lacks and this file adds (see sim/pico/README.md):
// - flash writes: rp2040js does not emulate QSPI programming, so the bootrom's
//   flash_range_erase/flash_range_program are done here (littlefs2 works, files persist);
// - the USB host NAKs an OUT poll until it has data (stock rp2040js answers every poll
//   with a zero-length packet: an interrupt storm that inflates timings ~60 %);
// - UART TX interrupts are edge-like as on the PL011 (stock: re-raised forever);
// - UART0 <-> TCP client (the simulator's emulated XBee), paced at the baud rate in
//   emulated time both ways;
// - --max-speed X: emulated time never runs more than X times ahead of wall time
//   (idle sleeps are otherwise skipped and firmware timeouts fire before a host answers).
import fs from 'fs';
import net from 'net';
import readline from 'readline';
import { decodeBlock } from 'uf2';
import { Simulator, USBCDC, ConsoleLogger, LogLevel, GPIOPinState } from 'rp2040js';
import { bootromB1 } from './bootrom.mjs';

function parseArgs(argv) {
  const a = { 'max-speed': '0', 'mark-pin': '22' };
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) throw new Error('bad argument ' + argv[i]);
    a[argv[i].slice(2)] = argv[++i];
  }
  return a;
}
const args = parseArgs(process.argv.slice(2));
const FLASH_START = 0x10000000;
const FLASH_SIZE = 2 * 1024 * 1024;
const CYCLE_NANOS = 8; // rp2040js: 125 MHz, 8 ns a cycle

const simulator = new Simulator();
const mcu = simulator.rp2040;
const clock = simulator.clock;
const core = mcu.core;
mcu.loadBootrom(bootromB1);
mcu.logger = new ConsoleLogger(LogLevel.Error);
const cycles = () => Math.round(clock.nanos / CYCLE_NANOS);

function emit(obj) {
  obj.cycles = cycles();
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---- flash: the .uf2, then an optional whole-flash snapshot (files deployed earlier) ----
if (args.flash && fs.existsSync(args.flash)) {
  mcu.flash.set(fs.readFileSync(args.flash).subarray(0, FLASH_SIZE), 0);
}
if (args.image) {
  const data = fs.readFileSync(args.image);
  for (let off = 0; off + 512 <= data.length; off += 512) {
    const { flashAddress, payload } = decodeBlock(new Uint8Array(data.subarray(off, off + 512)));
    mcu.flash.set(payload, flashAddress - FLASH_START);
  }
}

// ---- bootrom flash functions done in JS ----
// RP2040 datasheet 2.8.3: the bootrom's function table (16-bit pointer at 0x14) holds
// (two-char code, address) pairs.  Typical W25Q16JV times are charged to the clock.
const romHooks = new Map();
{
  const rom16 = (addr) => (bootromB1[addr >>> 2] >>> ((addr & 2) * 8)) & 0xffff;
  const code = (s) => s.charCodeAt(0) | (s.charCodeAt(1) << 8);
  const fnAt = {};
  for (let p = rom16(0x14); rom16(p); p += 4) fnAt[rom16(p)] = rom16(p + 2) & ~1;
  const read8 = (addr) => mcu.readUint8(addr >>> 0);
  // each changing hook takes `part` (0..1]: the share of its bytes done (a torn
  // operation when a power cut hits it, --cut)
  const erase = (part) => {
    // flash_range_erase(addr, count, block_size, block_cmd)
    const off = core.registers[0] >>> 0, n = core.registers[1] >>> 0;
    mcu.flash.fill(0xff, off, Math.min(off + Math.floor(n * part), FLASH_SIZE));
    return 45e6 * Math.ceil(n / 4096); // 45 ms per 4 KiB sector
  };
  const program = (part) => {
    // flash_range_program(addr, data, count): NOR flash only clears bits
    const off = core.registers[0] >>> 0, src = core.registers[1] >>> 0, n = core.registers[2] >>> 0;
    const m = Math.floor(n * part);
    for (let i = 0; i < m && off + i < FLASH_SIZE; i++) mcu.flash[off + i] &= read8(src + i);
    return 0.4e6 * Math.ceil(n / 256); // 0.4 ms per 256-byte page
  };
  erase.changes = program.changes = true;
  romHooks.set(fnAt[code('RE')], erase);
  romHooks.set(fnAt[code('RP')], program);
  for (const c of ['IF', 'EX', 'FC', 'CX']) romHooks.set(fnAt[code(c)], () => 1000);
}
// --cut ops:K[:T]  a power cut right before the K-th flash erase/program (0-based) counted
// from the arm point (--cut-from boot: the start; mark: the first rising edge of the mark
// pin); T in [0, 1): that operation is torn, done for its first T of bytes.  The flash as
// the cut left it goes to --persist, then the process ends ({"ev":"cut"}).  Only flash
// survives a cut, and it changes only in these operations: a cut at any cycle is a cut
// before the next of them, so K covers every outcome.
const started = Date.now();
let flashOps = 0;
const cutSpec = args.cut ? args.cut.split(':') : null;
const cutAt = cutSpec ? parseInt(cutSpec[1], 10) : -1;
const cutTorn = cutSpec && cutSpec[2] !== undefined ? Number(cutSpec[2]) : 0;
let armedAt = cutSpec && (args['cut-from'] || 'boot') === 'boot' ? 0 : null;
function powerCut(hook) {
  if (cutTorn > 0) hook(cutTorn);
  flashDirty = true;
  saveFlash();
  finished = true;
  emit({ ev: 'cut', op: cutAt, torn: cutTorn, flash_ops: flashOps,
    busy_cycles: Math.round(busyNanos / CYCLE_NANOS), idle_cycles: Math.round(idleNanos / CYCLE_NANOS),
    wall_ms: Date.now() - started });
  process.stdout.write('', () => process.exit(0));
}
// --persist F: the flash is written back to F after the firmware changed it (a device's
// own files, e.g. paired.json and the boot counter, survive a power cycle, as on a board)
let flashDirty = false;
let lastFlashWrite = 0;
function saveFlash() {
  if (!flashDirty || !args.persist) return;
  flashDirty = false;
  fs.writeFileSync(args.persist + '.tmp', mcu.flash.subarray(0, FLASH_SIZE));
  fs.renameSync(args.persist + '.tmp', args.persist);
}
function romCall(pc) {
  const hook = romHooks.get(pc);
  if (!hook) return 0;
  if (hook.changes) {
    if (armedAt !== null && flashOps - armedAt === cutAt) {
      powerCut(hook);
      return 0;
    }
    flashOps++;
  }
  const nanos = hook(1);
  flashDirty = true;
  lastFlashWrite = Date.now();
  core.PC = core.LR & ~1; // return to the caller (bx lr)
  return nanos;
}

// ---- pulls: a pad with its pull-up (pull-down) enabled and nothing attached reads high
// (low); stock rp2040js reads every undriven input low, so a pulled-up button reads as held
for (const pin of mcu.gpio) {
  pin.addListener((state) => {
    if (state === GPIOPinState.InputPullUp) pin.setInputValue(true);
    else if (state === GPIOPinState.InputPullDown) pin.setInputValue(false);
  });
}

// ---- cycle markers on a GPIO (device code: Pin(22) high around a measured region) ----
let spanStart = null;
let spanCount = 0;
mcu.gpio[parseInt(args['mark-pin'], 10)].addListener((state) => {
  if (state === 1 && armedAt === null && cutSpec) armedAt = flashOps; // --cut-from mark
  if (state === 1) spanStart = { c: cycles(), core: core.cycles, ops: flashOps };
  else if (spanStart !== null) {
    spanCount++;
    emit({ ev: 'span', n: spanCount, span_cycles: cycles() - spanStart.c,
      span_core_cycles: core.cycles - spanStart.core, span_flash_ops: flashOps - spanStart.ops });
    spanStart = null;
  }
});

// ---- UARTs: TX interrupt edge-like (rp2040js re-raises it on every check) ----
const UARTDR = 0x0, UARTTXINTR = 1 << 5;
for (const u of mcu.uart) {
  u.checkInterrupts = function () {
    this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
  };
  const write = u.writeUint32.bind(u);
  u.writeUint32 = (offset, value) => {
    write(offset, value);
    if (offset === UARTDR) {
      u.interruptStatus |= UARTTXINTR;
      u.checkInterrupts();
    }
  };
}

// ---- UART0 <-> TCP (the emulated XBee module's serial port) ----
const uart = mcu.uart[0];
// before the firmware sets the divider, baudRate is Infinity: a byte time of 0 would make
// rxAlarm fire forever at one instant (bytes from the module before UART0 is configured)
const charNanos = () => (1e9 * 10) / (uart.baudRate > 0 && uart.baudRate < Infinity ? uart.baudRate : 9600);
const rxQueue = [];
const txQueue = [];
let txOut = [];
let sock = null;
const rxAlarm = clock.createAlarm(() => {
  if (rxQueue.length && !uart.rxFIFO.full) uart.feedByte(rxQueue.shift());
  if (rxQueue.length) rxAlarm.schedule(charNanos());
});
const txAlarm = clock.createAlarm(() => {
  txOut.push(txQueue.shift());
  if (txQueue.length) txAlarm.schedule(charNanos());
});
uart.onByte = (b) => {
  txQueue.push(b);
  if (txQueue.length === 1) txAlarm.schedule(charNanos());
};
function flushUart() {
  if (!txOut.length) return;
  if (sock) sock.write(Buffer.from(txOut));
  txOut = [];
}
if (args.uart0 && args.uart0.startsWith('tcp:')) {
  const [host, port] = args.uart0.slice(4).split(':');
  const connect = () => {
    const s = net.connect(parseInt(port, 10), host);
    s.setNoDelay(true);
    s.on('connect', () => { sock = s; emit({ ev: 'uart0', state: 'connected' }); });
    s.on('data', (buf) => {
      const idle = rxQueue.length === 0;
      for (const b of buf) rxQueue.push(b);
      if (idle) rxAlarm.schedule(charNanos());
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (sock === s) sock = null;
      if (!finished) setTimeout(connect, 200);
    });
  };
  connect();
}

// ---- USB CDC: the console ----
const cdc = new USBCDC(mcu.usbCtrl);
const hostQueue = [];
let rx = ''; // console text not yet consumed
cdc.onDeviceConnected = () => send('\r\n');
cdc.onSerialData = (value) => { rx += Buffer.from(value).toString('latin1'); };
const stockRead = mcu.usbCtrl.onEndpointRead;
let pendingRead = null;
mcu.usbCtrl.onEndpointRead = (endpoint, size) => {
  if (endpoint === cdc.outEndpoint && cdc.txFIFO.empty && !hostQueue.length) {
    pendingRead = { endpoint, size }; // NAK until there is data, as a real host does
    return;
  }
  stockRead(endpoint, size);
};
function send(s) {
  for (const b of Buffer.from(s, 'latin1')) hostQueue.push(b);
}
function pumpUsb() {
  let room = cdc.txFIFO.size - cdc.txFIFO.itemCount;
  while (room-- > 0 && hostQueue.length) cdc.sendSerialByte(hostQueue.shift());
  if (pendingRead && !cdc.txFIFO.empty) {
    const r = pendingRead;
    pendingRead = null;
    stockRead(r.endpoint, r.size);
  }
}

// ---- console state machine: free text, raw REPL jobs ----
// mode: 'free' (console text streams out; '>>> ' = prompt), 'enter-raw', 'raw' (idle in
// the raw REPL), 'run' (a job: "OK" <out> \x04 <err> \x04 ">")
let mode = 'free';
let rawReady = false;
let promptSeen = false;
const jobs = [];
let job = null;
function stepConsole() {
  if (mode === 'free') {
    if (!rx) return;
    const i = rx.lastIndexOf('\n');
    const promptAt = rx.indexOf('>>> ');
    if (promptAt >= 0) {
      const text = rx.slice(0, promptAt);
      if (text) emit({ ev: 'console', data: text });
      rx = rx.slice(promptAt + 4);
      promptSeen = true;
      emit({ ev: 'prompt' });
      if (jobs.length) startJob();
      return;
    }
    if (i >= 0) {
      emit({ ev: 'console', data: rx.slice(0, i + 1) });
      rx = rx.slice(i + 1);
    }
  } else if (mode === 'enter-raw') {
    const k = rx.indexOf('raw REPL; CTRL-B to exit\r\n>');
    if (k >= 0) {
      rx = rx.slice(k + 27);
      rawReady = true;
      mode = 'raw';
      startJob();
    }
  } else if (mode === 'run') {
    if (!job.ok) {
      if (rx.length < 2) return;
      if (!rx.startsWith('OK')) {
        // the raw REPL refused the code (e.g. it never got it whole)
        finishJob('raw REPL answered ' + JSON.stringify(rx.slice(0, 80)));
        return;
      }
      job.ok = true;
      rx = rx.slice(2);
    }
    if (!job.outDone) {
      const k = rx.indexOf('\x04');
      const text = k >= 0 ? rx.slice(0, k) : rx;
      if (text) emit({ ev: 'out', id: job.id, data: text });
      rx = k >= 0 ? rx.slice(k + 1) : '';
      if (k >= 0) job.outDone = true;
    }
    if (job.outDone) {
      const k = rx.indexOf('\x04');
      if (k >= 0 && rx.length > k + 1) {
        const err = rx.slice(0, k);
        rx = rx.slice(k + 2); // "\x04>"
        finishJob(err);
      }
    }
  }
}
function startJob() {
  if (job || !jobs.length) return;
  if (!rawReady) {
    mode = 'enter-raw';
    send('\r\x03\x03\x01');
    return;
  }
  job = jobs.shift();
  job.t0 = { c: cycles(), core: core.cycles, nanos: clock.nanos, wall: Date.now() };
  mode = 'run';
  send(job.code + '\x04');
}
function finishJob(err) {
  const t0 = job.t0;
  emit({ ev: 'result', id: job.id, err, job_cycles: cycles() - t0.c,
    job_core_cycles: core.cycles - t0.core, emu_ns: clock.nanos - t0.nanos,
    wall_ms: Date.now() - t0.wall });
  job = null;
  mode = 'raw';
  if (jobs.length) startJob();
}

// ---- host commands ----
let finished = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.op === 'exec') {
    jobs.push({ id: cmd.id, code: cmd.code });
    if (mode !== 'free' || promptSeen) startJob();
  } else if (cmd.op === 'interrupt') {
    send('\x03');
  } else if (cmd.op === 'dump') {
    fs.writeFileSync(cmd.path, mcu.flash.subarray(0, FLASH_SIZE));
    emit({ ev: 'dumped', id: cmd.id, path: cmd.path });
  } else if (cmd.op === 'debug') {
    emit({ ev: 'debug', pc: (core.PC >>> 0).toString(16), lr: (core.LR >>> 0).toString(16),
      waiting: core.waiting, mode, busy_ms: busyNanos / 1e6, idle_ms: idleNanos / 1e6, rx: rx.slice(-200), pending: !!pendingRead, hostq: hostQueue.length });
  } else if (cmd.op === 'quit') {
    quit(0);
  }
});
rl.on('close', () => quit(0));
process.on('SIGTERM', () => quit(0)); // a fleet stopping its devices: the exit figures too
function quit(code) {
  if (finished) return;
  finished = true;
  flushUart();
  saveFlash();
  if (sock) sock.destroy();
  // what this process cost: emulated time with the CPU busy and idle (WFI/WFE)
  emit({ ev: 'bye', busy_cycles: Math.round(busyNanos / CYCLE_NANOS),
    idle_cycles: Math.round(idleNanos / CYCLE_NANOS), flash_ops: flashOps,
    wall_ms: Date.now() - started });
  process.stdout.write('', () => process.exit(code));
}

// ---- the run loop ----
// --max-speed X: emulated time may run ahead of wall time by at most X times the wall time
// since the reference point; when the emulator lags (the CPU is busy and the host slower
// than 125 MHz) the reference moves up, so lag is never made up later by racing through
// an idle wait (that would fire the firmware's timeouts early).
const maxSpeed = Number(args['max-speed']);
let ref = { wall: Date.now(), nanos: 0 };
let busyNanos = 0;
let idleNanos = 0;
function allowedNanos() {
  const now = Date.now();
  const allowed = ref.nanos + (now - ref.wall) * 1e6 * maxSpeed;
  if (allowed - clock.nanos > 20e6) ref = { wall: now, nanos: clock.nanos + 20e6 }; // lagging
  return ref.nanos + (now - ref.wall) * 1e6 * maxSpeed;
}
function run() {
  if (finished) return;
  const limit = maxSpeed > 0 ? allowedNanos() : Infinity;
  for (let i = 0, k = 0; i < 200000; k++) {
    if (core.waiting) {
      let n = clock.nanosToNextAlarm;
      if (n <= 0) n = 1e6; // nothing scheduled: idle in 1 ms steps (host input wakes it)
      if (clock.nanos + n > limit) {
        const d = Math.floor(limit - clock.nanos);
        if (d > 0) { clock.tick(d); idleNanos += d; } // up to the cap, no alarm due yet
        break;
      }
      clock.tick(n);
      idleNanos += n;
      i += 64;
    } else {
      const pc = core.PC;
      if (pc < 0x4000 && romHooks.has(pc)) {
        clock.tick(romCall(pc));
        if (finished) return; // a power cut
        i += 1000;
        continue;
      }
      const n = core.executeInstruction() * CYCLE_NANOS;
      clock.tick(n);
      busyNanos += n;
      i++;
    }
    if ((k & 1023) === 0) {
      pumpUsb();
      if (rx) stepConsole();
    }
  }
  pumpUsb();
  stepConsole();
  flushUart();
  if (flashDirty && Date.now() - lastFlashWrite > 300) saveFlash(); // after a write burst
  if (finished) return;
  if (maxSpeed > 0 && core.waiting && clock.nanos + Math.max(clock.nanosToNextAlarm, CYCLE_NANOS) > limit) {
    setTimeout(run, Math.min(20, Math.max(1, (clock.nanos + clock.nanosToNextAlarm - limit) / 1e6)));
  } else setImmediate(run);
}
core.PC = FLASH_START; // boot2 at the start of flash, as the bootrom would jump there
run();
