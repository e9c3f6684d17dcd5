/**
 * LINK_TRANSLATION (docs/specs/stream.md §3.15, optional, forward, before
 * the first MEMORY_STREAM): the TCP sequence translations a survivor of an
 * earlier failover applies at its link (COLO-PROTOCOL.md §6), sent when it
 * is protected again so that the new secondary, should it take over in its
 * turn, keeps those connections' numbers as the clients know them.
 *
 * Body: `u32 layer_count (1..16), u32 reserved`, then per layer, outermost
 * (nearest the LAN) first: `u32 entry_count (0..16384), u32 reserved` and
 * entry_count entries of 40 octets (translationEntryLayout). The values are
 * the TcpRewriter's per-connection state (src/colo/net/tcp-rewriter.ts);
 * what they mean for a frame is the rewriter's business, not the reader's.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";

export const LINK_TRANSLATION_HEAD = 8;
export const LINK_TRANSLATION_LAYER_HEAD = 8;
export const TRANSLATION_ENTRY_SIZE = 40;
/** Failovers in a row whose translations a VM carries (each re-protection adds one). */
export const MAX_TRANSLATION_LAYERS = 16;
/** Entries per layer: the rewriter's table bound (DEFAULT_MAX_REWRITER_CONNECTIONS). */
export const MAX_TRANSLATION_ENTRIES = 16384;
export const MIN_LINK_TRANSLATION_BODY = LINK_TRANSLATION_HEAD + LINK_TRANSLATION_LAYER_HEAD;
export const MAX_LINK_TRANSLATION_BODY = LINK_TRANSLATION_HEAD + MAX_TRANSLATION_LAYERS * (LINK_TRANSLATION_LAYER_HEAD + MAX_TRANSLATION_ENTRIES * TRANSLATION_ENTRY_SIZE);

const FLAG = {
  SVM_SYN_TSVAL: 1 << 0,
  OFFSET: 1 << 1,
  TS_OFFSET: 1 << 2,
  GUEST_FIN_END: 1 << 3,
  PEER_FIN_END: 1 << 4,
  GUEST_FIN_ACKED: 1 << 5,
  PEER_FIN_ACKED: 1 << 6,
} as const;
const KNOWN_FLAGS = 0x7f;

export const linkTranslationHeadLayout = defineLayout("LINK_TRANSLATION sub-header", LINK_TRANSLATION_HEAD, {
  layerCount: { offset: 0, type: "u32", meaning: `translation layers, 1 to ${MAX_TRANSLATION_LAYERS}, outermost first` },
  reserved: { offset: 4, type: "u32", meaning: "0", reserved: true },
});

export const translationLayerHeadLayout = defineLayout("LINK_TRANSLATION layer header", LINK_TRANSLATION_LAYER_HEAD, {
  entryCount: { offset: 0, type: "u32", meaning: `connections of this layer, 0 to ${MAX_TRANSLATION_ENTRIES}` },
  reserved: { offset: 4, type: "u32", meaning: "0", reserved: true },
});

export const translationEntryLayout = defineLayout("LINK_TRANSLATION entry", TRANSLATION_ENTRY_SIZE, {
  guestIp: { offset: 0, type: "u32", meaning: "the guest's IPv4 address" },
  peerIp: { offset: 4, type: "u32", meaning: "the peer's IPv4 address" },
  guestPort: { offset: 8, type: "u16", meaning: "the guest's TCP port" },
  peerPort: { offset: 10, type: "u16", meaning: "the peer's TCP port" },
  flags: { offset: 12, type: "u32", meaning: "which fields hold a value: bit 0 svm_syn_tsval, 1 offset, 2 ts_offset, 3 guest_fin_end, 4 peer_fin_end; bit 5 the guest's FIN acknowledged, 6 the peer's; other bits 0" },
  svmIsn: { offset: 16, type: "u32", meaning: "the translated side's initial sequence number" },
  svmSynTsval: { offset: 20, type: "u32", meaning: "the TSval of its SYN (flag bit 0)" },
  seqOffset: { offset: 24, type: "u32", meaning: "added to its seq toward the LAN, mod 2^32 (flag bit 1)" },
  tsOffset: { offset: 28, type: "u32", meaning: "added to its TSval toward the LAN, mod 2^32 (flag bit 2)" },
  guestFinEnd: { offset: 32, type: "u32", meaning: "the guest's FIN + 1, LAN side (flag bit 3)" },
  peerFinEnd: { offset: 36, type: "u32", meaning: "the peer's FIN + 1 (flag bit 4)" },
});

