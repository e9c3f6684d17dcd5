/**
 * Fake VM daemons for the tests of `colo serve` (and of its page): a
 * private run directory (what COLO_RUN_DIR names) holding, per VM, a
 * record and a control socket served by this process with the real
 * ControlServer, answering as the test says. The registry counts a record
 * live only when its pid is a process whose command line holds
 * `__vm-daemon`: one idle child process, started with that argument, is
 * every fake daemon's pid. It exits when this process does (its stdin
 * closes) and is killed, by pid, at close().
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlServer } from "../api/control-server.js";
import { vmRunFiles } from "../api/paths.js";
import type { ControlRequest } from "../api/protocol.js";
import { writeRecord } from "../api/vm-record.js";

/** A fake daemon's answer to each request; a thrown error is its `{ok:false,error}`. */
export type FakeHandler = (request: Exclude<ControlRequest, { op: "console" }>) => unknown;

export class FakeDaemons {
  private readonly servers: { close(): Promise<void> }[] = [];

  private constructor(
    readonly dir: string,
    private readonly holder: ChildProcess,
    /** The pid every record names (the idle child's). */
    readonly pid: number,
  ) {}

  static async start(): Promise<FakeDaemons> {
    const dir = mkdtempSync(join(tmpdir(), "colo-serve-test-"));
    const holder = spawn(process.execPath, ["-e", 'process.stdin.on("end", () => process.exit(0)); process.stdin.resume();', "__vm-daemon"], { stdio: ["pipe", "ignore", "ignore"] });
    const pid = await new Promise<number>((resolve, reject) => {
      holder.once("spawn", () => (holder.pid === undefined ? reject(new Error("no pid")) : resolve(holder.pid)));
      holder.once("error", reject);
    });
    return new FakeDaemons(dir, holder, pid);
  }

  /** A daemon of VM `name` answering with `handler`. */
  async add(name: string, handler: FakeHandler): Promise<void> {
    const files = vmRunFiles(name, this.dir);
    const server = await ControlServer.listen(files.socket, {
      handle: async (request) => handler(request),
      attachConsole: (socket) => socket.destroy(),
    });
    this.servers.push(server);
    this.record(name);
  }

  /** A daemon of VM `name` that accepts connections and never answers (a stalled event loop). */
  async addSilent(name: string): Promise<void> {
    const files = vmRunFiles(name, this.dir);
    const sockets = new Set<Socket>();
    const server: Server = createServer((s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(files.socket, () => resolve());
    });
    this.servers.push({
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    });
    this.record(name);
  }

  private record(name: string): void {
    // Wall clock: the record's start instant, for the reader.
    writeRecord(vmRunFiles(name, this.dir).record, { name, pid: this.pid, config: `/etc/colo/${name}.cfg`, startedAt: new Date().toISOString() });
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.close()));
    if (this.holder.exitCode === null && this.holder.signalCode === null) {
      const exited = new Promise<void>((resolve) => this.holder.once("exit", () => resolve()));
      process.kill(this.pid, "SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A compare-mode primary's status, shaped as the control socket's `status` answers it (docs/replication.md "Status"). */
export function samplePrimaryStatus(name: string, peer: string): Record<string, unknown> {
  const divergence = { reason: "payload", detail: "tcp 10.77.0.10:6379>10.77.0.2:41000 at seq+1234: PVM 0x31, SVM 0x32", flow: "tcp 10.77.0.10:6379>10.77.0.2:41000", offset: 1234 };
  const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, s)).toISOString();
  return {
    name,
    state: "running",
    engine: "qemu",
    pid: 4242,
    eventLoopDelay: { maxMs: 195.5, p99Ms: 30, meanMs: 1.2, samples: 5000, resolutionMs: 10 },
    replication: {
      mode: "primary",
      replication: "compare",
      peer,
      checkpoints: 4,
      lastPauseMs: 52,
      p99PauseMs: 61,
      pagesPerCheckpoint: 40,
      bytesPerCheckpoint: 170_000,
      msSinceHeard: 35,
      failovers: [{ at: at(1), role: "primary", reason: "no word from the secondary for 1000 ms" }],
      discardedCheckpoints: 0,
      checkpointReasons: { payload: 2, length: 0, timeout: 1, overflow: 0, "secondary-extra": 0, "disk-backlog": 0, "secondary-disk-backlog": 0, periodic: 0, operator: 0 },
      lease: { holder: "h1:1", solo: false, held: true, validForMs: 820, renewals: 40, failures: 0 },
      lastPauseBreakdownMs: { pause: 1, new: 0.2, pvmDirty: 9, svmSuspended: 3, pages: 20, saveState: 4, send: 2, svmReady: 12, resume: 0.5 },
      recentCheckpoints: [
        { checkpoint: 0, reason: "initial", pauseMs: 700, pages: 40_000, bytes: 160_000_000, at: at(0), msAgo: 200_000 },
        { checkpoint: 1, reason: "payload", pauseMs: 45, pages: 30, bytes: 130_000, at: at(10), msAgo: 90_000, divergence },
        { checkpoint: 2, reason: "timeout", pauseMs: 61, pages: 50, bytes: 210_000, at: at(20), msAgo: 40_000, divergence: { reason: "timeout", detail: "udp 10.77.0.10:5353>10.77.0.2:53: the SVM sent no matching datagram, held 3001 ms", flow: "udp 10.77.0.10:5353>10.77.0.2:53" } },
        { checkpoint: 3, reason: "payload", pauseMs: 52, pages: 40, bytes: 170_000, at: at(30), msAgo: 5_000, divergence },
      ],
    },
    heldOutput: { heldFrames: 3, heldBytes: 4500, secondaryQueuedBytes: 0, flows: 2, releasedMatched: 900, releasedUncompared: 4, releasedAtCheckpoint: 12, releasedAtFailover: 0, droppedSecondary: 0, droppedPrimaryOverflow: 0, divergences: { payload: 2, length: 0, timeout: 1, overflow: 0, "secondary-extra": 0 }, lastDivergence: { ...divergence, at: at(30) } },
    proxy: { mirroredFrames: 800, disks: [{ disk: 0, lastSeq: 12, writes: 12, bytes: 49_152 }] },
  };
}

/** A secondary's status (Remus mode, no arbiter). */
export function sampleSecondaryStatus(name: string, peer: string): Record<string, unknown> {
  return {
    name,
    state: "paused",
    engine: "emu",
    pid: 4343,
    eventLoopDelay: { maxMs: 250, p99Ms: 12, meanMs: 1, samples: 3000, resolutionMs: 10 },
    replication: { mode: "secondary", replication: "remus", peer, checkpoints: 9, lastPauseMs: 0, p99PauseMs: 0, pagesPerCheckpoint: 3, bytesPerCheckpoint: 0, msSinceHeard: 20, failovers: [], discardedCheckpoints: 0, recentCheckpoints: [] },
    proxy: { framesIn: 10, framesOut: 8, checkpointRequests: 0, disks: [] },
  };
}
