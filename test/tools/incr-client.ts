/**
 * A Redis client on ONE open TCP connection that INCRs a counter in a loop
 * and checks every reply is the previous one plus one: a lost write, a
 * replayed one or a reset connection shows. Runs where it is started (tests
 * start it inside the lab's client namespace). Stops when its stdin closes
 * or after --seconds; prints a JSON summary on stdout.
 *
 *   node dist/test/tools/incr-client.js --host 10.77.0.10 [--port 6379] [--key k] [--seconds 60]
 */
import { connect } from "node:net";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const host = arg("--host", "127.0.0.1");
const port = Number(arg("--port", "6379"));
const key = arg("--key", "colo:incr");
const seconds = Number(arg("--seconds", "60"));
/** A reply slower than this counts as an error (migration downtime is far below it). */
const REPLY_TIMEOUT_MS = 20_000;

interface Summary {
  acked: number;
  first: number | null;
  last: number | null;
  gaps: number;
  errors: string[];
  connectionResets: number;
  maxReplyMs: number;
}

const summary: Summary = { acked: 0, first: null, last: null, gaps: 0, errors: [], connectionResets: 0, maxReplyMs: 0 };
let stopping = false;
process.stdin.on("end", () => (stopping = true));
process.stdin.on("data", () => undefined);
process.stdin.resume();
const deadline = Date.now() + seconds * 1000;

const socket = connect(port, host);
socket.setNoDelay(true);
let buffered = "";
let pending: ((line: string) => void) | undefined;
socket.on("data", (c: Buffer) => {
  buffered += c.toString("latin1");
  const nl = buffered.indexOf("\r\n");
  if (nl >= 0 && pending) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 2);
    const p = pending;
    pending = undefined;
    p(line);
  }
});
let closed = false;
socket.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "ECONNRESET") summary.connectionResets++;
  summary.errors.push(`socket: ${err.code ?? err.message}`);
  closed = true;
});
socket.on("close", () => (closed = true));

const command = `*2\r\n$4\r\nINCR\r\n$${Buffer.byteLength(key)}\r\n${key}\r\n`;

function incr(): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply within ${REPLY_TIMEOUT_MS} ms`)), REPLY_TIMEOUT_MS);
    pending = (line) => {
      clearTimeout(timer);
      resolve(line);
    };
    socket.write(command);
  });
}

async function main(): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  while (!stopping && !closed && Date.now() < deadline) {
    const t0 = Date.now();
    let line: string;
    try {
      line = await incr();
    } catch (err) {
      summary.errors.push((err as Error).message);
      break;
    }
    summary.maxReplyMs = Math.max(summary.maxReplyMs, Date.now() - t0);
    if (!line.startsWith(":")) {
      summary.errors.push(`unexpected reply ${JSON.stringify(line)}`);
      break;
    }
    const n = Number(line.slice(1));
    if (summary.last !== null && n !== summary.last + 1) summary.gaps++;
    if (summary.first === null) {
      summary.first = n;
      // For a test that acts at this connection's first reply (no poll of its own that could make the VMs diverge).
      process.stderr.write("incr-client: first reply\n");
    }
    summary.last = n;
    summary.acked++;
  }
  socket.end();
}

main()
  .catch((err: unknown) => summary.errors.push(`connect: ${(err as Error).message}`))
  .finally(() => {
    process.stdout.write(JSON.stringify(summary) + "\n");
    process.exit(0);
  });
