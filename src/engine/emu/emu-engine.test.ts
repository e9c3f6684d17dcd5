import { test } from "node:test";
import assert from "node:assert/strict";
import { EmuEngine } from "./emu-engine.js";
import { PAGE_SIZE, type EngineEvent } from "../engine.js";
import { EngineError } from "../errors.js";
import { guestNow, setGuestNow } from "./guest-clock.js";
import { PROBE_COMMAND, PROBE_LOAD_ADDRESS, PROBE_PAGE_BASE, probeGuestImage } from "../testing/probe-guest.js";
import { monotonicMs } from "../../sys/clock.js";

const MEMORY = 16 * 2 ** 20;

/** Resolves when the console has printed `marker` (a count of occurrences). */
function consoleWaiter(engine: EmuEngine) {
  let text = "";
  const waiters: { marker: string; count: number; resolve: () => void }[] = [];
  engine.onConsoleOutput((bytes) => {
    text += Buffer.from(bytes).toString("latin1");
    for (const w of [...waiters]) {
      if (text.split(w.marker).length - 1 >= w.count) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  return (marker: string, count: number, timeoutMs = 20_000) =>
    new Promise<void>((resolve, reject) => {
      if (text.split(marker).length - 1 >= count) return resolve();
      const timer = setTimeout(() => reject(new Error(`no ${count}x "${marker}" on console within ${timeoutMs} ms; got ${JSON.stringify(text)}`)), timeoutMs);
      waiters.push({ marker, count, resolve: () => { clearTimeout(timer); resolve(); } });
    });
}

async function bootProbe(): Promise<{ engine: EmuEngine; waitFor: ReturnType<typeof consoleWaiter> }> {
  const engine = new EmuEngine({ memoryBytes: MEMORY, kernel: probeGuestImage(), kernelFormat: "multiboot", cmdline: "", disks: [] });
  const waitFor = consoleWaiter(engine);
  await engine.start();
  await waitFor("R", 1);
  return { engine, waitFor };
}

test("emu: a page written by the guest is reported exactly once", async () => {
  const { engine, waitFor } = await bootProbe();
  try {
    await engine.pause();
    const first = Array.from(engine.takeDirtyPages());
    assert.ok(first.includes(PROBE_LOAD_ADDRESS / PAGE_SIZE), "the loaded image's page is dirty after boot");
    assert.deepEqual(Array.from(engine.takeDirtyPages()), [], "nothing changes while paused");

    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(0x61));
    await waitFor("K", 1);
    await engine.pause();
    assert.deepEqual(Array.from(engine.takeDirtyPages()), [PROBE_PAGE_BASE + 0x61]);
    assert.deepEqual(Array.from(engine.takeDirtyPages()), [], "reported once only");
    assert.equal(engine.ram()[(PROBE_PAGE_BASE + 0x61) * PAGE_SIZE], 1);

    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(0x05, 0x61));
    await waitFor("K", 3);
    await engine.pause();
    assert.deepEqual(Array.from(engine.takeDirtyPages()), [PROBE_PAGE_BASE + 0x05, PROBE_PAGE_BASE + 0x61]);
  } finally {
    await engine.destroy();
  }
});

test("emu: a page written by our own device code is reported exactly once", async () => {
  const { engine } = await bootProbe();
  try {
    await engine.pause();
    engine.takeDirtyPages();
    const pfn = 0x500;
    engine.ram()[pfn * PAGE_SIZE + 17] = 0xab;
    engine.markDirty(0x600); // written with the same bytes it had: still reported
    assert.deepEqual(Array.from(engine.takeDirtyPages()), [pfn, 0x600]);
    assert.deepEqual(Array.from(engine.takeDirtyPages()), []);
    assert.throws(() => engine.markDirty(MEMORY / PAGE_SIZE), /outside guest RAM/);
  } finally {
    await engine.destroy();
  }
});

test("emu: saveState excludes RAM and loadState keeps RAM and resumes the guest", async () => {
  const { engine, waitFor } = await bootProbe();
  try {
    await engine.pause();
    const state = await engine.saveState();
    assert.ok(state.length < MEMORY / 4, `state of ${state.length} bytes holds no RAM`);
    const marker = (PROBE_PAGE_BASE + 0x10) * PAGE_SIZE;
    engine.ram()[marker] = 7;
    await engine.loadState(state);
    assert.equal(engine.ram()[marker], 7, "loadState leaves RAM alone");
    assert.equal(engine.ram()[PROBE_LOAD_ADDRESS], 0x02, "the image is still in RAM");
    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(0x10));
    await waitFor("K", 1);
    await engine.pause();
    assert.equal(engine.ram()[marker], 8, "the guest ran on from the loaded state");
    await assert.rejects(async () => { await engine.resume(); await engine.loadState(state); }, /paused/);
  } finally {
    await engine.destroy();
  }
});

test("emu: bad machine specs are refused before anything runs", () => {
  assert.throws(() => new EmuEngine({ memoryBytes: 1000, kernel: new Uint8Array(1), cmdline: "", disks: [] }), /multiple of 4096/);
  assert.throws(
    () => new EmuEngine({ memoryBytes: 64 * 2 ** 20, kernel: new Uint8Array(1), initrd: new Uint8Array(2 ** 20), cmdline: "", disks: [] }),
    /too small.*initrd/,
  );
});

