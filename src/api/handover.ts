/**
 * The migration's commit, as xl does it (xl_migrate.c: "ready", "permission
 * to go", "done"), so that no failure at any step leaves two running copies:
 *
 *   source                                   destination
 *   stream ... END          ─────────────▶   loads the machine, stays paused
 *                           ◀─────────────   {"ready":true,"loadMs":N}
 *   {"go":true[,"decide":{...}]} ────────▶   (the commit point)
 *                           ◀─────────────   {"ok":true,"resumeMs":N}  (it runs)
 *   source ends
 *
 * - The destination never runs its copy without the source's go: a
 *   connection that ends, or stays silent for GO_TIMEOUT_MS, before the go
 *   makes it destroy its copy. So every failure before the go leaves the
 *   source the one copy: it resumes.
 * - After the go, an answer settles it: `ok:true` (the destination runs:
 *   the source ends) or `ok:false` (the destination destroyed its copy
 *   before answering: the source resumes).
 * - Without an answer after the go (the link cut, the destination killed)
 *   the source cannot know. Without an arbiter it stays paused and says so
 *   (indeterminate: xl's "may need manual intervention"); never resumes on
 *   a guess. With an arbiter (`colo migrate --arbiter`), the go names a
 *   handover key and both sides decide through it: the destination takes
 *   the key before it resumes, the source takes it before it resumes after
 *   a lost answer, and the arbiter gives a key marked solo to one holder
 *   only, ever (src/colo/lease.ts). Whoever gets it runs; the other does
 *   not. An arbiter that cannot be reached decides nothing: the
 *   destination does not resume (and says so), the source stays paused.
 *
 * The lines travel on the migration's connection after the stream's END
 * (authenticated and encrypted like the stream). `onStep` is the seam a
 * test uses to cut the link or stop a side at each step.
 */
import { randomBytes } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { Arbiter } from "../colo/lease.js";
import { newArbiterClient, parseArbiterAddress } from "./arbiter-address.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

/** How long the source waits for "ready" after the stream's END (the destination loads the machine first). */
export const READY_TIMEOUT_MS = 60_000;
/** How long the destination waits for the go after "ready" before it destroys its copy. */
export const GO_TIMEOUT_MS = 30_000;
/** How long the source waits for the destination's answer after the go (resume + ARP announce take milliseconds). */
export const DONE_TIMEOUT_MS = 30_000;
/** With an arbiter, the source asks it after this long without an answer (a decision is safe at any moment). */
export const DONE_TIMEOUT_WITH_ARBITER_MS = 5_000;
/** How long either side keeps asking an arbiter that does not answer before it gives up (decides nothing). */
export const DECIDE_TIMEOUT_MS = 5_000;
/** The handover key's lease: solo (never granted to another), so its ttl only bounds a non-solo view. */
const DECISION_TTL_MS = 600_000;
const MAX_LINE = 4096;

/** A step of the handover, as each side reaches it (the test seam `onStep`). */
export type HandoverStep =
  | "source:stream-sent"
  | "source:ready-received"
  | "source:go-sent"
  | "source:answer-lost"
  | "destination:ready-sent"
  | "destination:go-received"
  | "destination:decided"
  | "destination:resumed";

/** What the go carries when an arbiter decides a lost answer. */
export interface DecideRequest {
  /** The arbiter as `--arbiter` names it: `colo arbiter`'s HOST:PORT (reached with the migration's key) or etcd://... */
  arbiter: string;
  /** The handover key: `<vm>@handover:<random>` (one per migration). */
  key: string;
}

/** One side's way to the arbiter for the handover key. */
export interface HandoverDecider {
  readonly arbiter: Arbiter;
  readonly key: string;
  /** This side's name as the holder (`source@HOST`, `destination@HOST`). */
  readonly holder: string;
  readonly timeoutMs?: number;
}

