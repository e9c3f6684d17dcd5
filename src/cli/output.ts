/** How the CLI reports: one-line errors on stderr, exit code non-zero. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    /** Extra lines printed after the error (e.g. the console tail). */
    readonly detail?: string,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function fail(message: string, detail?: string): never {
  throw new CliError(message, 1, detail);
}
