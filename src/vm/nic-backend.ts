import type { VifConfig } from "../config/types.js";
import type { Engine } from "../engine/engine.js";
import { addToBridge, setLinkUp } from "../sys/netif.js";
import { openTap, type TapDevice } from "../sys/tap.js";
import { tapNameFor } from "./tap-name.js";

/** A rewriting of every frame between the guest's view and the LAN's (NicBackend.translation). */
export interface LinkTranslation {
  toGuest(frame: Uint8Array): Uint8Array;
  toLan(frame: Uint8Array): Uint8Array;
}

/**
 * The VM's NIC on the host: a TAP device, joined to the vif's bridge, with
 * frames copied both ways between the TAP and the engine's NIC. Layers above
 * (the COLO proxy) can interpose on both directions through the hooks.
 */
export class NicBackend {
  private rxFrames = 0;
  private txFrames = 0;
  /** Why the TAP stopped working (e.g. the interface was deleted), if it did. */
  lastError: Error | undefined;
  /** Frames from the guest, before they reach the TAP; return false to hold them back. */
  transmitFilter: ((frame: Uint8Array) => boolean) | undefined;
  /**
   * Frames from the TAP, before they reach the guest: returns the frame to
   * deliver (possibly rewritten), or undefined to drop it.
   */
  receiveFilter: ((frame: Uint8Array) => Uint8Array | undefined) | undefined;
  /**
   * The outermost layer, at the TAP: frames from the LAN pass `toGuest`
   * before the receive filter, and every frame to the LAN (the guest's, a
   * released one, an announcement) passes `toLan` last. A survivor of a
   * failover keeps its TCP rewriter here, so that a new replication session
   * (re-protection) works in the guest's own sequence space beneath it.
   */
  translation: LinkTranslation | undefined;

  private constructor(
    private readonly tap: TapDevice,
    private readonly engine: Engine,
  ) {
    engine.onTransmit((frame) => {
      this.txFrames++;
      if (this.transmitFilter && !this.transmitFilter(frame)) return;
      this.sendToHost(frame);
    });
    tap.onFrame((lanFrame) => {
      this.rxFrames++;
      const frame = this.translation ? this.translation.toGuest(lanFrame) : lanFrame;
      const deliver = this.receiveFilter ? this.receiveFilter(frame) : frame;
      if (deliver) this.engine.deliver(deliver);
    });
    tap.onError((err) => {
      // The guest keeps running with its NIC unplugged; status shows why.
      this.lastError = err;
    });
  }

  static open(vmName: string, vif: VifConfig, engine: Engine, joinBridge = true): NicBackend {
    const name = tapNameFor(vmName);
    const tap = openTap(name);
    try {
      if (vif.bridge && joinBridge) addToBridge(vif.bridge, name);
      setLinkUp(name);
    } catch (err) {
      tap.close();
      throw err;
    }
    return new NicBackend(tap, engine);
  }

  joinBridge(bridge: string): void {
    addToBridge(bridge, this.tap.name);
  }

  get tapName(): string {
    return this.tap.name;
  }

  /** Writes a frame to the host side (e.g. a gratuitous ARP after a move, released output), through the translation. */
  sendToHost(frame: Uint8Array): void {
    if (this.tap.closed || this.lastError) return;
    try {
      this.tap.write(this.translation ? this.translation.toLan(frame) : frame);
    } catch (err) {
      this.lastError = err as Error;
    }
  }

  stats(): { rxFrames: number; txFrames: number; txDropped: number; error?: string } {
    return {
      rxFrames: this.rxFrames,
      txFrames: this.txFrames,
      txDropped: this.tap.droppedWrites,
      ...(this.lastError ? { error: this.lastError.message } : {}),
    };
  }

  close(): void {
    this.tap.close();
  }
}
