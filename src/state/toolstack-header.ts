/**
 * The toolstack header (docs/specs/stream.md §3.1): the first 16 octets of
 * every stream. Xen's is "LibxlFmt" version 2; ours is "ColoTsFm" version 1.
 */
import { describeOctets, StreamError, type StreamLocation } from "./errors.js";
import { asciiOctets, defineLayout, octetsEqual } from "./layout.js";

export const TOOLSTACK_IDENT = asciiOctets("ColoTsFm");
export const TOOLSTACK_VERSION = 1;
/** options bit 0: endianness; MUST be 0 (little-endian). */
const OPTION_BIG_ENDIAN = 0x1;

export const toolstackHeaderLayout = defineLayout("toolstack header", 16, {
  ident: { offset: 0, type: { octets: 8 }, meaning: 'ASCII "ColoTsFm"' },
  version: { offset: 8, type: "u32", meaning: "version of the spec: 1" },
  options: { offset: 12, type: "u32", meaning: "bit 0 endianness (0); bits 1-31 reserved" },
});

export const TOOLSTACK_HEADER_SIZE = toolstackHeaderLayout.size;

export function encodeToolstackHeader(): Uint8Array {
  return toolstackHeaderLayout.encode({ ident: TOOLSTACK_IDENT, version: TOOLSTACK_VERSION, options: 0 });
}

/** Validate the toolstack header at the start of `bytes` (TOOLSTACK_HEADER_SIZE octets). */
export function decodeToolstackHeader(bytes: Uint8Array, offset: number): void {
  const where: StreamLocation = { offset, what: "toolstack header" };
  const h = toolstackHeaderLayout.decode(bytes);
  if (!octetsEqual(h.ident, TOOLSTACK_IDENT)) {
    const xen = octetsEqual(h.ident, asciiOctets("LibxlFmt")) ? " (a Xen libxl image)" : "";
    throw new StreamError("BAD_MAGIC", where, `ident is ${describeOctets(h.ident)}${xen}, expected "ColoTsFm": not a colo stream`);
  }
  if (h.version !== TOOLSTACK_VERSION) {
    throw new StreamError("BAD_VERSION", where, `version ${h.version}, this reader implements version ${TOOLSTACK_VERSION}`);
  }
  if ((h.options & OPTION_BIG_ENDIAN) !== 0) throw new StreamError("BAD_RESERVED", where, "big-endian streams are not supported");
  if (h.options !== 0) throw new StreamError("BAD_RESERVED", where, `reserved option bits set: 0x${h.options.toString(16)}`);
}
