// The verifying client's CLI (DESIGN.md §7): runs a VerifyingClient
// (verifying-client.ts) against a Redis server, progress on stderr, then
// verifies and prints the JSON summary (verify-report.ts) on stdout; the
// exit code says whether a write was lost. The client and its report types
// are re-exported from here.
//
// As a program: node dist/src/demo/verify-client.js --help
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { VerifyingClient, type VerifyingClientOptions } from "./verifying-client.js";

export { VerifyingClient, type VerifyingClientOptions } from "./verifying-client.js";
export type { AckRecord, LostWrite, Progress, RunStats, VerifySummary } from "./verify-report.js";

const USAGE = `usage: node dist/src/demo/verify-client.js --host H [options]

Writes unique keys (SET <prefix>:<conn>:<n>) and INCRs to a Redis server,
then checks every acknowledged write against the surviving server and prints
a JSON summary on stdout. Progress goes to stderr.

  --host H                    server to write to (required)
  --port P                    default 6379
  --connections N             parallel connections, default 1
  --seconds S                 run time limit, default 10 (3600 with --verify-only-after-stdin)
  --max-ops N                 command limit, default 1000000
  --incr-every K              every K-th command is an INCR, 0 for none; default 10
  --prefix P                  key prefix, default colo:v:<random>
  --command-timeout S         per-command timeout, default 30
  --connect-timeout S         default 5
  --no-reconnect              a connection that fails stays down
  --verify-host H             server to verify against, default --host
  --verify-port P             default --port
  --no-verify                 print the run's statistics only
  --verify-only-after-stdin   stop writing at stdin EOF (or the time limit), and
                              verify only after stdin EOF (the failover is done)

exit: 0 nothing lost, 1 lost writes (or verification failed), 2 bad arguments`;

export class UsageError extends Error {
  override name = "UsageError";
}

export interface CliOptions {
  help: boolean;
  client: VerifyingClientOptions;
  verify: { host: string; port: number } | null;
  waitForStdin: boolean;
}

function number(name: string, text: string | undefined, min: number, max: number, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    throw new UsageError(`--${name}: expected ${integer ? "an integer" : "a number"} in ${min}..${max}, got ${JSON.stringify(text)}`);
  }
  return n;
}

export function parseCliArgs(argv: string[]): CliOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        connections: { type: "string" },
        seconds: { type: "string" },
        "max-ops": { type: "string" },
        "incr-every": { type: "string" },
        prefix: { type: "string" },
        "command-timeout": { type: "string" },
        "connect-timeout": { type: "string" },
        "no-reconnect": { type: "boolean" },
        "verify-host": { type: "string" },
        "verify-port": { type: "string" },
        "no-verify": { type: "boolean" },
        "verify-only-after-stdin": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const waitForStdin = values["verify-only-after-stdin"] ?? false;
  const help = values.help ?? false;
  if (help) return { help, client: { host: "" }, verify: null, waitForStdin };
  if (!values.host) throw new UsageError("--host is required");
  const port = number("port", values.port, 1, 65535, true) ?? 6379;
  const seconds = number("seconds", values.seconds, 0.001, 86_400, false) ?? (waitForStdin ? 3600 : 10);
  const commandTimeout = number("command-timeout", values["command-timeout"], 0.001, 3600, false) ?? 30;
  const connectTimeout = number("connect-timeout", values["connect-timeout"], 0.001, 3600, false) ?? 5;
  const client: VerifyingClientOptions = {
    host: values.host,
    port,
    connections: number("connections", values.connections, 1, 1024, true) ?? 1,
    incrEvery: number("incr-every", values["incr-every"], 0, 1_000_000, true) ?? 10,
    reconnect: !(values["no-reconnect"] ?? false),
    maxOps: number("max-ops", values["max-ops"], 1, 100_000_000, true) ?? 1_000_000,
    durationMs: seconds * 1000,
    commandTimeoutMs: commandTimeout * 1000,
    connectTimeoutMs: connectTimeout * 1000,
  };
  if (values.prefix !== undefined) {
    if (values.prefix === "" || /\s/.test(values.prefix)) throw new UsageError("--prefix: expected a non-empty word");
    client.prefix = values.prefix;
  }
  const verify = values["no-verify"]
    ? null
    : {
        host: values["verify-host"] ?? values.host,
        port: number("verify-port", values["verify-port"], 1, 65535, true) ?? port,
      };
  return { help, client, verify, waitForStdin };
}

function stdinEnded(): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdin.readableEnded) return resolve();
    process.stdin.on("end", resolve);
    process.stdin.on("error", () => resolve());
    process.stdin.resume();
  });
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  let cli: CliOptions;
  try {
    cli = parseCliArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`verify-client: ${err.message} (--help for usage)\n`);
    return 2;
  }
  if (cli.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const client = new VerifyingClient(cli.client);
  const log = (line: string): void => {
    process.stderr.write(`verify-client: ${line}\n`);
  };
  log(`prefix ${client.prefix}, ${cli.client.connections} connection(s) to ${client.host}:${client.port}`);
  const running = client.run();
  const stdin = cli.waitForStdin ? stdinEnded() : null;
  void stdin?.then(() => client.stop());
  let signals = 0;
  const onSignal = (): void => {
    if (signals++ > 0) process.exit(130); // a second ^C: give up without verifying
    log("stopping (again to quit without verifying)");
    void client.stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const ticker = setInterval(() => {
    const p = client.progress();
    log(
      `${Math.round(p.elapsedMs / 1000)}s acked ${p.acknowledgedOps} (${p.opsLastSecond}/s) unacked ${p.unacknowledged}` +
        ` resets ${p.connectionResets} timeouts ${p.commandTimeouts} reconnects ${p.reconnects} connected ${p.connected}`,
    );
  }, 1000);
  try {
    await running;
  } finally {
    clearInterval(ticker);
  }
  const stats = client.runStats();
  log(`stopped after ${stats.durationMs} ms: ${stats.acknowledged} SETs acknowledged, longest gap ${stats.maxAckGapMs} ms`);
  if (stdin) {
    log("waiting for stdin EOF before verifying");
    await stdin;
  }
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (!cli.verify) {
    process.stdout.write(`${JSON.stringify(stats, null, 2)}\n`);
    return 0;
  }
  log(`verifying against ${cli.verify.host}:${cli.verify.port}`);
  try {
    const summary = await client.verify(cli.verify.host, cli.verify.port);
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    log(
      summary.ok
        ? `ok: ${summary.verified} SETs and ${summary.incr.keys.length} counters verified`
        : `LOST: ${summary.lostCount} SETs, ${summary.incr.violations} INCR violations`,
    );
    return summary.ok ? 0 : 1;
  } catch (err) {
    log(`verification failed: ${(err as Error).message}`);
    process.stdout.write(`${JSON.stringify(stats, null, 2)}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => process.stdout.write("", () => process.exit(code)),
    (err: unknown) => {
      process.stderr.write(`verify-client: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
