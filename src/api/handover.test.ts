/**
 * The migration's commit (handover.ts) with a kill or a link cut at every
 * step: real TLS-PSK sockets on 127.0.0.1 through a relay that can go
 * silent (a cut link: no FIN, no RST) or pass a side's close on (a killed
 * process: the kernel closes its sockets), and a real arbiter. No VM: each
 * side's copy is a state ("running", "resumed", ...) set exactly where the
 * daemons resume, end or stay paused (daemon-start.ts, daemon-transfer.ts).
 *
 * The rule checked in every case: never two running copies. With an
 * arbiter and both hosts alive (a cut at any step), exactly one. A killed
 * host takes its copy with it: after the commit point that may be the only
 * one (the destination committed, then died), as when any host running a
 * VM dies.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from "node:net";
import { test } from "node:test";
import type { TLSSocket } from "node:tls";
import { connectSecure, formatEndpoint, listenSecure, type SecureListener } from "../channel/secure-channel.js";
import { ByteSourceReader } from "../state/byte-source.js";
import { ArbiterServer, ArbiterClient } from "./arbiter.js";
import { AnswerLines, commitIn, commitOut, decideAt, handoverKey, type HandoverStep } from "./handover.js";

const LOCAL = { host: "127.0.0.1", port: 0 };
/** Short bounds so that 34 cases run in seconds (the daemons use handover.ts's defaults). */
const T = { goTimeoutMs: 800, readyTimeoutMs: 1500, doneTimeoutMs: 800, decideMs: 800 };

type Fault = { kind: "none" } | { kind: "cut" | "kill"; at: HandoverStep };
type SourceEnd = "ended" | "resumed" | "paused" | "killed";
type DestinationEnd = "running" | "destroyed" | "killed";

