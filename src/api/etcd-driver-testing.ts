/**
 * Tests only: EtcdArbiter clients in a process of their own, inside the
 * network namespace of a test etcd cluster (etcd-cluster-testing.ts), driven
 * by the test over stdin/stdout (one JSON object per line each way). The
 * namespace holds the cluster's only addresses (loopback), so the client
 * has to run there; the test process stays in its own.
 *
 * Run as a program, this file is the driver; imported, it gives the test
 * `EtcdDriver` (the child, spawned by PID) and `RemoteArbiter` (an
 * `Arbiter` whose calls run in the driver, so LeaseKeeper in the test uses
 * etcd through the real client). A secondary's takeover question
 * (acquireForTakeover) runs inside the driver, next to its client, as in a
 * daemon: it compares the ends of successive refusals to 50 ms, which the
 * pipe's own delays to the test would blur. The driver also reports every
 * unhandled rejection it sees: the tests require none.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Etcd3 } from "etcd3";
import { acquireForTakeover, LeaseKeeper, type Arbiter, type LeaseAnswer } from "../colo/lease.js";
import { monotonicMs } from "../sys/clock.js";
import { arbiterLoaded, newArbiterClient, parseArbiterAddress } from "./arbiter-address.js";
import { EtcdArbiter, EtcdArbiterError } from "./etcd-arbiter.js";
import { decideAt } from "./handover.js";

const SELF = fileURLToPath(import.meta.url);
/** The test waits this long for any answer of the driver: past it, the driver (or a call in it) hangs. */
const DRIVER_ANSWER_BOUND_MS = 10_000;

type Json = Record<string, unknown>;

function str(v: Json, k: string): string {
  const x = v[k];
  if (typeof x !== "string") throw new Error(`driver: "${k}" must be a string`);
  return x;
}

function num(v: Json, k: string): number {
  const x = v[k];
  if (typeof x !== "number") throw new Error(`driver: "${k}" must be a number`);
  return x;
}

