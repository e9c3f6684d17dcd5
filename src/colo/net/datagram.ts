/**
 * What the comparator compares on a UDP, ICMP or other IPv4 flow: the
 * content of one datagram (comparator.ts's header says which fields), and
 * the comparison of a PVM datagram with the SVM's.
 */
import type { IpPacket } from "./flows.js";
import { ICMP, IPV4_FRAGMENT } from "./packet.js";

/** Every checksum field is 16 bits (RFC 1071). */
const CHECKSUM_LENGTH = 2;

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** What a datagram flow compares: see comparator.ts's header. */
export function datagramContent(p: Exclude<IpPacket, { kind: "tcp" }>): Uint8Array {
  switch (p.kind) {
    case "udp":
      return p.udp.payload;
    case "icmp":
      return concat(p.icmp.message.subarray(0, ICMP.checksum), p.icmp.message.subarray(ICMP.checksum + CHECKSUM_LENGTH));
    case "ipv4": {
      const fragment = p.ip.flagsFragment & (IPV4_FRAGMENT.moreFragments | IPV4_FRAGMENT.offsetMask);
      return concat(Uint8Array.of(fragment >> 8, fragment & 0xff), p.ip.payload);
    }
  }
}

export function compareDatagrams(pvm: Uint8Array, svm: Uint8Array): { reason: "length" | "payload"; detail: string; offset?: number } | undefined {
  if (pvm.length !== svm.length) return { reason: "length", detail: `PVM sent ${pvm.length} octets, SVM ${svm.length}` };
  for (let i = 0; i < pvm.length; i++) {
    if (pvm[i] !== svm[i]) {
      return { reason: "payload", offset: i, detail: `octet ${i} differs: PVM 0x${(pvm[i] ?? 0).toString(16)}, SVM 0x${(svm[i] ?? 0).toString(16)}` };
    }
  }
  return undefined;
}
