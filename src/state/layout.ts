/**
 * Fixed binary layouts, declared once (offset, type, meaning) and read and
 * written only through that declaration. Every header and fixed record part of
 * docs/specs/stream.md is a Layout; variable parts (pfn arrays, page
 * contents, blobs) are handled by their record module.
 *
 * All integers are little-endian (spec §1). u64 fields decode to bigint so
 * that no value is silently rounded; record modules convert after checking
 * the range.
 */

export type FieldType = "u8" | "u16" | "u32" | "u64" | { readonly octets: number };

export interface FieldSpec {
  readonly offset: number;
  readonly type: FieldType;
  /** What the field means, as the spec says it (kept next to the layout for readers of the code). */
  readonly meaning: string;
  /** Written as zero; decode() leaves it out; reservedViolation() reports it when non-zero. */
  readonly reserved?: true;
}

type ValueOf<T extends FieldType> = T extends "u64" ? bigint : T extends { readonly octets: number } ? Uint8Array : number;

/** The values of a layout's non-reserved fields. */
export type LayoutValues<F extends Readonly<Record<string, FieldSpec>>> = {
  -readonly [K in keyof F as F[K] extends { readonly reserved: true } ? never : K]: ValueOf<F[K]["type"]>;
};

function fieldSize(type: FieldType): number {
  switch (type) {
    case "u8":
      return 1;
    case "u16":
      return 2;
    case "u32":
      return 4;
    case "u64":
      return 8;
    default:
      return type.octets;
  }
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class Layout<F extends Readonly<Record<string, FieldSpec>>> {
  private readonly entries: readonly (readonly [string, FieldSpec])[];

  constructor(
    /** Name used in error messages ("machine header"). */
    readonly name: string,
    /** Total size in octets. */
    readonly size: number,
    readonly fields: F,
  ) {
    this.entries = Object.entries(fields);
    // A declaration error is a bug in this module: fail at load time, not on a stream.
    const covered = new Uint8Array(size);
    for (const [key, field] of this.entries) {
      const width = fieldSize(field.type);
      const aligned = typeof field.type === "string" ? field.offset % width === 0 : true;
      if (field.offset < 0 || field.offset + width > size || !aligned) {
        throw new Error(`layout ${name}: field ${key} at ${field.offset} does not fit or is misaligned`);
      }
      for (let i = field.offset; i < field.offset + width; i++) {
        if (covered[i] === 1) throw new Error(`layout ${name}: field ${key} overlaps another field`);
        covered[i] = 1;
      }
    }
    if (covered.includes(0)) throw new Error(`layout ${name}: octets not covered by any field`);
  }

  /** Read the non-reserved fields from `bytes` at `at` (the caller checked the length). */
  decode(bytes: Uint8Array, at = 0): LayoutValues<F> {
    if (at < 0 || at + this.size > bytes.length) throw new RangeError(`layout ${this.name}: ${bytes.length - at} octets, need ${this.size}`);
    const view = viewOf(bytes);
    const out: Record<string, number | bigint | Uint8Array> = {};
    for (const [key, field] of this.entries) {
      if (field.reserved) continue;
      const o = at + field.offset;
      switch (field.type) {
        case "u8":
          out[key] = view.getUint8(o);
          break;
        case "u16":
          out[key] = view.getUint16(o, true);
          break;
        case "u32":
          out[key] = view.getUint32(o, true);
          break;
        case "u64":
          out[key] = view.getBigUint64(o, true);
          break;
        default:
          out[key] = bytes.slice(o, o + field.type.octets);
      }
    }
    return out as LayoutValues<F>;
  }

  /** The first reserved field that is not all zero, or undefined. */
  reservedViolation(bytes: Uint8Array, at = 0): string | undefined {
    for (const [key, field] of this.entries) {
      if (!field.reserved) continue;
      const o = at + field.offset;
      for (let i = o; i < o + fieldSize(field.type); i++) if (bytes[i] !== 0) return key;
    }
    return undefined;
  }

  /** Write all fields (reserved ones as zero) into `target` at `at`. */
  encodeInto(target: Uint8Array, at: number, values: LayoutValues<F>): void {
    if (at < 0 || at + this.size > target.length) throw new RangeError(`layout ${this.name}: no room at ${at}`);
    const view = viewOf(target);
    const given = values as Record<string, unknown>;
    for (const [key, field] of this.entries) {
      const o = at + field.offset;
      const width = fieldSize(field.type);
      if (field.reserved) {
        target.fill(0, o, o + width);
        continue;
      }
      const value = given[key];
      switch (field.type) {
        case "u8":
        case "u16":
        case "u32": {
          const max = 2 ** (8 * width);
          if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= max) {
            throw new RangeError(`layout ${this.name}: ${key} must be a ${field.type}, got ${String(value)}`);
          }
          if (field.type === "u8") view.setUint8(o, value);
          else if (field.type === "u16") view.setUint16(o, value, true);
          else view.setUint32(o, value, true);
          break;
        }
        case "u64":
          if (typeof value !== "bigint" || value < 0n || value >= 1n << 64n) {
            throw new RangeError(`layout ${this.name}: ${key} must be a u64 bigint, got ${String(value)}`);
          }
          view.setBigUint64(o, value, true);
          break;
        default:
          if (!(value instanceof Uint8Array) || value.length !== width) {
            throw new RangeError(`layout ${this.name}: ${key} must be ${width} octets`);
          }
          target.set(value, o);
      }
    }
  }

  /** A fresh buffer of `size` octets holding the fields. */
  encode(values: LayoutValues<F>): Uint8Array {
    const out = new Uint8Array(this.size);
    this.encodeInto(out, 0, values);
    return out;
  }
}

/** Declare a layout; `const` keeps the field types literal so decode() is typed per field. */
export function defineLayout<const F extends Readonly<Record<string, FieldSpec>>>(name: string, size: number, fields: F): Layout<F> {
  return new Layout(name, size, fields);
}

/** ASCII octets of an ident ("ColoTsFm"). */
export function asciiOctets(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

export function octetsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
