/**
 * `colo stream verify FILE` (after Xen's verify-stream-v2): checks a save
 * image, or a captured migration or replication stream (COLO_CAPTURE_DIR),
 * against docs/specs/stream.md with the receivers' own reader
 * (src/state/verify.ts), and prints a summary. A bad stream is one line
 * naming the record, its offset and the rule broken, exit 1; a file that
 * cannot be read, exit 2.
 */
import { createReadStream, openSync } from "node:fs";
import type { Readable } from "node:stream";
import { decodeQemuState } from "../engine/qemu/qemu-state.js";
import { EMU_STATE_FORMAT, QEMU_STATE_FORMAT, verifyStream, type EngineState, type StreamSummary, type VerifyFailure, type VerifyResult } from "../state/index.js";
import { CliError } from "./output.js";

const READ_CHUNK = 1 << 20;
const MIB = 2 ** 20;

export interface StreamVerifyOptions {
  json?: boolean;
  backChannel?: boolean;
}

/** What an engine state's blob names, beyond the record (the stream format does not look inside). */
export function describeEngineState(state: EngineState): string | undefined {
  if (state.engineId === "qemu" && state.formatVersion === QEMU_STATE_FORMAT.CQST_DEVICE_STATE) {
    try {
      const { header } = decodeQemuState(state.blob, "QEMU_STATE");
      return `qemu ${header.qemuVersion} ${header.machine}, ${header.memoryBytes / MIB} MiB`;
    } catch (err) {
      return `not a qemu engine state: ${(err as Error).message}`;
    }
  }
  if (state.engineId === "emu" && state.formatVersion === EMU_STATE_FORMAT.V86_SAVE_STATE_WITH_CLOCK && state.blob.length >= 8) {
    const clock = new DataView(state.blob.buffer, state.blob.byteOffset, 8).getFloat64(0, true);
    if (Number.isFinite(clock)) return `v86 state, guest clock ${(clock / 1000).toFixed(3)} s`;
  }
  return undefined;
}

function open(file: string): Readable {
  if (file === "-") return process.stdin;
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    throw new CliError(`${file}: cannot open: ${(err as Error).message}`, 2);
  }
  return createReadStream(file, { fd, highWaterMark: READ_CHUNK });
}

export async function streamVerify(file: string, o: StreamVerifyOptions): Promise<void> {
  const source = open(file);
  let result: VerifyResult;
  try {
    result = await verifyStream(source, { channel: o.backChannel ? "back-channel" : "image", describeEngineState });
  } finally {
    if (source !== process.stdin) source.destroy();
  }
  const name = file === "-" ? "stdin" : file;
  if (!result.ok) {
    const f = result.failure;
    if (o.json) process.stdout.write(JSON.stringify({ file: name, valid: false, error: errorJson(f), summary: result.summary }, null, 2) + "\n");
    if (f.code === "IO") throw new CliError(`${name}: cannot read: ${f.detail}`, 2);
    throw new CliError(`${name}: ${f.line}`, 1);
  }
  if (o.json) process.stdout.write(JSON.stringify({ file: name, valid: true, ...result.summary }, null, 2) + "\n");
  else process.stdout.write(humanSummary(name, result.summary).join("\n") + "\n");
}

function errorJson(f: VerifyFailure): Record<string, unknown> {
  return {
    code: f.code,
    record: f.record,
    layer: f.layer,
    name: f.name,
    type: f.type,
    what: f.what,
    offset: f.offset,
    endedAt: f.endedAt,
    section: f.section,
    detail: f.detail,
    message: f.line,
  };
}

function size(bytes: number): string {
  return bytes >= MIB ? `${(bytes / MIB).toFixed(1)} MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} bytes`;
}

function controls(s: StreamSummary): string {
  return Object.entries(s.controls)
    .map(([c, n]) => `${c} ${n}`)
    .join(", ");
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

const KIND_NAMES: Record<StreamSummary["kind"], string> = {
  save: "save image",
  migration: "migration stream",
  replication: "COLO replication stream (forward)",
  "back-channel": "COLO back channel",
};

/** A few lines: what the stream is, its machine and engine, its pages, its records by type. */
export function humanSummary(file: string, s: StreamSummary): string[] {
  const total = s.bytes >= 1024 ? `${s.bytes} bytes (${size(s.bytes)})` : `${s.bytes} bytes`;
  const lines = [`${file}: valid colo stream, ${KIND_NAMES[s.kind]}: ${total}, ${plural(s.records, "record")}`];
  const m = s.machine;
  const memory = m === undefined ? "" : m.memoryBytes % MIB === 0 ? `${m.memoryBytes / MIB} MiB` : `${m.memoryBytes / 1024} KiB`;
  const machine = m ? `machine ${m.engine}, ${memory} (${m.pageCount} pages), ${plural(m.vcpuCount, "vCPU")}` : "no machine header";
  const parts = [machine];
  const st = s.engineState;
  if (st) parts.push(`engine state ${st.record} format ${st.formatVersion} (${size(st.bytes)}${st.count > 1 ? `, the last of ${st.count}` : ""}${st.info ? `; ${st.info}` : ""})`);
  if (s.engineCompat) parts.push(`ENGINE_COMPAT "${s.engineCompat.descriptor}"`);
  lines.push(parts.join("; "));
  const p = s.pages;
  const counts = [
    `pages: ${p.entries} in ${plural(p.records, "PAGE_DATA record")} (${p.normal} with contents, ${p.zero} zero)`,
    plural(s.memoryParts, "memory part"),
    plural(s.checkpoints, "checkpoint"),
    plural(s.precopyRounds, "pre-copy round"),
  ];
  if (s.replication) counts.push(`replication ${s.replication.mode}${s.replication.disks ? " with disks" : ""}`);
  if (s.vmConfig) counts.push(`VM_CONFIG ${s.vmConfig.path}`);
  lines.push(counts.join(", "));
  const layers = (["toolstack", "memory"] as const)
    .map((layer) => {
      const entries = Object.entries(s.types[layer]);
      const named = entries.map(([n, t]) => (n === "CHECKPOINT_STATE" && layer === "toolstack" ? `${n} ${t.count} (${controls(s)})` : `${n} ${t.count}`));
      return entries.length === 0 ? undefined : `${layer} ${named.join(", ")}`;
    })
    .filter((x) => x !== undefined);
  lines.push(`records: ${layers.join("; ")}`);
  return lines;
}