/** One connection of one translation layer (TcpRewriter's state; undefined: not learned yet). */
export interface TranslationEntry {
  readonly guestIp: number;
  readonly guestPort: number;
  readonly peerIp: number;
  readonly peerPort: number;
  readonly svmIsn: number;
  readonly svmSynTsval: number | undefined;
  readonly offset: number | undefined;
  readonly tsOffset: number | undefined;
  readonly guestFinEnd: number | undefined;
  readonly peerFinEnd: number | undefined;
  readonly guestFinAcked: boolean;
  readonly peerFinAcked: boolean;
}

/** The layers, outermost first; each a list of connections. */
export type LinkTranslationLayers = readonly (readonly TranslationEntry[])[];

/** Why `layers` cannot be written (undefined: it can). */
export function linkTranslationProblem(layers: LinkTranslationLayers): string | undefined {
  if (layers.length < 1 || layers.length > MAX_TRANSLATION_LAYERS) return `${layers.length} layers, allowed 1 to ${MAX_TRANSLATION_LAYERS}`;
  for (const [i, layer] of layers.entries()) {
    if (layer.length > MAX_TRANSLATION_ENTRIES) return `layer ${i} holds ${layer.length} entries, allowed at most ${MAX_TRANSLATION_ENTRIES}`;
  }
  return undefined;
}

function flagsOf(e: TranslationEntry): number {
  return (
    (e.svmSynTsval !== undefined ? FLAG.SVM_SYN_TSVAL : 0) |
    (e.offset !== undefined ? FLAG.OFFSET : 0) |
    (e.tsOffset !== undefined ? FLAG.TS_OFFSET : 0) |
    (e.guestFinEnd !== undefined ? FLAG.GUEST_FIN_END : 0) |
    (e.peerFinEnd !== undefined ? FLAG.PEER_FIN_END : 0) |
    (e.guestFinAcked ? FLAG.GUEST_FIN_ACKED : 0) |
    (e.peerFinAcked ? FLAG.PEER_FIN_ACKED : 0)
  );
}

/** The body of a LINK_TRANSLATION record (call linkTranslationProblem() first). */
export function encodeLinkTranslation(layers: LinkTranslationLayers): Uint8Array {
  const size = LINK_TRANSLATION_HEAD + layers.reduce((n, l) => n + LINK_TRANSLATION_LAYER_HEAD + l.length * TRANSLATION_ENTRY_SIZE, 0);
  const body = new Uint8Array(size);
  linkTranslationHeadLayout.encodeInto(body, 0, { layerCount: layers.length });
  let at = LINK_TRANSLATION_HEAD;
  for (const layer of layers) {
    translationLayerHeadLayout.encodeInto(body, at, { entryCount: layer.length });
    at += LINK_TRANSLATION_LAYER_HEAD;
    for (const e of layer) {
      translationEntryLayout.encodeInto(body, at, {
        guestIp: e.guestIp >>> 0,
        peerIp: e.peerIp >>> 0,
        guestPort: e.guestPort,
        peerPort: e.peerPort,
        flags: flagsOf(e),
        svmIsn: e.svmIsn >>> 0,
        svmSynTsval: (e.svmSynTsval ?? 0) >>> 0,
        seqOffset: (e.offset ?? 0) >>> 0,
        tsOffset: (e.tsOffset ?? 0) >>> 0,
        guestFinEnd: (e.guestFinEnd ?? 0) >>> 0,
        peerFinEnd: (e.peerFinEnd ?? 0) >>> 0,
      });
      at += TRANSLATION_ENTRY_SIZE;
    }
  }
  return body;
}