/** Every engine event, in order, and a wait for the next one. */
function eventRecorder(engine: EmuEngine) {
  const events: EngineEvent[] = [];
  let wake: (() => void) | undefined;
  engine.onEvent((e) => {
    events.push(e);
    wake?.();
  });
  const next = async (timeoutMs = 10_000): Promise<EngineEvent> => {
    const deadline = monotonicMs() + timeoutMs;
    const seen = events.length;
    while (events.length === seen) {
      if (monotonicMs() > deadline) throw new Error(`no engine event within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    const e = events[seen];
    if (!e) throw new Error("internal: event recorder");
    return e;
  };
  return { events, next };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isFault = (e: unknown) => e instanceof EngineError && e.code === "FAULT";

test("emu: a guest that halts with interrupts off raises poweroff, once, and runs no more", async () => {
  const { engine, waitFor } = await bootProbe();
  const { events, next } = eventRecorder(engine);
  try {
    engine.sendConsoleInput(Uint8Array.of(0x30));
    await waitFor("K", 1);
    engine.sendConsoleInput(Uint8Array.of(PROBE_COMMAND.HALT));
    assert.deepEqual(await next(), { kind: "poweroff" });
    engine.sendConsoleInput(Uint8Array.of(0x30));
    await sleep(300);
    assert.equal(engine.ram()[(PROBE_PAGE_BASE + 0x30) * PAGE_SIZE], 1, "the halted guest took no more input");
    assert.deepEqual(events, [{ kind: "poweroff" }], "one event");
    assert.equal(engine.running, true, "a halt is the guest's, not the engine's: pause and resume work as before");
    await engine.pause();
    await engine.resume();
  } finally {
    await engine.destroy();
  }
});

test("emu: a reset request raises reboot and stops the vCPU there; a loaded state runs again", async () => {
  const { engine, waitFor } = await bootProbe();
  const { events, next } = eventRecorder(engine);
  try {
    await engine.pause();
    const before = await engine.saveState();
    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(PROBE_COMMAND.RESET));
    assert.deepEqual(await next(), { kind: "reboot" });
    // Not reset by v86 (which would reload the BIOS and lose the kernel) and not running on: the next byte gets no answer.
    engine.sendConsoleInput(Uint8Array.of(0x31));
    await sleep(300);
    assert.equal(engine.ram()[(PROBE_PAGE_BASE + 0x31) * PAGE_SIZE], 0, "no guest instruction ran after the reset request");
    assert.deepEqual(events, [{ kind: "reboot" }]);
    // A checkpoint's state replaces the stopped vCPU's (a COLO secondary's SVM): the guest runs on.
    await engine.pause();
    await engine.loadState(before);
    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(0x32));
    await waitFor("K", 1);
    await engine.pause();
    assert.equal(engine.ram()[(PROBE_PAGE_BASE + 0x32) * PAGE_SIZE], 1);
  } finally {
    await engine.destroy();
  }
});

test("emu: v86 failing (a triple fault) raises fault; the engine refuses to run on, answers saveState, destroys", async () => {
  const { engine } = await bootProbe();
  const { events, next } = eventRecorder(engine);
  try {
    engine.sendConsoleInput(Uint8Array.of(PROBE_COMMAND.FAULT));
    const e = await next();
    assert.equal(e.kind, "fault");
    assert.match(e.kind === "fault" ? e.message : "", /^v86 failed while running the guest \(RuntimeError: unreachable\)/);
    assert.equal(engine.running, false);
    await engine.pause(); // resolves: nothing runs
    await assert.rejects(engine.resume(), isFault);
    assert.ok((await engine.saveState()).length > 0, "the failed machine's state can still be saved");
    await assert.rejects(engine.loadState(new Uint8Array(16)), isFault);
    await sleep(200);
    assert.equal(events.length, 1, "one event");
  } finally {
    await engine.destroy();
  }
});

// Last in this file: it moves the guest clock far ahead.
test("emu: v86 reads the guest clock; the process's performance.now stays the host's, whatever loadState sets", async () => {
  const hostPerformanceNow = Object.getPrototypeOf(performance) as { now: () => number };
  assert.equal(performance.now, hostPerformanceNow.now, "importing the engine left the host's performance.now in place");
  const { engine, waitFor } = await bootProbe();
  try {
    setGuestNow(1e9);
    const [perf0, host0, guest0] = [performance.now(), monotonicMs(), engine.v86Now()];
    assert.ok(Math.abs(guest0 - 1e9) < 1000, `v86 reads the guest clock: ${guest0}`);
    assert.ok(Math.abs(guestNow() - guest0) < 1000);
    assert.ok(perf0 < 1e8 && Math.abs(perf0 - process.uptime() * 1000) < 1000, `performance.now ${perf0} is the process's own, not the guest's`);
    await sleep(100);
    const [perf1, host1, guest1] = [performance.now(), monotonicMs(), engine.v86Now()];
    assert.ok(Math.abs(perf1 - perf0 - (host1 - host0)) < 20, "performance.now follows the host's monotonic clock");
    assert.ok(Math.abs(guest1 - guest0 - (host1 - host0)) < 20, "the guest clock runs at the host's pace from where it was set");
    // A state saved now carries v86's time, and the guest still runs (its timers are v86's).
    await engine.pause();
    const state = await engine.saveState();
    const saved = new DataView(state.buffer, state.byteOffset, 8).getFloat64(0, true);
    assert.ok(saved >= guest1 && saved - guest1 < 1000, `saved guest clock ${saved}`);
    await engine.loadState(state);
    await engine.resume();
    engine.sendConsoleInput(Uint8Array.of(0x40));
    await waitFor("K", 1);
  } finally {
    await engine.destroy();
  }
});
