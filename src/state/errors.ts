/**
 * The one error type of src/state. Every rejection of docs/specs/stream.md §7
 * is a StreamError whose `code` is stable for callers and tests and whose
 * message names the header or record (layer, name, type) and the stream offset:
 *   stream offset 4136: memory record PAGE_DATA (0x00000001): pfn 40000 is outside guest memory (32768 pages)
 */

export type StreamErrorCode =
  /** Wrong ident or marker: not a colo stream (maybe a Xen image). */
  | "BAD_MAGIC"
  /** A header version this reader does not implement. */
  | "BAD_VERSION"
  /** A reserved field, bit or option is not zero. */
  | "BAD_RESERVED"
  /** A header or record field has a value the spec does not allow. */
  | "BAD_FIELD"
  /** A mandatory record type this reader does not know. */
  | "UNKNOWN_RECORD"
  /** A reserved record type this revision knows but does not support (kvm state). */
  | "UNSUPPORTED_RECORD"
  /** body_length outside the type's bounds or not matching the counts inside. */
  | "BAD_LENGTH"
  /** Non-zero padding after a record body. */
  | "BAD_PADDING"
  /** A pfn outside guest memory, of an invalid type, duplicated, or out of order. */
  | "BAD_PFN"
  /** The source ended before the toolstack END or inside a header or record. */
  | "TRUNCATED"
  /** Bytes after the toolstack END where the stream must end (a file). */
  | "TRAILING_DATA"
  /** The machine header differs from the machine the receiver will load into. */
  | "MISMATCH"
  /** A record where the stream's grammar (spec §6) does not allow it. */
  | "OUT_OF_ORDER"
  /** The byte source or sink failed (socket reset, file error). */
  | "IO"
  /** A bug in this module, caught so the caller still sees a StreamError. */
  | "INTERNAL";

/** Which header or record an error concerns. */
export interface StreamLocation {
  /** Byte offset in the stream where the header or record starts. */
  offset: number;
  /** "toolstack header", "memory record PAGE_DATA (0x00000001)", ... */
  what: string;
}

export class StreamError extends Error {
  override readonly name = "StreamError";
  readonly code: StreamErrorCode;
  /** Byte offset of the offending header or record, when known. */
  readonly offset: number | undefined;
  /** The header or record concerned, when known. */
  readonly what: string | undefined;
  /** What is wrong, without the location prefix. */
  readonly detail: string;

  constructor(code: StreamErrorCode, location: StreamLocation | undefined, detail: string, options?: { cause?: unknown }) {
    super(
      location === undefined ? detail : `stream offset ${location.offset}: ${location.what}: ${detail}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.code = code;
    this.offset = location?.offset;
    this.what = location?.what;
    this.detail = detail;
  }
}

/** Render a record type as the spec writes it: 0x0000000e -> "0x0000000E". */
export function hex32(value: number): string {
  return `0x${(value >>> 0).toString(16).toUpperCase().padStart(8, "0")}`;
}

/** Show octets from a stream for an error message: printable ASCII, else hex. */
export function describeOctets(bytes: Uint8Array): string {
  const printable = bytes.every((b) => b >= 0x20 && b < 0x7f);
  if (printable) return JSON.stringify(String.fromCharCode(...bytes));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}
