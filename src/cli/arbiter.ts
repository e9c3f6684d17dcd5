import { resolve } from "node:path";
import { ArbiterServer, DEFAULT_ARBITER_PORT } from "../api/arbiter.js";
import { loadKey } from "../channel/key.js";
import { formatEndpoint, parseEndpoint } from "../channel/secure-channel.js";

/** `colo arbiter`: serves leases in the foreground until SIGINT/SIGTERM. */
export async function runArbiter(o: { listen: string; keyFile: string }): Promise<void> {
  const at = parseEndpoint(o.listen, DEFAULT_ARBITER_PORT);
  const key = loadKey(resolve(o.keyFile));
  const server = await ArbiterServer.listen(at, key, (msg) => process.stderr.write(`arbiter: ${msg}\n`));
  process.stdout.write(`arbiter listening on ${formatEndpoint(server.address)}\n`);
  await new Promise<void>((done) => {
    const stop = () => void server.close().then(done);
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
