/**
 * MAC and IPv4 addresses as text: a MAC's six octets as `aa:bb:...`, an
 * IPv4 address (a 32-bit number) as a dotted quad and back.
 */
import { ETHERNET } from "./packet-layout.js";

/** "00".."ff" and "0".."255" by octet: every packet's addresses are formatted (a profile's hot spot). */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const DEC = Array.from({ length: 256 }, (_, i) => String(i));

export function formatMac(bytes: Uint8Array, offset = 0): string {
  let out = HEX[bytes[offset] ?? 0] as string;
  for (let i = 1; i < ETHERNET.macLength; i++) out += `:${HEX[bytes[offset + i] ?? 0] as string}`;
  return out;
}

export function formatIpv4(address: number): string {
  return `${DEC[address >>> 24] as string}.${DEC[(address >>> 16) & 0xff] as string}.${DEC[(address >>> 8) & 0xff] as string}.${DEC[address & 0xff] as string}`;
}

/** "10.0.0.1" -> 0x0a000001; undefined when not a dotted quad. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value >>> 0;
}
