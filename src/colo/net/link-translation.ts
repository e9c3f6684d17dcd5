/**
 * The translations a VM's link carries after failovers: one TcpRewriter per
 * takeover, outermost (nearest the LAN) first. A survivor of one failover
 * has one layer; protected again, it hands its layers to the new secondary
 * (LINK_TRANSLATION), which adds its own rewriter beneath them when it takes
 * over in its turn — so a connection the clients opened before the first
 * failover keeps their sequence numbers through the second.
 *
 * toGuest: a frame from the LAN passes the outermost layer first (each
 * layer's toSecondaryVm); toLan: a frame from the guest passes the innermost
 * first (each layer's fromSecondaryVm). Structurally a vm LinkTranslation.
 */
import { TcpRewriter, type RewriterEntry, type TcpRewriterOptions } from "./tcp-rewriter.js";

/** Layers a LINK_TRANSLATION carries at most (docs/specs/stream.md §3.15): the innermost are kept. */
export const MAX_CARRIED_LAYERS = 16;

/** What a primary reads of its link's translation: a snapshot to carry, and whether it changed since the last. */
export interface CarriedTranslation {
  /** Increases with every change of any layer's table. */
  readonly version: number;
  snapshot(): RewriterEntry[][];
}

export class TranslationChain implements CarriedTranslation {
  private constructor(private readonly layers: readonly TcpRewriter[]) {}

  /** The chain of `outer` (a predecessor's layers, possibly none) with `inner` beneath. */
  static of(outer: readonly TcpRewriter[], inner: TcpRewriter): TranslationChain {
    return new TranslationChain([...outer, inner]);
  }

  /** Layers from snapshots (a LINK_TRANSLATION record), outermost first. */
  static restoreLayers(snapshots: readonly (readonly RewriterEntry[])[], opts: TcpRewriterOptions = {}): TcpRewriter[] {
    return snapshots.map((entries) => TcpRewriter.restored(entries, opts));
  }

  /** The chain of snapshots (a LINK_TRANSLATION received in a migration), at least one layer. */
  static restore(snapshots: readonly (readonly RewriterEntry[])[], opts: TcpRewriterOptions = {}): TranslationChain {
    if (snapshots.length === 0) throw new Error("a translation chain needs at least one layer");
    return new TranslationChain(TranslationChain.restoreLayers(snapshots, opts));
  }

  get depth(): number {
    return this.layers.length;
  }

  toGuest(frame: Uint8Array): Uint8Array {
    let f = frame;
    for (const layer of this.layers) f = layer.toSecondaryVm(f);
    return f;
  }

  toLan(frame: Uint8Array): Uint8Array {
    let f = frame;
    for (let i = this.layers.length - 1; i >= 0; i--) f = (this.layers[i] as TcpRewriter).fromSecondaryVm(f);
    return f;
  }

  get version(): number {
    return this.layers.reduce((n, l) => n + l.version, 0);
  }

  /**
   * What a LINK_TRANSLATION carries, outermost first: each layer's
   * connections that it changes (TcpRewriter.snapshot), layers left empty
   * dropped (a layer that changes nothing may go), and at most
   * MAX_CARRIED_LAYERS, the innermost (the outermost translate the oldest
   * connections, of failovers that many takeovers ago).
   */
  snapshot(): RewriterEntry[][] {
    return this.layers
      .map((l) => l.snapshot())
      .filter((entries) => entries.length > 0)
      .slice(-MAX_CARRIED_LAYERS);
  }

  /** Connections remembered, over all layers. */
  connections(): number {
    return this.layers.reduce((n, l) => n + l.stats().connections, 0);
  }
}

/** The layers of a link's translation to carry on (LINK_TRANSLATION), or undefined when it is none of ours. */
export function linkLayersOf(translation: unknown): RewriterEntry[][] | undefined {
  if (!(translation instanceof TranslationChain)) return undefined;
  const layers = translation.snapshot();
  return layers.length > 0 ? layers : undefined;
}

/** The carried translation of a link, if it is ours (a chain). */
export function carriedOf(translation: unknown): CarriedTranslation | undefined {
  return translation instanceof TranslationChain ? translation : undefined;
}
