/**
 * Save/restore and live migration figures (issue: VM state): save and
 * restore time and size; migration total time and downtime (the source's
 * final pause to the destination's answer) idle and under redis-benchmark
 * load; pages/s and MB/s of round 0. Goals: downtime <= 100 ms idle, total
 * <= 2 s for a 128 MiB guest.
 *
 *   npm run build && node dist/bench/migration.js [--memory MiB] [--runs N]
 *
 * Writes bench/results/migration-<timestamp>.json. Not a test. Needs root and the guest image.
 */
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { createDataDisk } from "../guest/mkdisk.js";
import { runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { writeResult } from "./results.js";
import { positiveIntArg } from "./args.js";
import { BenchLab } from "./bench-lab.js";
import { parseMigrate, startMigrateReceive, type MigrationFigure } from "./lab-session.js";

const LAB = labTopology("cbmig");
const [H1, H2] = LAB.hosts;

async function main(): Promise<void> {
  const memoryMiB = positiveIntArg("--memory", 128);
  const runs = positiveIntArg("--runs", 3);
  const pair = await BenchLab.open({ prefix: LAB.prefix, name: "bmig" });
  const { work, key } = pair;
  try {
    const disk = join(work, "data.img");
    await createDataDisk(disk, 64);
    // v86 loads the initrd at 64 MiB: 128 MiB holds it with room to spare.
    const f = writeGuestConfig({ dir: work, name: "bmig", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:40", bridge: LAB.hostBridge, disk, memoryMiB });
    await pair.must("create", ["create", f.cfg]);

    // Save / restore.
    const saves: { saveMs: number; restoreMs: number; fileMiB: number }[] = [];
    for (let i = 0; i < runs; i++) {
      const file = join(work, `s${i}.save`);
      const t0 = Date.now();
      await pair.must("save", ["save", "bmig", file]);
      const saveMs = Date.now() - t0;
      const t1 = Date.now();
      await pair.must("restore", ["restore", file]);
      saves.push({ saveMs, restoreMs: Date.now() - t1, fileMiB: statSync(file).size / 2 ** 20 });
      rmSync(file);
    }

    // Live migration back and forth, idle then under load.
    const migrations: MigrationFigure[] = [];
    let from = H1;
    let to = H2;
    for (const load of ["idle", "redis-benchmark"] as const) {
      for (let i = 0; i < runs; i++) {
        const toIp = to === H1 ? LAB.replIps[0] : LAB.replIps[1];
        const recv = await startMigrateReceive({ env: pair.env, host: to, listenIp: toIp, keyFile: key });
        const bench =
          load === "redis-benchmark"
            ? runIn(LAB.namespaces.client, "redis-benchmark", ["-h", LAB.guestIp, "-t", "set,get", "-n", "20000", "-c", "8", "-q"], { timeoutMs: 300_000 })
            : undefined;
        if (bench) await new Promise((r) => setTimeout(r, 1000)); // let load build up before the migration starts
        const m = await pair.must("migrate", ["migrate", "bmig", toIp, "--key-file", key], from);
        migrations.push(parseMigrate(m.stdout, load));
        await recv.closed;
        if (bench) {
          const b = await bench;
          if (b.code !== 0) throw new Error(`redis-benchmark during migration failed: ${b.stderr}`);
        }
        [from, to] = [to, from];
      }
    }
    await pair.colo(from, ["destroy", "bmig"]);

    writeResult("migration", {
      guestMemoryMiB: memoryMiB,
      goals: { downtimeIdleMs: 100, totalMs: 2000, forMemoryMiB: 128 },
      figures: { saveRestore: saves, migrations },
    });
  } finally {
    await pair.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
