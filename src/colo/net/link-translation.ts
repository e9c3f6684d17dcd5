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

export class TranslationChain {
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

  /** Every layer's state, outermost first: what a LINK_TRANSLATION carries. */
  snapshot(): RewriterEntry[][] {
    return this.layers.map((l) => l.snapshot());
  }

  /** Connections remembered, over all layers. */
  connections(): number {
    return this.layers.reduce((n, l) => n + l.stats().connections, 0);
  }
}

/** The layers of a link's translation to carry on (LINK_TRANSLATION), or undefined when it is none of ours. */
export function linkLayersOf(translation: unknown): RewriterEntry[][] | undefined {
  return translation instanceof TranslationChain ? translation.snapshot() : undefined;
}
