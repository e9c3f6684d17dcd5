/** Errors raised by engines; `code` is stable for callers and tests. */
export type EngineErrorCode =
  | "BAD_SPEC" // the machine spec cannot be run by this engine
  | "NOT_STARTED" // an operation that needs a booted machine
  | "NOT_PAUSED" // an operation that needs a paused machine
  | "BAD_STATE" // a state blob this engine cannot load
  | "DESTROYED" // the engine was destroyed
  | "FAULT"; // the emulator failed

export class EngineError extends Error {
  constructor(
    readonly engine: string,
    readonly code: EngineErrorCode,
    message: string,
  ) {
    super(`${engine} engine: ${message}`);
    this.name = "EngineError";
  }
}
