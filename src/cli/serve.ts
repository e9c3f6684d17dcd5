import { runDir } from "../api/paths.js";
import { formatEndpoint, parseEndpoint } from "../channel/secure-channel.js";
import { DEFAULT_SERVE_PORT } from "../serve/address.js";
import { ServeError, ServeServer } from "../serve/http-server.js";
import { CliError } from "./output.js";

/** `colo serve`: Prometheus metrics and the live status page of this host's VMs, in the foreground until SIGINT/SIGTERM. */
export async function serveVerb(o: { listen: string }): Promise<void> {
  const at = parseEndpoint(o.listen, DEFAULT_SERVE_PORT);
  let server: ServeServer;
  try {
    server = await ServeServer.listen({ host: at.host, port: at.port, log: (msg) => process.stderr.write(`colo serve: ${msg}\n`) });
  } catch (err) {
    if (err instanceof ServeError) throw new CliError(err.message);
    throw err;
  }
  process.stdout.write(`colo serve: http://${formatEndpoint(server.address)}/ (status page), /metrics (Prometheus), /api/status; the VMs of ${runDir()}\n`);
  await new Promise<void>((done) => {
    const stop = () => void server.close().then(done);
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