/** The arbiter's verdict for `decider.holder`: it may run (won), the other side runs (lost), or nothing was decided (unknown). */
export async function decide(d: HandoverDecider): Promise<{ verdict: "won" | "lost" | "unknown"; detail: string }> {
  const t0 = monotonicMs();
  let last = "";
  const bound = d.timeoutMs ?? DECIDE_TIMEOUT_MS;
  while (elapsedMs(t0) < bound) {
    try {
      const a = await d.arbiter.acquire(d.key, d.holder, DECISION_TTL_MS, true);
      if (a.granted) return { verdict: "won", detail: `the arbiter gave ${d.key} to ${d.holder}` };
      return { verdict: "lost", detail: `the arbiter holds ${d.key} for ${a.holder}` };
    } catch (err) {
      last = (err as Error).message;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { verdict: "unknown", detail: `the arbiter did not answer within ${bound} ms (${last})` };
}

/**
 * The verdict of the arbiter at `endpoint` (an `--arbiter` value: HOST[:PORT]
 * with the key's PSK, or etcd://...) for `holder`; its client is closed
 * after. A bad endpoint decides nothing.
 */
export async function decideAt(endpoint: string, psk: Buffer, key: string, holder: string, timeoutMs?: number): Promise<{ verdict: "won" | "lost" | "unknown"; detail: string }> {
  let arbiter: Arbiter;
  try {
    arbiter = newArbiterClient(parseArbiterAddress(endpoint), psk);
  } catch (err) {
    return { verdict: "unknown", detail: `the arbiter ${JSON.stringify(endpoint)} is not an address: ${(err as Error).message}` };
  }
  try {
    return await decide({ arbiter, key, holder, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
  } finally {
    arbiter.close();
  }
}

/** A fresh handover key for `vm`. */
export function handoverKey(vm: string): string {
  return `${vm}@handover:${randomBytes(8).toString("hex")}`;
}

type Line = { kind: "line"; value: Record<string, unknown> } | { kind: "closed"; why: string } | { kind: "timeout" };

function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The source's reader of the destination's lines (the source sends the stream, so nothing else reads its socket). */
export class AnswerLines {
  private buffered = "";
  private readonly queue: string[] = [];
  private ended: string | undefined;
  private wake: (() => void) | undefined;

  /**
   * @param onRefusal called (the line stays queued) when a refusal arrives:
   *   while the stream is being sent, the destination's early "no".
   */
  constructor(
    socket: TLSSocket,
    public onRefusal?: (error: string) => void,
  ) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered += chunk.toString("utf8");
      for (let nl = this.buffered.indexOf("\n"); nl >= 0; nl = this.buffered.indexOf("\n")) {
        const line = this.buffered.slice(0, nl);
        this.queue.push(line);
        this.buffered = this.buffered.slice(nl + 1);
        const v = this.onRefusal ? parseLine(line) : undefined;
        const refused = v ? answerError(v) : undefined;
        if (refused !== undefined) this.onRefusal?.(refused);
      }
      if (this.buffered.length > MAX_LINE) this.end("the destination sent a line longer than 4096 bytes");
      this.wake?.();
    });
    socket.once("close", () => this.end("the destination closed the connection"));
    socket.on("error", (err: Error) => this.end(`connection to the destination failed: ${err.message}`));
  }

  /** Why the connection ended, once it has (queued lines may still be read). */
  get closed(): string | undefined {
    return this.ended;
  }

  private end(why: string): void {
    this.ended ??= why;
    this.wake?.();
  }

  async next(timeoutMs: number): Promise<Line> {
    const t0 = monotonicMs();
    for (;;) {
      const line = this.queue.shift();
      if (line !== undefined) {
        const value = parseLine(line);
        return value ? { kind: "line", value } : { kind: "closed", why: `the destination sent something that is not a JSON object: ${JSON.stringify(line.slice(0, 80))}` };
      }
      if (this.ended !== undefined) return { kind: "closed", why: this.ended };
      const left = timeoutMs - elapsedMs(t0);
      if (left <= 0) return { kind: "timeout" };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }
}

/** How a migration ended for the source. */
export type SourceOutcome =
  /** The destination runs the VM: the source ends. */
  | { kind: "moved"; resumeMs?: number; how: string }
  /** The destination does not (and never will) run it: the source resumes. */
  | { kind: "stayed"; reason: string }
  /** Nobody can say: the source stays paused (an operator decides). */
  | { kind: "indeterminate"; reason: string };

export interface SourceCommitOptions {
  /** With an arbiter: the go asks the destination to decide through it, and the source decides through it too. */
  decider?: HandoverDecider & { endpoint: string };
  readyTimeoutMs?: number;
  doneTimeoutMs?: number;
  onStep?: (step: HandoverStep) => Promise<void> | void;
}

function answerError(v: Record<string, unknown>): string | undefined {
  return v.ok === false ? (typeof v.error === "string" ? v.error : "refused without a reason") : undefined;
}

/** The source's part after the stream's END: wait for ready, say go, wait for the answer (module comment). */
export async function commitOut(socket: TLSSocket, lines: AnswerLines, o: SourceCommitOptions = {}): Promise<SourceOutcome> {
  await o.onStep?.("source:stream-sent");
  const ready = await lines.next(o.readyTimeoutMs ?? READY_TIMEOUT_MS);
  if (ready.kind === "timeout") return { kind: "stayed", reason: `the destination was not ready within ${(o.readyTimeoutMs ?? READY_TIMEOUT_MS) / 1000} s` };
  if (ready.kind === "closed") return { kind: "stayed", reason: `before the go: ${ready.why}` };
  const refused = answerError(ready.value);
  if (refused !== undefined) return { kind: "stayed", reason: `the destination refused the migration: ${refused}` };
  if (ready.value.ready !== true) return { kind: "stayed", reason: "the destination's first answer is neither ready nor a refusal" };
  await o.onStep?.("source:ready-received");
  // A connection already gone cannot carry the go: the destination never gets it and destroys its copy.
  if (lines.closed !== undefined || socket.destroyed) return { kind: "stayed", reason: `before the go: ${lines.closed ?? "the connection is closed"}` };
  const go: Record<string, unknown> = { go: true };
  if (o.decider) go.decide = { arbiter: o.decider.endpoint, key: o.decider.key } satisfies DecideRequest;
  // From here on the destination may run: no failure below resumes the source without proof.
  if (!socket.destroyed) socket.write(JSON.stringify(go) + "\n");
  await o.onStep?.("source:go-sent");
  const doneMs = o.doneTimeoutMs ?? (o.decider ? DONE_TIMEOUT_WITH_ARBITER_MS : DONE_TIMEOUT_MS);
  const done = await lines.next(doneMs);
  if (done.kind === "line") {
    const err = answerError(done.value);
    if (err !== undefined) return { kind: "stayed", reason: `the destination did not resume: ${err}` };
    if (done.value.ok === true) return { kind: "moved", how: "the destination said it runs", ...(typeof done.value.resumeMs === "number" ? { resumeMs: done.value.resumeMs } : {}) };
  }
  const lost = done.kind === "timeout" ? `no answer within ${doneMs / 1000} s of the go` : done.kind === "closed" ? done.why : "the destination's answer is malformed";
  await o.onStep?.("source:answer-lost");
  if (!o.decider) return { kind: "indeterminate", reason: `after the go: ${lost}; without an arbiter this host cannot know whether the destination runs the VM` };
  const d = await decide(o.decider);
  if (d.verdict === "won") return { kind: "stayed", reason: `after the go: ${lost}; ${d.detail}: the destination will not run it` };
  if (d.verdict === "lost") return { kind: "moved", how: `after the go: ${lost}; ${d.detail}` };
  return { kind: "indeterminate", reason: `after the go: ${lost}; ${d.detail}` };
}

/** What the destination does after its "ready". */
export type DestinationVerdict = { kind: "resume"; how: string } | { kind: "abort"; reason: string };

export interface DestinationCommitOptions {
  goTimeoutMs?: number;
  /** Asks the arbiter the go names for the handover key (decideAt with the migration's key). */
  decide?: (request: DecideRequest) => Promise<{ verdict: "won" | "lost" | "unknown"; detail: string }>;
  onStep?: (step: HandoverStep) => Promise<void> | void;
}

/** How the destination reads and writes its lines: the stream's reader after END, and the socket. */
export interface DestinationLines {
  /** The next line; undefined when the connection ended. */
  read(maxBytes: number): Promise<string | undefined>;
  write(line: string): Promise<void>;
  /** Cuts the connection (a read in progress ends). */
  cut(): void;
}

function parseDecide(v: unknown): DecideRequest | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const d = v as { arbiter?: unknown; key?: unknown };
  if (typeof d.arbiter !== "string" || d.arbiter.length === 0 || d.arbiter.length > 1024) return undefined;
  if (typeof d.key !== "string" || d.key.length === 0 || d.key.length > 256) return undefined;
  return { arbiter: d.arbiter, key: d.key };
}

/**
 * The destination's part, its machine loaded and paused: say ready, wait
 * for the go, decide through the arbiter when the go asks. "resume": the
 * caller resumes and answers `ok:true`; "abort": it destroys its copy and
 * answers `ok:false` (best effort: the source may be gone).
 */
export async function commitIn(lines: DestinationLines, loadMs: number, o: DestinationCommitOptions = {}): Promise<DestinationVerdict> {
  await lines.write(JSON.stringify({ ready: true, loadMs }));
  await o.onStep?.("destination:ready-sent");
  const goMs = o.goTimeoutMs ?? GO_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    lines.cut();
  }, goMs);
  let line: string | undefined;
  try {
    line = await lines.read(MAX_LINE);
  } catch (err) {
    return { kind: "abort", reason: timedOut ? `no go from the source within ${goMs / 1000} s` : `before the go: ${(err as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
  // A go read in the turn the timer cut the connection came too late: the source will find its answer lost.
  if (line === undefined || timedOut) return { kind: "abort", reason: timedOut ? `no go from the source within ${goMs / 1000} s` : "the source closed the connection before its go" };
  const v = parseLine(line);
  if (!v || v.go !== true) return { kind: "abort", reason: "the source sent something other than its go" };
  await o.onStep?.("destination:go-received");
  if (v.decide === undefined) return { kind: "resume", how: "the source said go" };
  const request = parseDecide(v.decide);
  if (!request) return { kind: "abort", reason: "the source's go has a malformed decide request" };
  if (!o.decide) return { kind: "abort", reason: "the source's go asks for an arbiter's decision and this host has no way to ask one" };
  const d = await o.decide(request);
  await o.onStep?.("destination:decided");
  if (d.verdict === "won") return { kind: "resume", how: `the source said go; ${d.detail}` };
  return { kind: "abort", reason: d.verdict === "lost" ? `${d.detail}: the source kept the VM` : `${d.detail}: not resuming without a decision` };
}
