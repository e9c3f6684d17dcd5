import { test } from "node:test";
import assert from "node:assert/strict";
import { EmuEngine } from "../engine/emu/emu-engine.js";
import { PAGE_SIZE } from "../engine/engine.js";
import { PROBE_PAGE_BASE, probeGuestImage } from "../engine/testing/probe-guest.js";
import { machineHeader } from "./memory-header.js";
import { StreamReader } from "./reader.js";
import { MemorySink } from "./sink.js";
import { StreamWriter } from "./writer.js";
import { receiveMachine, sendMachine, type TransferProgress } from "./machine-transfer.js";
import { StreamError } from "./errors.js";

const MIB = 2 ** 20;

function probe(memoryBytes = 16 * MIB): EmuEngine {
  return new EmuEngine({ memoryBytes, kernel: probeGuestImage(), kernelFormat: "multiboot", cmdline: "", disks: [] });
}

function waitConsole(engine: EmuEngine, marker: string): Promise<void> {
  return new Promise((resolve) => {
    let text = "";
    engine.onConsoleOutput((b) => {
      text += Buffer.from(b).toString("latin1");
      if (text.includes(marker)) resolve();
    });
  });
}

test("live transfer: pre-copy rounds carry pages written meanwhile; the destination runs on", async () => {
  const src = probe();
  const booted = waitConsole(src, "R");
  await src.start();
  await booted;
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", src.memoryBytes) });
  const rounds: TransferProgress[] = [];
  let paused = false;
  const marker = 0x300 * PAGE_SIZE;
  const result = await sendMachine(src, writer, {
    live: true,
    finalRoundPages: 0,
    pause: async () => {
      await src.pause();
      paused = true;
    },
    onProgress: (p) => {
      rounds.push(p);
      // Our own "device" writes a page during round 0: it must go again.
      if (p.round === 0) src.ram()[marker] = 0x5a;
    },
  });
  await writer.writeEnd();
  assert.ok(paused, "paused for the final round");
  assert.ok(result.rounds >= 2, `rounds: ${result.rounds}`);
  assert.equal(rounds[0]?.pages, src.pageCount, "round 0 sends every page");
  assert.ok((rounds[0]?.zeroPages ?? 0) > src.pageCount / 2, "zero pages sent as a type");
  assert.ok(sink.length < src.memoryBytes / 4, `stream of ${sink.length} bytes for ${src.memoryBytes} of RAM`);

  const dst = probe();
  await dst.start({ paused: true });
  const reader = new StreamReader(sink.bytes(), { requireEndOfSource: true });
  const received = await receiveMachine(dst, reader);
  assert.equal((await reader.next())?.kind, "end");
  assert.equal(received.pages, result.pages);
  assert.ok(Buffer.from(dst.ram()).equals(Buffer.from(src.ram())), "RAM identical");
  assert.equal(dst.ram()[marker], 0x5a);

  const acked = waitConsole(dst, "K");
  await dst.resume();
  dst.sendConsoleInput(Uint8Array.of(0x21));
  await acked;
  await dst.pause();
  assert.equal(dst.ram()[(PROBE_PAGE_BASE + 0x21) * PAGE_SIZE], 1, "the destination guest ran the code it received");
  await src.destroy();
  await dst.destroy();
});

test("receive refuses a machine of another memory size before touching RAM", async () => {
  const src = probe(16 * MIB);
  await src.start({ paused: true });
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", src.memoryBytes) });
  await sendMachine(src, writer, { live: false, pause: async () => {} });
  await writer.writeEnd();
  const dst = probe(32 * MIB);
  await dst.start({ paused: true });
  await assert.rejects(
    receiveMachine(dst, new StreamReader(sink.bytes())),
    (e: unknown) => e instanceof StreamError && e.code === "MISMATCH" && /16 MiB.*32 MiB/.test(e.message),
  );
  await src.destroy();
  await dst.destroy();
});
