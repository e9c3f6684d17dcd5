/**
 * `colo serve`'s HTTP server (docs/operations.md "Metrics"): one process
 * per host serving every live VM daemon of that host.
 *
 *   GET /metrics      Prometheus text format, every daemon's metrics merged (scrape.ts)
 *   GET /api/status   every daemon's `colo status` object and checkpoint history (status-poller.ts)
 *   GET /             the live status page (page/: plain HTML, CSS and JavaScript, read at run time)
 *
 * Read-only: nothing here changes a VM. Loopback by default, as it has no
 * authentication.
 */
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { hostPort } from "./address.js";
import { Scraper } from "./scrape.js";
import { StatusPoller } from "./status-poller.js";

/** The page's files: src/serve/page in the repository, the same path from src/ and from dist/src/ (nothing is copied at build). */
export const PAGE_DIR = fileURLToPath(new URL("../../../src/serve/page/", import.meta.url));

const PAGE_FILES: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
};

export interface ServeOptions {
  host: string;
  /** 0: any free port (tests). */
  port: number;
  /** The run directory whose daemons are served (default: this host's). */
  dir?: string;
  /** Bound on one daemon's answer to a scrape (ms). */
  scrapeTimeoutMs?: number;
  /** Bound on one daemon's answer to a status poll (ms), and the poll period. */
  statusTimeoutMs?: number;
  pollMs?: number;
  /** How far back the page's checkpoint history goes (ms). */
  windowMs?: number;
  /** One line per daemon left out of a scrape, or a failed poll. */
  log?: (message: string) => void;
}

export class ServeError extends Error {
  constructor(
    message: string,
    readonly code: "ADDRESS_IN_USE" | "LISTEN",
  ) {
    super(message);
    this.name = "ServeError";
  }
}

export class ServeServer {
  private readonly scraper: Scraper;
  private readonly poller: StatusPoller;
  private readonly server: Server;

  private constructor(opts: ServeOptions) {
    const log = opts.log ?? (() => undefined);
    this.scraper = new Scraper({ ...(opts.dir ? { dir: opts.dir } : {}), ...(opts.scrapeTimeoutMs ? { timeoutMs: opts.scrapeTimeoutMs } : {}), onError: log });
    this.poller = new StatusPoller({
      ...(opts.dir ? { dir: opts.dir } : {}),
      ...(opts.statusTimeoutMs ? { timeoutMs: opts.statusTimeoutMs } : {}),
      ...(opts.pollMs ? { periodMs: opts.pollMs } : {}),
      ...(opts.windowMs ? { windowMs: opts.windowMs } : {}),
      onError: log,
    });
    this.server = createServer((req, res) => void this.route(req, res));
  }

  /** Listens on `opts.host:opts.port`; a port in use is a ServeError naming the address. */
  static async listen(opts: ServeOptions): Promise<ServeServer> {
    const s = new ServeServer(opts);
    const at = hostPort(opts.host, opts.port);
    await new Promise<void>((resolve, reject) => {
      s.server.once("error", (err: NodeJS.ErrnoException) => {
        if (err.code === "EADDRINUSE") reject(new ServeError(`cannot listen on ${at}: the address is in use (another colo serve, or another program)`, "ADDRESS_IN_USE"));
        else if (err.code === "EACCES") reject(new ServeError(`cannot listen on ${at}: permission denied`, "LISTEN"));
        else if (err.code === "EADDRNOTAVAIL" || err.code === "ENOTFOUND") reject(new ServeError(`cannot listen on ${at}: no such local address`, "LISTEN"));
        else reject(new ServeError(`cannot listen on ${at}: ${err.code ?? err.message}`, "LISTEN"));
      });
      s.server.listen(opts.port, opts.host, () => resolve());
    });
    s.poller.start();
    return s;
  }

  get address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  get url(): string {
    return `http://${hostPort(this.address.host, this.address.port)}/`;
  }

  async close(): Promise<void> {
    this.poller.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "http://colo").pathname;
    try {
      if (req.method !== "GET" && req.method !== "HEAD") return this.send(res, 405, "text/plain; charset=utf-8", "only GET\n", { Allow: "GET, HEAD" });
      if (path === "/metrics") {
        const scrape = await this.scraper.scrape();
        return this.send(res, 200, scrape.contentType, scrape.text);
      }
      if (path === "/api/status") return this.send(res, 200, "application/json; charset=utf-8", JSON.stringify(await this.poller.view()));
      const page = PAGE_FILES[path];
      if (page) return this.send(res, 200, page.type, await readFile(`${PAGE_DIR}${page.file}`));
      return this.send(res, 404, "text/plain; charset=utf-8", `no ${path} here: / (status page), /api/status, /metrics\n`);
    } catch (err) {
      return this.send(res, 500, "text/plain; charset=utf-8", `${(err as Error).message}\n`);
    }
  }

  private send(res: ServerResponse, code: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
    res.writeHead(code, {
      "Content-Type": type,
      "Cache-Control": "no-store",
      // The page loads only its own files and fetches only /api/status.
      "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
      "X-Content-Type-Options": "nosniff",
      ...headers,
    });
    res.end(res.req.method === "HEAD" ? undefined : body);
  }
}
