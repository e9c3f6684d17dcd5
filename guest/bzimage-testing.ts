/**
 * Synthetic bzImages for unit tests: a boot sector and setup sectors with
 * the fields bzimage.ts reads (boot.rst), the protected-mode code holding a
 * payload, the uncompressed-size word after it, and trailing bytes (where
 * a signed Debian kernel has its signature). Nothing here boots.
 */

export interface SyntheticBzImage {
  /** The compressed payload (its format is whatever its bytes are). */
  payload: Uint8Array;
  /** The size word appended to the payload (default: 0). */
  uncompressedSize?: number;
  /** setup_sects as written (default 3; 0 means 4 to the reader). */
  setupSects?: number;
  /** Boot protocol version (default 0x020f, 2.15). */
  version?: number;
  /** Bytes of "decompressor code" before the payload inside the protected-mode part (default 0x120). */
  payloadOffset?: number;
}

export function makeBzImage(spec: SyntheticBzImage): Buffer {
  const setupSects = spec.setupSects ?? 3;
  const protectedMode = ((setupSects === 0 ? 4 : setupSects) + 1) * 512;
  const payloadOffset = spec.payloadOffset ?? 0x120;
  const size = Buffer.alloc(4);
  size.writeUInt32LE(spec.uncompressedSize ?? 0);
  const payload = Buffer.concat([Buffer.from(spec.payload), size]);
  const buf = Buffer.alloc(protectedMode + payloadOffset + payload.length + 64, 0x90);
  buf.fill(0, 0, protectedMode);
  buf[0x1f1] = setupSects;
  buf.writeUInt16LE(0xaa55, 0x1fe);
  buf.write("HdrS", 0x202, "latin1");
  buf.writeUInt16LE(spec.version ?? 0x020f, 0x206);
  buf.writeUInt32LE(payloadOffset, 0x248);
  buf.writeUInt32LE(payload.length, 0x24c);
  payload.copy(buf, protectedMode + payloadOffset);
  return buf;
}
