/**
 * `colo serve`'s status page in a headless Chromium (test/tools/browser.ts)
 * over fake daemons (src/serve/testing.ts): what each VM's section shows —
 * read from its data-field/data-value elements — matches `/api/status`,
 * a daemon that does not answer shows its error, and the page follows a
 * change within its poll. A screenshot goes to .cache/test-screenshots/.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ServeServer } from "../src/serve/http-server.js";
import { FakeDaemons, samplePrimaryStatus, sampleSecondaryStatus } from "../src/serve/testing.js";
import { browserSkipReason, HeadlessBrowser } from "./tools/browser.js";
import { REPO_ROOT } from "./tools/run.js";

const SCREENSHOT = join(REPO_ROOT, ".cache", "test-screenshots", "status-page.png");

/** Each VM section's fields (data-field → data-value, or its text without one), its checkpoint rows and its error. */
const READ_PAGE = `(() => {
  const vms = {};
  for (const s of document.querySelectorAll("section[data-vm]")) {
    const fields = {};
    for (const e of s.querySelectorAll("[data-field]")) {
      if (e.closest("tr[data-checkpoint]")) continue;
      fields[e.dataset.field] = e.dataset.value !== undefined ? e.dataset.value : e.textContent;
    }
    const rows = [...s.querySelectorAll("tr[data-checkpoint]")].map((tr) => {
      const r = {};
      for (const e of tr.querySelectorAll("[data-field]")) r[e.dataset.field] = e.dataset.value;
      return r;
    });
    const error = s.querySelector('[data-field="error"]');
    vms[s.dataset.vm] = { fields, rows, error: error ? error.textContent : null };
  }
  return { count: document.getElementById("vms").dataset.count, vms };
})()`;

interface PageVm {
  fields: Record<string, string>;
  rows: Record<string, string>[];
  error: string | null;
}

interface StatusJson {
  vms: { name: string; status?: Record<string, unknown>; error?: string; history: { checkpoint: number; secondsAgo: number; pauseMs: number }[] }[];
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === "object" && v !== null ? (v as Json) : {});
const shown = (v: unknown): string => (v === undefined || v === null ? "" : String(v));

test("status page: each VM's numbers match /api/status; a silent daemon shows its error; the page follows a change", { skip: browserSkipReason(), timeout: 90_000 }, async (t) => {
  const daemons = await FakeDaemons.start();
  t.after(() => daemons.close());
  const primary = samplePrimaryStatus("guest", "10.77.1.2:8002");
  await daemons.add("guest", () => primary);
  await daemons.add("standby", () => sampleSecondaryStatus("standby", "10.77.1.1:41234"));
  await daemons.addSilent("stuck");
  const server = await ServeServer.listen({ host: "127.0.0.1", port: 0, dir: daemons.dir, statusTimeoutMs: 300, pollMs: 250 });
  t.after(() => server.close());
  const browser = await HeadlessBrowser.launch();
  t.after(() => browser.close());

  const page = await browser.open(server.url);
  await page.waitFor(`document.querySelectorAll("section[data-vm]").length === 3`);
  const seen = (await page.evaluate(READ_PAGE)) as { count: string; vms: Record<string, PageVm> };
  const json = (await (await fetch(new URL("/api/status", server.url))).json()) as StatusJson;
  assert.equal(seen.count, String(json.vms.length));

  for (const vm of json.vms) {
    const p = seen.vms[vm.name];
    assert.ok(p, `${vm.name} has a section`);
    if (!vm.status) {
      assert.equal(vm.name, "stuck");
      assert.equal(p.error, vm.error);
      assert.match(p.error ?? "", /no answer within 300 ms/);
      continue;
    }
    const st = vm.status;
    const r = obj(st.replication);
    const lease = st.replication && obj(r).lease ? obj(r.lease) : undefined;
    const held = st.heldOutput ? obj(st.heldOutput) : undefined;
    const expected: Record<string, string> = {
      mode: shown(r.mode),
      state: shown(st.state),
      engine: shown(st.engine),
      peer: shown(r.peer),
      replication: shown(r.replication),
      "ms-since-heard": shown(r.msSinceHeard),
      checkpoints: shown(r.checkpoints),
      "last-pause-ms": shown(r.lastPauseMs),
      "p99-pause-ms": shown(r.p99PauseMs),
      "held-frames": shown(held?.heldFrames),
      "held-bytes": shown(held?.heldBytes),
      "lease-held": shown(lease?.held),
      "lease-valid-ms": shown(lease?.validForMs),
      "loop-delay-max-ms": shown(obj(st.eventLoopDelay).maxMs),
      "failover-count": shown(Array.isArray(r.failovers) ? r.failovers.length : 0),
    };
    for (const [f, want] of Object.entries(expected)) assert.equal(p.fields[f], want, `${vm.name}: ${f}`);
    // The rate over the last minute and the chart's checkpoints, from the history the JSON holds.
    const lastMinute = vm.history.filter((h) => h.secondsAgo <= 60).length;
    assert.equal(p.fields["checkpoints-last-minute"], String(lastMinute), `${vm.name}: checkpoints in the last minute`);
    assert.equal(p.fields.rate, (lastMinute / 60).toFixed(2), `${vm.name}: rate`);
    assert.equal(p.fields.chart, String(vm.history.filter((h) => h.secondsAgo <= 300).length), `${vm.name}: checkpoints in the chart`);
    // The last checkpoints, newest first, with the flow and offset that diverged.
    const recent = (Array.isArray(r.recentCheckpoints) ? r.recentCheckpoints : []).map(obj).slice(-10).reverse();
    assert.deepEqual(
      p.rows.map((row) => [row.checkpoint, row.reason, row["pause-ms"], row.pages, row.flow ?? "", row.offset ?? ""]),
      recent.map((c) => [shown(c.checkpoint), shown(c.reason), shown(c.pauseMs), shown(c.pages), shown(obj(c.divergence).flow), shown(obj(c.divergence).offset)]),
      `${vm.name}: last checkpoints`,
    );
    for (const [reason, n] of Object.entries(obj(r.checkpointReasons))) if (typeof n === "number" && n > 0) assert.equal(p.fields[`reason-${reason}`], String(n), `${vm.name}: reason ${reason}`);
    if (held?.lastDivergence) assert.equal(p.fields["last-divergence-flow"], shown(obj(held.lastDivergence).flow));
  }
  // The sample's numbers made it to the page (not just "equal to nothing").
  assert.equal(seen.vms.guest?.fields.checkpoints, "4");
  assert.equal(seen.vms.guest?.rows[0]?.offset, "1234");
  assert.equal(seen.vms.guest?.fields["checkpoints-last-minute"], "2");
  assert.equal(seen.vms.standby?.fields.mode, "secondary");

  // The page follows the daemons: a checkpoint later, it shows 5 within a poll or two.
  const replication = obj(primary.replication);
  replication.checkpoints = 5;
  await page.waitFor(`document.querySelector('section[data-vm="guest"] [data-field="checkpoints"]').dataset.value === "5"`, 5000);

  await page.screenshot(SCREENSHOT);
  const png = readFileSync(SCREENSHOT);
  assert.ok(existsSync(SCREENSHOT) && png.length > 10_000, `a screenshot at ${SCREENSHOT}`);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG");
  assert.deepEqual(page.errors, [], "the page logged no error");
});