/** The driver program: answers each request line; ends on "exit" or when stdin closes. */
async function driverMain(): Promise<void> {
  const write = (v: Json) => process.stdout.write(JSON.stringify(v) + "\n");
  process.on("unhandledRejection", (e) => write({ event: "unhandledRejection", message: e instanceof Error ? e.message : String(e) }));
  const clients = new Map<string, Arbiter>();
  const keepers = new Map<string, LeaseKeeper>();
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const client = (v: Json) => {
    const c = clients.get(str(v, "client"));
    if (!c) throw new Error(`driver: no client ${str(v, "client")}`);
    return c;
  };
  const listen = (server: Server) =>
    new Promise<number>((resolve) => {
      servers.push(server);
      server.on("connection", (s: Socket) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => s.destroy());
      });
      server.listen(0, "127.0.0.1", () => {
        const a = server.address();
        resolve(typeof a === "object" && a ? a.port : 0);
      });
    });
  const fetchText = async (port: number, path: string, timeoutMs: number) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    return r.text();
  };
  const handle = async (v: Json): Promise<Json> => {
    switch (v.op) {
      case "open": {
        const a = parseArbiterAddress(str(v, "address"));
        if (a.kind !== "etcd") throw new Error("driver: not an etcd:// address");
        clients.get(str(v, "client"))?.close();
        // The daemon's own factory (lazy etcd3 load), unless the test sets a bound of its own.
        const c = typeof v.operationTimeoutMs === "number" ? new EtcdArbiter(a.endpoints, { operationTimeoutMs: v.operationTimeoutMs }) : newArbiterClient(a, Buffer.alloc(0));
        await arbiterLoaded(c);
        clients.set(str(v, "client"), c);
        return {};
      }
      case "acquire":
        return { answer: await client(v).acquire(str(v, "vm"), str(v, "holder"), num(v, "ttlMs"), v.solo === true) };
      case "release":
        await client(v).release(str(v, "vm"), str(v, "holder"));
        return {};
      case "takeover": {
        // A secondary's question when its primary falls silent; "refused" is told once, at the keeper's first refusal.
        const name = str(v, "keeper");
        const keeper = new LeaseKeeper(client(v), str(v, "vm"), str(v, "holder"), num(v, "ttlMs"), () => undefined);
        keepers.set(name, keeper);
        const watch = setInterval(() => {
          if (!keeper.refusal) return;
          clearInterval(watch);
          write({ event: "refused", keeper: name });
        }, 5);
        try {
          const taken = await acquireForTakeover(keeper, num(v, "giveUpMs"));
          return { taken, refusedSolo: keeper.refusedSolo, ...keeper.status() };
        } finally {
          clearInterval(watch);
        }
      }
      case "keeper-stop": {
        const keeper = keepers.get(str(v, "keeper"));
        keepers.delete(str(v, "keeper"));
        await keeper?.stop(v.release === true);
        return {};
      }
      case "close":
        client(v).close();
        clients.delete(str(v, "client"));
        return {};
      case "health": {
        try {
          const text = await fetchText(num(v, "port"), "/health", num(v, "timeoutMs"));
          return { healthy: /"health"\s*:\s*"true"/.test(text), detail: text.trim() };
        } catch (err) {
          return { healthy: false, detail: (err as Error).message };
        }
      }
      case "is-leader": {
        try {
          return { leader: /^etcd_server_is_leader 1$/m.test(await fetchText(num(v, "port"), "/metrics", num(v, "timeoutMs"))) };
        } catch {
          return { leader: false };
        }
      }
      case "decide-at": // a live migration's handover decision (handover.ts), as either side asks it
        return await decideAt(str(v, "address"), Buffer.alloc(32), str(v, "key"), str(v, "holder"));
      case "put-raw": {
        // Another writer's value on a key (as if someone else used colo's prefix).
        const a = parseArbiterAddress(str(v, "address"));
        if (a.kind !== "etcd" || !a.endpoints[0]) throw new Error("driver: not an etcd:// address");
        const raw = new Etcd3({ hosts: `http://${a.endpoints[0].host}:${a.endpoints[0].port}` });
        try {
          await raw.put(str(v, "key")).value(str(v, "value"));
        } finally {
          raw.close();
        }
        return {};
      }
      case "silent-listener": // accepts connections and never says a word
        return { port: await listen(createTcpServer()) };
      case "http1-listener": // answers every request with an HTTP/1.1 404: not etcd, not gRPC
        return { port: await listen(createHttpServer((_req, res) => res.writeHead(404).end("not etcd\n"))) };
      default:
        throw new Error(`driver: unknown op ${JSON.stringify(v.op)}`);
    }
  };
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  write({ ready: true });
  for await (const line of lines) {
    const v = JSON.parse(line) as Json;
    if (v.op === "exit") break;
    const t0 = monotonicMs();
    void handle(v).then(
      (r) => write({ id: v.id, ...r, ms: monotonicMs() - t0 }),
      (err: unknown) => write({ id: v.id, error: err instanceof Error ? err.message : String(err), code: err instanceof EtcdArbiterError ? err.code : null, ms: monotonicMs() - t0 }),
    );
  }
  for (const k of keepers.values()) await k.stop(false);
  for (const c of clients.values()) c.close();
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
  process.exit(0);
}

/** An answer of the driver: the call's result, or its error; `ms` is how long it took in the driver. */
export interface DriverAnswer extends Json {
  ms: number;
  error?: string;
  code?: string | null;
}

