import { connect as tlsConnect, createServer, type Server, type TLSSocket } from "node:tls";

/** TLS 1.2 PSK suite (RFC 5487): AES-256-GCM, no certificates. Node's PSK support is TLS 1.2 only. */
const PSK_CIPHERS = "PSK-AES256-GCM-SHA384";
const PSK_IDENTITY = "colo";
const TLS_VERSION = "TLSv1.2";

export type ChannelErrorCode = "REFUSED" | "TIMEOUT" | "AUTH" | "IO" | "LISTEN";

export class ChannelError extends Error {
  constructor(
    readonly peer: string,
    readonly code: ChannelErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ChannelError";
  }
}

/** Handshake failures that mean the peer holds another key (OpenSSL reason strings). */
function isAuthFailure(err: Error): boolean {
  return /decrypt error|bad record mac|handshake failure|psk identity|unknown psk|ERR_SSL_/i.test(`${err.message} ${(err as NodeJS.ErrnoException).code ?? ""}`);
}

export interface Endpoint {
  host: string;
  port: number;
}

export function formatEndpoint(e: Endpoint): string {
  return e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

/** Parses HOST[:PORT] (IPv6 as [ADDR]:PORT); the port defaults to `defaultPort`. */
export function parseEndpoint(text: string, defaultPort: number): Endpoint {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!m || !m[1]) throw new Error(`bad address "${text}": expected HOST[:PORT]`);
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port in "${text}": expected 1..65535`);
  return { host: m[1], port };
}

export interface SecureListener {
  readonly address: Endpoint;
  close(): Promise<void>;
}

/**
 * Listens for authenticated connections. A peer with another key never
 * reaches `onConnection`; it is reported through `onReject`.
 */
export function listenSecure(
  at: Endpoint,
  key: Buffer,
  onConnection: (socket: TLSSocket) => void,
  onReject: (err: ChannelError) => void = () => {},
): Promise<SecureListener> {
  const server: Server = createServer(
    {
      pskCallback: (_socket, identity) => (identity === PSK_IDENTITY ? key : null),
      pskIdentityHint: PSK_IDENTITY,
      ciphers: PSK_CIPHERS,
      minVersion: TLS_VERSION,
      maxVersion: TLS_VERSION,
      // Replication sends small records (mirrored frames, the SVM's replies) that must not wait for Nagle.
      noDelay: true,
    },
    (socket) => {
      socket.setNoDelay(true);
      onConnection(socket);
    },
  );
  server.on("tlsClientError", (err, socket) => {
    const peer = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    onReject(
      new ChannelError(peer, isAuthFailure(err) ? "AUTH" : "IO", `connection from ${peer} rejected: ${isAuthFailure(err) ? "authentication failed (the peer has another key)" : err.message}`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new ChannelError(formatEndpoint(at), "LISTEN", `cannot listen on ${formatEndpoint(at)}: ${err.code ?? err.message}`)),
    );
    server.listen(at.port, at.host, () => {
      const a = server.address();
      const address = typeof a === "object" && a ? { host: a.address, port: a.port } : at;
      resolve({
        address,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}

/** Connects and authenticates; rejects with a ChannelError saying why. */
export function connectSecure(to: Endpoint, key: Buffer, timeoutMs = 10_000): Promise<TLSSocket> {
  const peer = formatEndpoint(to);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: to.host,
      port: to.port,
      pskCallback: () => ({ psk: key, identity: PSK_IDENTITY }),
      ciphers: PSK_CIPHERS,
      minVersion: TLS_VERSION,
      maxVersion: TLS_VERSION,
      checkServerIdentity: () => undefined, // PSK: the key is the identity
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ChannelError(peer, "TIMEOUT", `no answer from ${peer} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === "ECONNREFUSED") reject(new ChannelError(peer, "REFUSED", `${peer} refused the connection (is "colo migrate-receive" listening there?)`));
      else if (isAuthFailure(err)) reject(new ChannelError(peer, "AUTH", `authentication with ${peer} failed: the peer has another key`));
      else reject(new ChannelError(peer, "IO", `cannot connect to ${peer}: ${err.code ?? err.message}`));
    });
  });
}