/** Decode a body whose length is within the type's bounds; every count, flag and reserved field is checked. */
export function decodeLinkTranslation(body: Uint8Array, where: StreamLocation): TranslationEntry[][] {
  const head = linkTranslationHeadLayout.decode(body);
  const reserved = linkTranslationHeadLayout.reservedViolation(body);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} field is not zero`);
  if (head.layerCount < 1 || head.layerCount > MAX_TRANSLATION_LAYERS) throw new StreamError("BAD_FIELD", where, `layer_count ${head.layerCount}, allowed 1 to ${MAX_TRANSLATION_LAYERS}`);
  const layers: TranslationEntry[][] = [];
  let at = LINK_TRANSLATION_HEAD;
  for (let i = 0; i < head.layerCount; i++) {
    if (at + LINK_TRANSLATION_LAYER_HEAD > body.length) throw new StreamError("BAD_LENGTH", where, `the body ends inside layer ${i}'s header (${body.length} octets)`);
    const layerBytes = body.subarray(at, at + LINK_TRANSLATION_LAYER_HEAD);
    const lh = translationLayerHeadLayout.decode(layerBytes);
    const lr = translationLayerHeadLayout.reservedViolation(layerBytes);
    if (lr !== undefined) throw new StreamError("BAD_RESERVED", where, `layer ${i}: ${lr} field is not zero`);
    if (lh.entryCount > MAX_TRANSLATION_ENTRIES) throw new StreamError("BAD_FIELD", where, `layer ${i}: entry_count ${lh.entryCount}, allowed at most ${MAX_TRANSLATION_ENTRIES}`);
    at += LINK_TRANSLATION_LAYER_HEAD;
    if (at + lh.entryCount * TRANSLATION_ENTRY_SIZE > body.length) {
      throw new StreamError("BAD_LENGTH", where, `layer ${i} names ${lh.entryCount} entries (${lh.entryCount * TRANSLATION_ENTRY_SIZE} octets) but ${body.length - at} octets are left`);
    }
    const entries: TranslationEntry[] = [];
    for (let j = 0; j < lh.entryCount; j++) {
      const e = translationEntryLayout.decode(body.subarray(at, at + TRANSLATION_ENTRY_SIZE));
      if ((e.flags & ~KNOWN_FLAGS) !== 0) throw new StreamError("BAD_FIELD", where, `layer ${i} entry ${j}: unknown flags 0x${e.flags.toString(16)}`);
      const has = (bit: number): boolean => (e.flags & bit) !== 0;
      entries.push({
        guestIp: e.guestIp,
        guestPort: e.guestPort,
        peerIp: e.peerIp,
        peerPort: e.peerPort,
        svmIsn: e.svmIsn,
        svmSynTsval: has(FLAG.SVM_SYN_TSVAL) ? e.svmSynTsval : undefined,
        offset: has(FLAG.OFFSET) ? e.seqOffset : undefined,
        tsOffset: has(FLAG.TS_OFFSET) ? e.tsOffset : undefined,
        guestFinEnd: has(FLAG.GUEST_FIN_END) ? e.guestFinEnd : undefined,
        peerFinEnd: has(FLAG.PEER_FIN_END) ? e.peerFinEnd : undefined,
        guestFinAcked: has(FLAG.GUEST_FIN_ACKED),
        peerFinAcked: has(FLAG.PEER_FIN_ACKED),
      });
      at += TRANSLATION_ENTRY_SIZE;
    }
    layers.push(entries);
  }
  if (at !== body.length) throw new StreamError("BAD_LENGTH", where, `${body.length - at} octets after the last layer`);
  return layers;
}
