/**
 * LINK_TRANSLATION on the primary (docs/specs/stream.md §3.15): a survivor's VM
 * link keeps the translations of earlier failovers (`PrimaryVm.linkTranslation`);
 * the secondary is sent them at the start and again inside a checkpoint
 * whenever they changed since the last one sent.
 */
import type { LinkTranslationLayers, StreamWriter } from "../state/index.js";
import type { PrimaryVm } from "./primary.js";

export class LinkTranslationSender {
  /** The link translation last sent (LINK_TRANSLATION): its version and contents. */
  private sent: { version: number; json: string } | undefined;

  constructor(
    private readonly vm: PrimaryVm,
    private readonly writer: StreamWriter,
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void,
  ) {}

  /**
   * LINK_TRANSLATION: at the start (`first`) when the link translates any
   * connection, then inside a checkpoint whenever that changed since the
   * last one sent (a connection closed, another learned): the secondary
   * replaces its copy with the checkpoint. An empty layer clears it.
   */
  async send(first: boolean): Promise<void> {
    const layers = this.due();
    if (!layers) return;
    await this.writer.writeLinkTranslation(layers);
    if (first) this.log("link translations sent", { layers: layers.length, connections: layers.reduce((n, l) => n + l.length, 0) });
  }

  /** The link's translations as the LINK_TRANSLATION to send now, or undefined when the secondary has them. */
  due(): LinkTranslationLayers | undefined {
    const t = this.vm.linkTranslation?.();
    if (!t || t.version === this.sent?.version) return undefined;
    const layers = t.snapshot();
    const json = JSON.stringify(layers);
    const changed = json !== (this.sent?.json ?? "[]");
    this.sent = { version: t.version, json };
    if (!changed) return undefined;
    return layers.length > 0 ? layers : [[]];
  }
}