/** A TCP relay between source and destination: `cut()` makes it silent both ways; a side's close passes on (unless cut). */
async function relay(to: number): Promise<{ port: number; cut(): void; close(): void }> {
  let silent = false;
  const pairs = new Set<Socket>();
  const server: Server = createServer((a) => {
    const b = netConnect(to, "127.0.0.1");
    pairs.add(a).add(b);
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      x.on("data", (d) => {
        if (!silent) y.write(d);
      });
      x.on("end", () => {
        if (!silent) y.end();
      });
      x.on("error", () => undefined);
      x.on("close", () => {
        if (!silent) y.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    cut: () => (silent = true),
    close: () => {
      for (const s of pairs) s.destroy();
      server.close();
    },
  };
}

const never = new Promise<void>(() => undefined);

async function handover(fault: Fault, withArbiter: boolean): Promise<{ source: SourceEnd; destination: DestinationEnd; why: string[] }> {
  const key = randomBytes(32);
  const arbiter = withArbiter ? await ArbiterServer.listen(LOCAL, key) : undefined;
  const why: string[] = [];
  let destination: DestinationEnd | undefined;
  let destinationSettled!: () => void;
  const destinationDone = new Promise<void>((r) => (destinationSettled = r));
  let killSource!: () => void;
  const sourceKilled = new Promise<void>((r) => (killSource = r));
  let destSocket: TLSSocket | undefined;
  let srcSocket: TLSSocket | undefined;
  let net: Awaited<ReturnType<typeof relay>> | undefined;
  /** At the fault's step: a cut silences the relay (both sides go on); a kill closes that side's socket and stops it. */
  const stepper = (side: "source" | "destination") => async (step: HandoverStep) => {
    if (fault.kind === "none" || fault.at !== step) return;
    if (fault.kind === "cut") {
      net?.cut();
      return;
    }
    if (side === "destination") {
      destination = "killed";
      destSocket?.destroy();
      destinationSettled();
    } else {
      srcSocket?.destroy();
      killSource();
    }
    await never;
  };

  const listener: SecureListener = await listenSecure(LOCAL, key, (socket) => {
    destSocket = socket;
    socket.on("error", () => undefined);
    const reader = new ByteSourceReader(socket);
    const write = (line: string) => new Promise<void>((done) => (socket.destroyed ? done() : socket.write(line + "\n", () => done())));
    const onStep = stepper("destination");
    void (async () => {
      // The stream's end (here one line): the destination says ready only after it, as the daemon does.
      const end = await Promise.race([reader.readLine(64, { offset: 0, what: "END" }).catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), T.goTimeoutMs))]);
      if (end !== "END") {
        destination = "destroyed";
        why.push("destination: the stream did not end");
        socket.destroy();
        destinationSettled();
        return;
      }
      const verdict = await commitIn(
        { read: (max) => reader.readLine(max, { offset: reader.offset, what: "a line" }), write, cut: () => socket.destroy() },
        1,
        { goTimeoutMs: T.goTimeoutMs, decide: (req) => decideAt(req.arbiter, key, req.key, "destination@test", T.decideMs), onStep },
      );
      if (destination === "killed") return;
      if (verdict.kind === "abort") {
        destination = "destroyed";
        why.push(`destination: ${verdict.reason}`);
        await write(JSON.stringify({ ok: false, error: verdict.reason }));
      } else {
        destination = "running";
        why.push(`destination: ${verdict.how}`);
        await onStep("destination:resumed");
        await write(JSON.stringify({ ok: true, resumeMs: 1 }));
      }
      destinationSettled();
    })();
  });
  net = await relay(listener.address.port);
  const client = arbiter ? new ArbiterClient(arbiter.address, key) : undefined;
  try {
    srcSocket = await connectSecure({ host: "127.0.0.1", port: net.port }, key);
    srcSocket.on("error", () => undefined);
    const lines = new AnswerLines(srcSocket);
    srcSocket.write("END\n");
    const source = await Promise.race([
      commitOut(srcSocket, lines, {
        readyTimeoutMs: T.readyTimeoutMs,
        doneTimeoutMs: T.doneTimeoutMs,
        ...(client && arbiter ? { decider: { arbiter: client, key: handoverKey("web"), holder: "source@test", endpoint: formatEndpoint(arbiter.address), timeoutMs: T.decideMs } } : {}),
        onStep: stepper("source"),
      }).then((o): SourceEnd => {
        why.push(`source: ${o.kind}: ${"reason" in o ? o.reason : o.how}`);
        return o.kind === "moved" ? "ended" : o.kind === "stayed" ? "resumed" : "paused";
      }),
      // A killed source's commitOut waits forever on the fault's step.
      sourceKilled.then((): SourceEnd => "killed"),
    ]);
    await destinationDone;
    return { source, destination: destination ?? "destroyed", why };
  } finally {
    srcSocket?.destroy();
    destSocket?.destroy();
    net.close();
    await listener.close();
    client?.close();
    await arbiter?.close();
  }
}

/** The source's steps a fault can strike at by itself ("source:answer-lost" follows another fault). */
const SOURCE_STEPS: HandoverStep[] = ["source:stream-sent", "source:ready-received", "source:go-sent"];
const DESTINATION_STEPS: HandoverStep[] = ["destination:ready-sent", "destination:go-received", "destination:decided", "destination:resumed"];

const running = (r: { source: SourceEnd; destination: DestinationEnd }) => (r.source === "resumed" ? 1 : 0) + (r.destination === "running" ? 1 : 0);

