/** Errors of the QMP client; `code` is stable for callers and tests. */
export type QmpErrorCode =
  | "CONNECT_FAILED" // the unix socket did not accept (see `errno`)
  | "GREETING" // the first line was not a QMP greeting, or capabilities negotiation failed
  | "COMMAND_FAILED" // QEMU answered with an error (`class`, `desc`)
  | "TIMEOUT" // no answer within the call's timeout
  | "CLOSED" // the connection closed before the answer
  | "PROTOCOL" // a line from QEMU we cannot parse or place
  | "BAD_REPLY"; // a command's `return` value or an event's data is not what QEMU documents

export interface QmpErrorDetails {
  /** The QMP command this error is about, when there is one. */
  command?: string;
  /** QMP error class (`GenericError`, `CommandNotFound`, ...), for COMMAND_FAILED. */
  class?: string;
  /** QMP error description, for COMMAND_FAILED. */
  desc?: string;
  /** Node's errno code (`ENOENT`, `ECONNREFUSED`, ...), for CONNECT_FAILED. */
  errno?: string;
  cause?: unknown;
}

/** Messages are whole sentences naming the VM (and the command): "QMP connection to guest closed". */
export class QmpError extends Error {
  readonly command: string | undefined;
  readonly class: string | undefined;
  readonly desc: string | undefined;
  readonly errno: string | undefined;

  constructor(
    readonly vm: string,
    readonly code: QmpErrorCode,
    message: string,
    details: QmpErrorDetails = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "QmpError";
    this.command = details.command;
    this.class = details.class;
    this.desc = details.desc;
    this.errno = details.errno;
  }
}