/** The test's side: the driver process, spawned inside `netns`, ended by its PID. */
export class EtcdDriver {
  /** Unhandled rejections the driver reported (the tests require none). */
  readonly unhandled: string[] = [];
  /** Other events the driver told, in order ({event, ...}). */
  readonly events: Json[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, (v: DriverAnswer) => void>();
  private exited: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  static async start(netns: string): Promise<EtcdDriver> {
    const child = spawn("ip", ["netns", "exec", netns, process.execPath, SELF], { stdio: ["pipe", "pipe", "inherit"] });
    const driver = new EtcdDriver(child);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`etcd test driver in ${netns}: not ready within ${DRIVER_ANSWER_BOUND_MS} ms`)), DRIVER_ANSWER_BOUND_MS);
      child.once("exit", (code) => reject(new Error(`etcd test driver in ${netns} exited (${code}) before it was ready`)));
      if (!child.stdout) return reject(new Error("etcd test driver: no stdout"));
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (line) => {
        const v = JSON.parse(line) as Json;
        if (v.ready === true) {
          clearTimeout(timer);
          resolve();
        } else if (v.event === "unhandledRejection") driver.unhandled.push(String(v.message));
        else if (typeof v.event === "string") driver.events.push(v);
        else if (typeof v.id === "number") {
          driver.waiting.get(v.id)?.(v as DriverAnswer);
          driver.waiting.delete(v.id);
        }
      });
    });
    try {
      await ready;
    } catch (err) {
      await driver.stop();
      throw err;
    }
    return driver;
  }

  /** One request; rejects only if the driver does not answer within `boundMs` (a hang). */
  request(op: string, args: Json = {}, boundMs = DRIVER_ANSWER_BOUND_MS): Promise<DriverAnswer> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`etcd test driver: no answer to ${op} within ${boundMs} ms`));
      }, boundMs);
      this.waiting.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      this.child.stdin?.write(JSON.stringify({ id, op, ...args }) + "\n");
    });
  }

  /** A client of the etcd cluster at `address` (etcd://...), as the daemon has one. */
  async arbiter(client: string, address: string, operationTimeoutMs?: number): Promise<RemoteArbiter> {
    const r = await this.request("open", { client, address, ...(operationTimeoutMs === undefined ? {} : { operationTimeoutMs }) });
    if (r.error) throw new Error(r.error);
    return new RemoteArbiter(this, client);
  }

  /** Ends the driver: "exit", then SIGKILL by PID if it has not gone within 5 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end(JSON.stringify({ op: "exit" }) + "\n");
    const gone = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref())]);
    if (!gone && this.child.pid !== undefined) {
      process.kill(this.child.pid, "SIGKILL");
      await this.exited;
    }
  }
}

/** What the driver's takeover answered: acquireForTakeover's result and the keeper's status. */
export interface TakeoverAnswer {
  taken: boolean;
  refusedSolo: boolean;
  solo: boolean;
  lastError?: string;
  ms: number;
}

/** An Arbiter whose calls run in the driver's EtcdArbiter `client`; `last` is the driver's answer to the last call. */
export class RemoteArbiter implements Arbiter {
  last: DriverAnswer | undefined;

  constructor(
    private readonly driver: EtcdDriver,
    readonly client: string,
  ) {}

  async acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    const r = (this.last = await this.driver.request("acquire", { client: this.client, vm, holder, ttlMs, solo }));
    if (r.error !== undefined) throw Object.assign(new Error(r.error), { code: r.code });
    return r.answer as LeaseAnswer;
  }

  async release(vm: string, holder: string): Promise<void> {
    const r = (this.last = await this.driver.request("release", { client: this.client, vm, holder }));
    if (r.error !== undefined) throw Object.assign(new Error(r.error), { code: r.code });
  }

  /** acquireForTakeover with a new LeaseKeeper `keeper` on this client, run in the driver. */
  async takeover(keeper: string, vm: string, holder: string, ttlMs: number, giveUpMs: number): Promise<TakeoverAnswer> {
    const r = await this.driver.request("takeover", { client: this.client, keeper, vm, holder, ttlMs, giveUpMs }, giveUpMs + 10_000);
    if (r.error !== undefined) throw new Error(r.error);
    return r as unknown as TakeoverAnswer;
  }

  close(): void {
    void this.driver.request("close", { client: this.client }).catch(() => undefined);
  }
}

if (process.argv[1] === SELF) void driverMain();