for (const withArbiter of [true, false]) {
  const mode = withArbiter ? "with an arbiter" : "without an arbiter";

  test(`handover ${mode}, nothing fails: the destination runs, the source ends`, async () => {
    const r = await handover({ kind: "none" }, withArbiter);
    assert.deepEqual({ source: r.source, destination: r.destination }, { source: "ended", destination: "running" }, r.why.join("; "));
  });

  test(`handover ${mode}: a link cut at every step leaves ${withArbiter ? "exactly one running copy" : "at most one running copy, and a source that knows it cannot know"}`, { concurrency: true }, async (t) => {
    const cases: Promise<void>[] = [];
    for (const at of [...SOURCE_STEPS, ...DESTINATION_STEPS]) {
      if (!withArbiter && at === "destination:decided") continue; // no decision without an arbiter
      cases.push(t.test(`cut at ${at}`, async () => {
        const r = await handover({ kind: "cut", at }, withArbiter);
        const detail = `${JSON.stringify({ source: r.source, destination: r.destination })}: ${r.why.join("; ")}`;
        assert.ok(running(r) <= 1, `two running copies: ${detail}`);
        if (withArbiter) assert.equal(running(r), 1, `exactly one running copy: ${detail}`);
        // Without an arbiter the source stays paused only when the go may have arrived.
        if (r.source === "paused") assert.ok(!withArbiter && at !== "source:stream-sent", detail);
        if (at === "source:stream-sent") assert.deepEqual([r.source, r.destination], ["resumed", "destroyed"], detail);
        if (at === "destination:go-received" || at === "destination:decided" || at === "destination:resumed") {
          // The go arrived: the destination runs; the source learns it from the arbiter, or stays paused without one.
          assert.equal(r.destination, "running", detail);
          assert.equal(r.source, withArbiter ? "ended" : "paused", detail);
        }
      }));
    }
    await Promise.all(cases);
  });

  test(`handover ${mode}: the source killed at every step: never two copies, and after its go the destination runs`, { concurrency: true }, async (t) => {
    const cases: Promise<void>[] = [];
    for (const at of SOURCE_STEPS) {
      cases.push(t.test(`source killed at ${at}`, async () => {
        const r = await handover({ kind: "kill", at }, withArbiter);
        const detail = `${JSON.stringify({ source: r.source, destination: r.destination })}: ${r.why.join("; ")}`;
        assert.equal(r.source, "killed", detail);
        // Before its go the destination never runs its copy.
        if (at === "source:stream-sent" || at === "source:ready-received") assert.equal(r.destination, "destroyed", detail);
      }));
    }
    await Promise.all(cases);
  });

  test(`handover ${mode}: the destination killed at every step: never two copies; before the go the source resumes`, { concurrency: true }, async (t) => {
    const cases: Promise<void>[] = [];
    for (const at of DESTINATION_STEPS) {
      if (!withArbiter && at === "destination:decided") continue; // no decision without an arbiter
      cases.push(t.test(`destination killed at ${at}`, async () => {
        const r = await handover({ kind: "kill", at }, withArbiter);
        const detail = `${JSON.stringify({ source: r.source, destination: r.destination })}: ${r.why.join("; ")}`;
        assert.equal(r.destination, "killed", detail);
        assert.ok(running(r) <= 1, detail);
        if (at === "destination:ready-sent") assert.equal(r.source, withArbiter ? "resumed" : r.source === "paused" ? "paused" : "resumed", detail);
        if (at === "destination:go-received") assert.equal(r.source, withArbiter ? "resumed" : "paused", detail); // it never asked the arbiter
        if (at === "destination:decided" || at === "destination:resumed") assert.equal(r.source, withArbiter ? "ended" : "paused", detail); // it had committed
      }));
    }
    await Promise.all(cases);
  });
}

test("an arbiter that cannot be reached decides nothing: the destination does not resume", async () => {
  const d = await decideAt("127.0.0.1:1", randomBytes(32), handoverKey("web"), "destination@test", 600);
  assert.equal(d.verdict, "unknown");
  const bad = await decideAt("not an address:x", randomBytes(32), handoverKey("web"), "destination@test", 600);
  assert.equal(bad.verdict, "unknown");
  assert.match(bad.detail, /not an address/);
});

test("the handover key is given to one holder only, ever", async () => {
  const key = randomBytes(32);
  const arbiter = await ArbiterServer.listen(LOCAL, key);
  try {
    const k = handoverKey("web");
    const at = formatEndpoint(arbiter.address);
    assert.equal((await decideAt(at, key, k, "destination@a")).verdict, "won");
    assert.equal((await decideAt(at, key, k, "source@b")).verdict, "lost");
    assert.equal((await decideAt(at, key, k, "destination@a")).verdict, "won"); // the same holder asking again
    assert.equal((await decideAt(at, key, handoverKey("web"), "source@b")).verdict, "won"); // another migration, another key
  } finally {
    await arbiter.close();
  }
});
