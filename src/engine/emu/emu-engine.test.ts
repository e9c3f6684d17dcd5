import { test } from "node:test";
import assert from "node:assert/strict";
import { EmuEngine } from "./emu-engine.js";
import { PAGE_SIZE } from "../engine.js";
import { PROBE_LOAD_ADDRESS, PROBE_PAGE_BASE, probeGuestImage } from "../testing/probe-guest.js";

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
