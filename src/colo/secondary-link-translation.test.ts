/**
 * A secondary whose primary survived an earlier failover: the primary's
 * LINK_TRANSLATION is kept, and a takeover puts its own rewriter beneath
 * those layers at the link (docs/operations.md "Re-protection"). First with
 * a scripted primary, then through the real PrimaryReplicator (the record
 * written from PrimaryVm.linkTranslation) over an in-memory connection.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { TranslationChain } from "./net/link-translation.js";
import { parseFrame } from "./net/packet.js";
import { TcpRewriter } from "./net/tcp-rewriter.js";
import { tcpFrame, toGuest, type TcpSpec } from "./net/testing.js";
import { replicationPair, secondarySession, within } from "./testing.js";

const PVM1_ISN = 1_000_000;
const S1_ISN = 0x9abcdef0;
const PEER_ISN = 5_000;

/** The first failover's survivor had learned one connection (client numbers PVM1_ISN, its guest's S1_ISN). */
function firstSurvivorLayers(): TcpRewriter[] {
  const r = new TcpRewriter();
  r.toSecondaryVm(tcpFrame(toGuest<TcpSpec>({ seq: PEER_ISN, flags: "S" })));
  r.fromSecondaryVm(tcpFrame({ seq: S1_ISN, ack: PEER_ISN + 1, flags: "SA" }));
  r.toSecondaryVm(tcpFrame(toGuest<TcpSpec>({ seq: PEER_ISN + 1, ack: PVM1_ISN + 1, flags: "A" })));
  return [r];
}

function seqOf(frame: Uint8Array): number {
  const p = parseFrame(frame);
  if (p.kind !== "tcp") throw new Error(`not TCP: ${p.kind}`);
  return p.tcp.seq;
}

for (const carried of [true, false]) {
  test(`secondary (compare): a takeover's link translation ${carried ? "keeps the primary's LINK_TRANSLATION above its own rewriter" : "is its own rewriter alone without a LINK_TRANSLATION"}`, async (t) => {
    const links: Array<{ toGuest(f: Uint8Array): Uint8Array; toLan(f: Uint8Array): Uint8Array } | undefined> = [];
    const layers = firstSurvivorLayers().map((l) => l.snapshot());
    const s = await secondarySession(t, "compare", {
      discardable: true,
      ...(carried ? { linkLayers: layers } : {}),
      vm: { setLinkTranslation: (tr) => links.push(tr) },
    });
    await s.primary.checkpoint([1], 0x11, new TextEncoder().encode("state 1"));
    s.primary.vanish();
    await s.run;
    assert.equal(s.takeOvers.length, 1, "it took over");
    const link = links.at(-1);
    assert.ok(link instanceof TranslationChain, "the link translation is a chain");
    assert.equal(link.depth, carried ? 2 : 1);
    // The guest (a copy of the first survivor's) answers on the carried connection: the LAN sees the client's numbers.
    const out = link.toLan(tcpFrame({ seq: S1_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "+OK\r\n" }));
    assert.equal(seqOf(out), carried ? PVM1_ISN + 1 : S1_ISN + 1);
    assert.equal(link.connections(), carried ? 1 : 0);
  });
}

for (const closed of [false, true]) {
  test(`primary to secondary: the survivor's translations go in LINK_TRANSLATION; ${closed ? "a connection closed before a checkpoint is gone from the secondary's copy after it" : "the next takeover keeps them"}`, async (t) => {
    const survivorLink = TranslationChain.of([], firstSurvivorLayers()[0] as TcpRewriter);
    const p = await replicationPair(t, { vm: () => ({ linkTranslation: () => survivorLink }) });
    assert.ok(p.logs.includes("link translations sent"), p.logs.join("; "));
    if (closed) {
      // The client resets the carried connection at the survivor's link; the next checkpoint carries the change.
      survivorLink.toGuest(tcpFrame(toGuest<TcpSpec>({ seq: PEER_ISN + 1, ack: PVM1_ISN + 1, flags: "RA" })));
      assert.equal(survivorLink.connections(), 0);
      await within(p.primary.checkpointNow(false), 10_000, "a checkpoint");
    }
    p.link.primary.destroy(); // the primary host dies
    await p.run;
    assert.equal(p.takeOvers, 1);
    const chain = p.links.at(-1);
    assert.ok(chain instanceof TranslationChain);
    assert.equal(chain.depth, closed ? 1 : 2);
    const out = seqOf(chain.toLan(tcpFrame({ seq: S1_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "+OK\r\n" })));
    assert.equal(out, closed ? S1_ISN + 1 : PVM1_ISN + 1);
  });
}
