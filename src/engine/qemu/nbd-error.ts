/** Errors of the NBD server; `code` is stable for callers and tests. */
export type NbdErrorCode =
  | "BAD_OPTIONS" // the server was configured with values it cannot serve (size, block sizes)
  | "LISTEN" // the unix socket could not be bound
  | "IN_USE" // another server answers on the socket path
  | "BAD_MAGIC" // a request or option header did not start with its magic: the peer was dropped
  | "BAD_FLAGS" // the client's handshake flags hold bits we did not offer: the peer was dropped
  | "TRUNCATED" // the peer closed in the middle of a message: the peer was dropped
  | "TOO_LARGE" // a length the server will not buffer (write payload, option data): the peer was dropped
  | "UNKNOWN_EXPORT" // NBD_OPT_EXPORT_NAME named another export (that option cannot fail softly): dropped
  | "SOCKET"; // the connection failed (reset by the peer, write error)

export class NbdError extends Error {
  constructor(
    readonly code: NbdErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "NbdError";
  }
}
