/**
 * The guest's serial console output: a bounded tail (for `colo create`'s
 * failure report and late-attaching consoles) plus live subscribers, and a
 * search for markers printed by the guest (e.g. COLO-GUEST-READY).
 */
export class ConsoleBuffer {
  private tail = Buffer.alloc(0);
  private readonly subscribers = new Set<(bytes: Uint8Array) => void>();
  private lineBuffer = "";
  private readonly markerWaiters: { marker: string; resolve: (line: string) => void }[] = [];

  constructor(private readonly capacity = 64 * 1024) {}

  push(bytes: Uint8Array): void {
    this.tail = Buffer.concat([this.tail, bytes]);
    if (this.tail.length > this.capacity) this.tail = this.tail.subarray(this.tail.length - this.capacity);
    for (const s of this.subscribers) s(bytes);
    this.scanLines(Buffer.from(bytes).toString("latin1"));
  }

  private scanLines(text: string): void {
    if (this.markerWaiters.length === 0) {
      this.lineBuffer = "";
      return;
    }
    this.lineBuffer += text;
    const lines = this.lineBuffer.split(/\r?\n/);
    this.lineBuffer = lines.pop() ?? "";
    if (this.lineBuffer.length > 4096) this.lineBuffer = this.lineBuffer.slice(-4096);
    for (const line of lines) {
      for (const w of [...this.markerWaiters]) {
        // The guest echoes typed input; a marker counts only at the start of a line.
        if (line.startsWith(w.marker)) {
          this.markerWaiters.splice(this.markerWaiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  }

  /** Resolves with the first line starting with `marker` printed from now on. */
  waitForLine(marker: string): { promise: Promise<string>; cancel: () => void } {
    let entry: { marker: string; resolve: (line: string) => void } | undefined;
    const promise = new Promise<string>((resolve) => {
      entry = { marker, resolve };
      this.markerWaiters.push(entry);
    });
    return {
      promise,
      cancel: () => {
        if (entry) {
          const i = this.markerWaiters.indexOf(entry);
          if (i >= 0) this.markerWaiters.splice(i, 1);
        }
      },
    };
  }

  /** The last `maxBytes` of output as text. */
  tailText(maxBytes = 4096): string {
    return this.tail.subarray(Math.max(0, this.tail.length - maxBytes)).toString("utf8");
  }

  tailBytes(): Uint8Array {
    return Uint8Array.from(this.tail);
  }

  subscribe(fn: (bytes: Uint8Array) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }
}
