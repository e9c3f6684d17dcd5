/** The last bytes a child process wrote, kept bounded, for error messages. */
import { StringDecoder } from "node:string_decoder";

/** Enough for the lines that name a refused option; older output is dropped. */
const DEFAULT_KEEP_CHARS = 16 * 1024;

export class OutputTail {
  private readonly decoder = new StringDecoder("utf8");
  private text = "";

  constructor(private readonly keepChars = DEFAULT_KEEP_CHARS) {}

  push(chunk: Buffer): void {
    this.text += this.decoder.write(chunk);
    if (this.text.length > this.keepChars * 2) this.text = this.text.slice(-this.keepChars);
  }

  /** The last `n` non-empty lines, joined with newlines. */
  lastLines(n: number): string {
    const text = this.text.length > this.keepChars ? this.text.slice(-this.keepChars) : this.text;
    return text
      .split("\n")
      .map((l) => l.trimEnd())
      .filter((l) => l !== "")
      .slice(-n)
      .join("\n");
  }
}
