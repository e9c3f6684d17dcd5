/**
 * Save files and migration streams of a running VM: the toolstack records
 * around the machine (VM_CONFIG first, END last), over a file or a socket.
 */
import { createReadStream, createWriteStream, renameSync, rmSync } from "node:fs";
import type { Readable } from "node:stream";
import { parseVmConfig, type VmConfig } from "../config/index.js";
import type { Engine } from "../engine/engine.js";
import { machineHeader, StreamReader, StreamWriter, writableSink, StreamError, type LinkTranslationLayers } from "../state/index.js";
import { receiveMachine, sendMachine, writeEngineCompat, type ReceiveResult, type SendOptions, type SendResult, type TransferProgress } from "../state/machine-transfer.js";

/** The configuration a VM was created from, as carried in VM_CONFIG records. */
export interface ConfigSource {
  path: string;
  text: string;
}

/**
 * Writes VM_CONFIG, ENGINE_COMPAT (what the receiver's engine must match:
 * it refuses before any page if it cannot load this engine's state), the
 * link translations of a VM that survived a failover (LINK_TRANSLATION,
 * migrations: its connections keep their numbers at the destination), the
 * machine, and END.
 */
export async function writeImage(engine: Engine, writer: StreamWriter, config: ConfigSource, opts: SendOptions, linkLayers?: LinkTranslationLayers): Promise<SendResult> {
  await writer.writeVmConfig(config);
  await writeEngineCompat(engine, writer);
  if (linkLayers !== undefined && linkLayers.length > 0) await writer.writeLinkTranslation(linkLayers);
  const result = await sendMachine(engine, writer, opts);
  await writer.writeEnd();
  await writer.flush();
  return result;
}

/** `colo save`: the paused machine to a file, written beside it and renamed into place when complete. */
export async function saveToFile(engine: Engine, path: string, config: ConfigSource): Promise<SendResult> {
  const tmp = `${path}.partial-${process.pid}`;
  const out = createWriteStream(tmp, { mode: 0o600 });
  try {
    const writer = new StreamWriter(writableSink(out), { machine: machineHeader(engine.id, engine.memoryBytes) });
    const result = await writeImage(engine, writer, config, { live: false, pause: async () => {} });
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    renameSync(tmp, path);
    return result;
  } catch (err) {
    out.destroy();
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** The first record of an image stream: the VM's configuration, parsed and validated. */
export async function readConfig(reader: StreamReader, where: string): Promise<{ config: VmConfig; source: ConfigSource }> {
  const first = await reader.next();
  if (!first || first.kind !== "vm-config") {
    throw new StreamError("OUT_OF_ORDER", undefined, `${where}: the stream does not start with the VM's configuration (VM_CONFIG)`);
  }
  const source = { path: first.config.path, text: first.config.text };
  return { config: parseVmConfig(source.text, source.path), source };
}

/**
 * Reads the rest of an image stream (after VM_CONFIG) into a paused engine,
 * through the toolstack END. The engine must be started (paused): the
 * source's ENGINE_COMPAT, the stream's next record, is checked against it
 * before any page is applied.
 */
export async function readMachine(engine: Engine, reader: StreamReader, onProgress?: (p: TransferProgress) => void): Promise<ReceiveResult> {
  const result = await receiveMachine(engine, reader, onProgress);
  for (;;) {
    const record = await reader.next();
    if (!record) throw new StreamError("TRUNCATED", undefined, "the stream ended before its END record");
    if (record.kind === "end") return result;
    if (record.kind !== "skipped") throw new StreamError("OUT_OF_ORDER", undefined, `unexpected ${record.kind} record after the machine`);
  }
}

/** Opens a save file for `colo restore`. The caller owns the returned stream. */
export function openSaveFile(path: string): { reader: StreamReader; file: Readable } {
  const file = createReadStream(path);
  return { reader: new StreamReader(file, { requireEndOfSource: true }), file };
}
