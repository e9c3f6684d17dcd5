import { Socket } from "node:net";
import { connect as tlsConnect, createServer, type Server, type TLSSocket } from "node:tls";

/** TLS 1.2 PSK suite (RFC 5487): AES-256-GCM, no certificates. Node's PSK support is TLS 1.2 only. */
const PSK_CIPHERS = "PSK-AES256-GCM-SHA384";
const PSK_IDENTITY = "colo";
const TLS_VERSION = "TLSv1.2";
/**
 * A listener drops a connection that has not completed its TLS handshake
 * within this (Node's default is 120 s): a peer that connects and sends
 * nothing, or too little, cannot hold a port for long.
 */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export type ChannelErrorCode = "REFUSED" | "TIMEOUT" | "AUTH" | "IO" | "LISTEN";

export class ChannelError extends Error {
  /** What went wrong, without the peer (the message names it). */
  readonly reason: string;

  constructor(
    readonly peer: string,
    readonly code: ChannelErrorCode,
    message: string,
    reason?: string,
  ) {
    super(message);
    this.name = "ChannelError";
    this.reason = reason ?? message;
  }
}

/**
 * Handshake failures that mean the peer holds another key (OpenSSL reason
 * strings: the side that decrypts the other's Finished with another key
 * sees a failed GCM tag, the other its alert). Bytes that are not TLS at
 * all fail otherwise ("wrong version number", "packet length too long").
 */
function isAuthFailure(err: Error): boolean {
  return /decrypt|bad record mac|cipher operation failed|handshake failure|psk identity|unknown psk/i.test(`${err.message} ${(err as NodeJS.ErrnoException).code ?? ""}`);
}

/** OpenSSL's reason ("wrong version number") without the error queue's dump around it; else the message. */
function tlsReason(err: Error): string {
  const m = /:error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):/.exec(err.message);
  return (m?.[1] ?? err.message).trim();
}

/** The peer of an accepted connection, ADDR:PORT. */
export function remotePeer(socket: Socket): string {
  // A connection reset during the handshake has lost its own handle: the TCP socket under it (addresses cached on accept) still knows.
  const parent = (socket as Socket & { _parent?: unknown })._parent;
  const s = socket.remoteAddress === undefined && parent instanceof Socket ? parent : socket;
  return `${s.remoteAddress ?? "?"}:${s.remotePort ?? "?"}`;
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

export interface ListenOptions {
  /** Default HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
}

/** Why a connection failed its handshake on a listener: AUTH (another key), TIMEOUT (too slow or silent), IO (not TLS, reset). */
function rejection(err: Error, peer: string, handshakeTimeoutMs: number): ChannelError {
  const code = (err as NodeJS.ErrnoException).code;
  const [kind, reason]: [ChannelErrorCode, string] = isAuthFailure(err)
    ? ["AUTH", "authentication failed (the peer has another key)"]
    : code === "ERR_TLS_HANDSHAKE_TIMEOUT"
      ? ["TIMEOUT", `no TLS handshake within ${handshakeTimeoutMs} ms`]
      : code === "ECONNRESET"
        ? ["IO", "the peer closed the connection during the TLS handshake"]
        : ["IO", `TLS handshake failed: ${tlsReason(err)} (not a colo peer?)`];
  return new ChannelError(peer, kind, `connection from ${peer} rejected: ${reason}`, reason);
}

/**
 * Listens for authenticated connections. A peer with another key, one that
 * does not speak TLS, or one that does not finish its handshake within
 * `handshakeTimeoutMs` never reaches `onConnection`; it is reported through
 * `onReject` (one ChannelError per connection, naming the peer).
 */
export function listenSecure(
  at: Endpoint,
  key: Buffer,
  onConnection: (socket: TLSSocket) => void,
  onReject: (err: ChannelError) => void = () => {},
  options: ListenOptions = {},
): Promise<SecureListener> {
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const server: Server = createServer(
    {
      pskCallback: (_socket, identity) => (identity === PSK_IDENTITY ? key : null),
      pskIdentityHint: PSK_IDENTITY,
      ciphers: PSK_CIPHERS,
      minVersion: TLS_VERSION,
      maxVersion: TLS_VERSION,
      // Replication sends small records (mirrored frames, the SVM's replies) that must not wait for Nagle.
      noDelay: true,
      handshakeTimeout: handshakeTimeoutMs,
    },
    (socket) => {
      socket.setNoDelay(true);
      onConnection(socket);
    },
  );
  // Reading the address on accept caches it in the TCP socket: a peer that resets its connection is still named (remotePeer).
  server.on("connection", (raw: Socket) => void raw.remoteAddress);
  server.on("tlsClientError", (err, socket) => {
    // Node leaves a connection that failed its handshake open: without this, every bad peer would hold a socket for good.
    socket.destroy();
    onReject(rejection(err, remotePeer(socket), handshakeTimeoutMs));
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
