import { Command, CommanderError, Option } from "commander";
import { DEFAULT_DEMO_ENGINE } from "../demo/demo-guest.js";
import { ENGINE_NAMES, type EngineName } from "../config/engines.js";
import { ConfigError } from "../config/errors.js";
import { ControlError } from "../api/control-client.js";
import { KeyError } from "../channel/key.js";
import { ChannelError } from "../channel/secure-channel.js";
import { attachConsole } from "./console.js";
import { createVm } from "./create.js";
import { destroyVm, listVms, pauseVm, statusVm, unpauseVm } from "./control-verbs.js";
import { imageArchArg, imageBuild, diskCreate, type ImageArch } from "./image.js";
import { labVerb } from "./lab.js";
import { streamVerify } from "./stream.js";
import { CliError } from "./output.js";
import { keygen, migrateReceive, migrateVm, restoreVm, saveVm } from "./migrate.js";
import { checkpointVm, coloVm, diskHashesVm, failoverVm, remusVm, withReprotectOptions } from "./replication.js";
import { DEFAULT_MAX_CHECKPOINT_INTERVAL_MS, DEFAULT_MIN_CHECKPOINT_GAP_MS } from "../colo/checkpoint-policy.js";
import { DEFAULT_COMPARE_TIMEOUT_MS } from "../colo/net/comparator.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { DEFAULT_ARBITER_PORT } from "../api/arbiter.js";
import { parseArbiterAddress } from "../api/arbiter-address.js";
import { runArbiter } from "./arbiter.js";
import { DEFAULT_SERVE_HOST, DEFAULT_SERVE_PORT } from "../serve/address.js";
import { addCheckCommand } from "./check.js";
import { DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_PEER_TIMEOUT_MS } from "../colo/heartbeat.js";
import { DEFAULT_MIGRATION_PORT } from "../api/migration.js";
import { DEFAULT_KEY_FILE } from "../channel/key.js";
import { parseEndpoint } from "../channel/secure-channel.js";
import { arbiterAddress, givenFlags, nonNegativeInt, positiveInt } from "./arg-types.js";
import { addProtectCommand } from "./protect.js";

/**
 * `colo`: xl-like verbs over per-VM daemons (docs/cli.md). Commander parses
 * arguments (docs/dependencies.md says why); each verb lives in its own file.
 */
export function program(): Command {
  const p = new Command("colo")
    .description("non-stop virtual machines by COLO (coarse-grained lock-stepping)")
    // One line and a pointer, not the whole help: the error is what the user has to read.
    .showHelpAfterError("(add --help for the command's options)")
    .exitOverride();

  p.command("create")
    .description("start a VM from an xl.cfg-style file; returns when the guest's service is up")
    .argument("<cfg>", "VM configuration file")
    .option("--timeout <s>", "seconds to wait for the guest's service", positiveInt, 300)
    .action(async (cfg: string, o: { timeout: number }) => createVm(cfg, o));

  p.command("list")
    .description("list running VMs")
    .option("--json", "machine-readable output")
    .action(async (o: { json?: boolean }) => listVms(o.json === true));

  p.command("console")
    .description("attach to a VM's serial console (Ctrl-] detaches)")
    .argument("<name>")
    .option("--no-replay", "do not print the recent console output first")
    .action(async (name: string, o: { replay: boolean }) => attachConsole(name, o));

  p.command("pause").description("pause a VM's vCPU").argument("<name>").action(async (name: string) => pauseVm(name));
  p.command("unpause")
    .description("resume a paused VM")
    .argument("<name>")
    .option("--force", "also a VM a migration left paused with its handover undecided (only if the destination does not run it)")
    .action(async (name: string, o: { force?: boolean }) => unpauseVm(name, o.force === true));
  p.command("destroy")
    .description("stop a VM and release its TAP, disks and daemon")
    .argument("<name>")
    .action(async (name: string) => destroyVm(name));
  p.command("status")
    .description("a VM's status as JSON")
    .argument("<name>")
    .action(async (name: string) => {
      process.stdout.write(JSON.stringify(await statusVm(name), null, 2) + "\n");
    });

  p.command("save")
    .description("save a VM's state to a file (like xl save: the VM is destroyed unless -c)")
    .argument("<name>")
    .argument("<file>")
    .option("-c, --continue", "leave the VM running after saving")
    .action(async (name: string, file: string, o: { continue?: boolean }) => saveVm(name, file, o));

  p.command("restore")
    .description("start a VM from a save file; it continues where it was saved")
    .argument("<file>")
    .option("--timeout <s>", "seconds to wait", positiveInt, 120)
    .action(async (file: string, o: { timeout: number }) => restoreVm(file, o));

  const migrate = p.command("migrate");
  migrate
    .description("live-migrate a VM to a host running colo migrate-receive")
    .argument("<name>")
    .argument("<host[:port]>", `destination (default port ${DEFAULT_MIGRATION_PORT})`)
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .option("-C, --config <cfg>", "send this config instead of the one the VM was created from (like xl migrate -C)")
    .option("--colo", "start COLO compare-mode replication to a secondary (colo migrate-receive --colo) instead of migrating")
    .option("--compare-timeout <ms>", "with --colo: a PVM packet the SVM has not matched after this long forces a checkpoint", positiveInt, DEFAULT_COMPARE_TIMEOUT_MS)
    .option("--checkpoint-min-gap <ms>", "with --colo: at most one checkpoint per this many ms", nonNegativeInt, DEFAULT_MIN_CHECKPOINT_GAP_MS)
    .option("--checkpoint-max-interval <ms>", "with --colo: a checkpoint at least this often", positiveInt, DEFAULT_MAX_CHECKPOINT_INTERVAL_MS)
    .option("--peer-timeout <ms>", "with --colo: silence from the secondary that counts as its loss", positiveInt, DEFAULT_PEER_TIMEOUT_MS)
    .option("--heartbeat <ms>", "with --colo: heartbeat interval toward the secondary", positiveInt, DEFAULT_HEARTBEAT_INTERVAL_MS)
    .option(
      "--arbiter <addr[:port]|etcd://host:port,...>",
      `with --colo: hold this arbiter's lease; run alone after losing the secondary only with it. Without --colo: settle a handover whose answer is lost through it (docs/migration.md). colo arbiter (default port ${DEFAULT_ARBITER_PORT}) or an etcd cluster`,
      arbiterAddress,
    )
    .option("--lease <ms>", "with --arbiter: lease time-to-live", positiveInt, DEFAULT_LEASE_TTL_MS)
    .option("--full-disk-sync", "with --colo: compare the disks by hash at the start, whatever their activity logs say (docs/operations.md \"Re-protection\")");
  withReprotectOptions(migrate, "primary")
    .action(
      async (
        name: string,
        dest: string,
        o: {
          keyFile: string;
          config?: string;
          colo?: boolean;
          reprotect?: string;
          reprotectConfig?: string;
          compareTimeout: number;
          checkpointMinGap: number;
          checkpointMaxInterval: number;
          peerTimeout: number;
          heartbeat: number;
          arbiter?: string;
          lease: number;
          fullDiskSync?: boolean;
        },
      ) => {
        if (!o.colo) {
          // Replication options on a plain migration are a mistake, not something to ignore.
          const stray = givenFlags(migrate, ["compareTimeout", "checkpointMinGap", "checkpointMaxInterval", "peerTimeout", "heartbeat", "lease", "reprotect", "reprotectConfig", "fullDiskSync"]);
          if (stray.length > 0) throw new CliError(`${stray.join(", ")} only with --colo`, 2);
        }
        return o.colo
          ? coloVm(name, dest, {
              keyFile: o.keyFile,
              ...(o.config ? { config: o.config } : {}),
              peerTimeout: o.peerTimeout,
              heartbeat: o.heartbeat,
              compareTimeout: o.compareTimeout,
              minGap: o.checkpointMinGap,
              maxInterval: o.checkpointMaxInterval,
              ...(o.arbiter ? { arbiter: o.arbiter, lease: o.lease } : {}),
              ...(o.reprotect !== undefined ? { reprotect: o.reprotect } : {}),
              ...(o.reprotectConfig !== undefined ? { reprotectConfig: o.reprotectConfig } : {}),
              ...(o.fullDiskSync ? { fullDiskSync: true } : {}),
            })
          : migrateVm(name, dest, o);
      },
    );

  const receive = p.command("migrate-receive");
  receive
    .description("wait for one incoming live migration; returns when the VM runs here")
    .option("--listen <addr[:port]>", "address to listen on", `0.0.0.0:${DEFAULT_MIGRATION_PORT}`)
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .option("--timeout <s>", "seconds to wait for the migration to arrive", positiveInt, 600)
    .option("--detach", "return once listening; the daemon carries on")
    .option("--colo", "become the secondary of a replication session (colo remus, or colo migrate --colo) instead of receiving a migration")
    .option("--peer-timeout <ms>", "with --colo: silence from the primary that counts as its loss", positiveInt, DEFAULT_PEER_TIMEOUT_MS)
    .option("--heartbeat <ms>", "with --colo: heartbeat interval toward the primary", positiveInt, DEFAULT_HEARTBEAT_INTERVAL_MS)
    .option("--arbiter <addr[:port]|etcd://host:port,...>", `with --colo: take over only with this arbiter's lease (colo arbiter, default port ${DEFAULT_ARBITER_PORT}; or an etcd cluster)`, arbiterAddress)
    .option("--lease <ms>", "with --arbiter: lease time-to-live", positiveInt, DEFAULT_LEASE_TTL_MS);
  withReprotectOptions(receive, "secondary").action(
    async (o: { listen: string; keyFile: string; timeout: number; detach?: boolean; colo?: boolean; peerTimeout: number; heartbeat: number; arbiter?: string; lease: number; reprotect?: string; reprotectConfig?: string }) =>
      migrateReceive(o),
  );

  addProtectCommand(p);
  addCheckCommand(p);

  const remus = p.command("remus");
  remus
    .description("protect a VM with checkpointed replication to a secondary (Remus mode: output held until its checkpoint is acknowledged)")
    .argument("<name>")
    .argument("<host[:port]>", `the secondary, running colo migrate-receive --colo (default port ${DEFAULT_MIGRATION_PORT})`)
    .option("--interval <ms>", "checkpoint interval", positiveInt, 100)
    .option("--peer-timeout <ms>", "silence from the secondary that counts as its loss", positiveInt, DEFAULT_PEER_TIMEOUT_MS)
    .option("--heartbeat <ms>", "heartbeat interval toward the secondary", positiveInt, DEFAULT_HEARTBEAT_INTERVAL_MS)
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .option("--arbiter <addr[:port]|etcd://host:port,...>", `hold this arbiter's lease (colo arbiter, default port ${DEFAULT_ARBITER_PORT}; or an etcd cluster); run alone after losing the secondary only with it`, arbiterAddress)
    .option("--lease <ms>", "with --arbiter: lease time-to-live", positiveInt, DEFAULT_LEASE_TTL_MS)
    .option("--full-disk-sync", "compare the disks by hash at the start, whatever their activity logs say (docs/operations.md \"Re-protection\")");
  withReprotectOptions(remus, "primary").action(
    async (name: string, dest: string, o: { interval: number; peerTimeout: number; heartbeat: number; keyFile: string; arbiter?: string; lease: number; reprotect?: string; reprotectConfig?: string; fullDiskSync?: boolean }) =>
      remusVm(name, dest, o),
  );

  p.command("demo")
    .description("the whole mission in one command: a protected Redis guest (COLO compare mode, disk replication, arbiter), load, the primary host killed, takeover, every acknowledged write verified")
    .option("--kill-after <s>", "seconds of load before the primary dies: a random moment between s and 2s", positiveInt, 10)
    .option("--after <s>", "seconds the survivor serves before the client stops", positiveInt, 8)
    .addOption(new Option("--engine <name>", "the engine both VMs run on").choices(ENGINE_NAMES).default(DEFAULT_DEMO_ENGINE))
    .action(async (o: { killAfter: number; after: number; engine: EngineName }) => {
      const { runDemo } = await import("../demo/demo.js");
      const code = await runDemo({ killAfterMinS: o.killAfter, killAfterMaxS: 2 * o.killAfter, afterS: o.after, engine: o.engine, write: (t) => process.stdout.write(t) });
      if (code !== 0) throw new CliError("the demo lost acknowledged writes", 1);
    });

  p.command("arbiter")
    .description("run the lease arbiter both hosts of a protected pair consult before acting alone (foreground; Ctrl-C ends it)")
    .option("--listen <addr[:port]>", "address to listen on", `0.0.0.0:${DEFAULT_ARBITER_PORT}`)
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .action(async (o: { listen: string; keyFile: string }) => runArbiter(o));

  p.command("serve")
    .description("serve this host's VMs: Prometheus metrics at /metrics, a live status page at / (foreground; Ctrl-C ends it)")
    .option("--listen <addr[:port]>", `address to listen on (default port ${DEFAULT_SERVE_PORT})`, `${DEFAULT_SERVE_HOST}:${DEFAULT_SERVE_PORT}`)
    .action(async (o: { listen: string }) => {
      const { serveVerb } = await import("./serve.js");
      await serveVerb(o);
    });

  p.command("failover")
    .description("operator takeover: a secondary takes over now; a primary stops replicating and runs unprotected")
    .argument("<name>")
    .action(async (name: string) => failoverVm(name));

  p.command("checkpoint")
    .description("take a checkpoint now on a replicating primary (reason: operator)")
    .argument("<name>")
    .option("--verify-disks", "also hash the disk images while the VM is paused in the checkpoint (compare with colo disk-hashes on the secondary)")
    .action(async (name: string, o: { verifyDisks?: boolean }) => checkpointVm(name, o));

  p.command("disk-hashes")
    .description("SHA-256 of each disk image as this host holds it (a secondary: the primary's disk as of the last checkpoint)")
    .argument("<name>")
    .action(async (name: string) => diskHashesVm(name));

  p.command("keygen")
    .description(`write a new shared key for migration (default ${DEFAULT_KEY_FILE})`)
    .argument("[file]")
    .option("--force", "replace an existing key file")
    .action((file: string | undefined, o: { force?: boolean }) => keygen(file, o));

  const image = p.command("image").description("the guest image");
  image
    .command("build")
    .description("build (or reuse) the guest kernels + initrds from Debian packages: i386 (emu engine), amd64 (qemu engine)")
    .option("--arch <arch>", "i386 | amd64 | all", imageArchArg, "all" as ImageArch)
    .option("--force", "rebuild even if the cached image matches the package versions")
    .option("--cache <dir>", "cache folder (default: <repo>/.cache/guest, amd64 in <repo>/.cache/guest-amd64; with --arch all, amd64 goes to <dir>-amd64)")
    .action(async (o: { force?: boolean; cache?: string; arch: ImageArch }) => imageBuild(o));

  const stream = p.command("stream").description("the colo stream format (docs/specs/stream.md)");
  stream
    .command("verify")
    .description("check a save image, or a captured migration or replication stream, against docs/specs/stream.md and summarise it")
    .argument("<file>", "the stream; - reads standard input")
    .option("--json", "the summary (or the error) as JSON on stdout")
    .option("--back-channel", "the file is a secondary's back channel, not an image stream")
    .action(async (file: string, o: { json?: boolean; backChannel?: boolean }) => streamVerify(file, o));

  p.command("disk-create")
    .description("create an empty ext4 data disk (raw image)")
    .argument("<path>")
    .option("--size <MiB>", "size in MiB", positiveInt, 64)
    .option("--force", "overwrite an existing file")
    .action(async (path: string, o: { size: number; force?: boolean }) => diskCreate(path, o));

  p.command("lab")
    .description("the lab's network namespaces: a LAN bridge, a client, two hosts")
    .argument("<action>", "up | down | status")
    .action(async (action: string) => labVerb(action));

  p.command("__vm-daemon", { hidden: true })
    .option("--config <cfg>")
    .option("--restore <file>")
    .option("--incoming <addr>")
    .option("--key-file <file>")
    .option("--accept-timeout <s>", "", positiveInt, 600)
    .option("--colo-peer-timeout <ms>")
    .option("--colo-heartbeat <ms>")
    .option("--colo-arbiter <addr>")
    .option("--colo-lease <ms>")
    .option("--colo-reprotect <host:port>")
    .option("--colo-reprotect-config <cfg>")
    .action(
      async (o: {
        config?: string;
        restore?: string;
        incoming?: string;
        keyFile?: string;
        acceptTimeout: number;
        coloPeerTimeout?: string;
        coloHeartbeat?: string;
        coloArbiter?: string;
        coloLease?: string;
        coloReprotect?: string;
        coloReprotectConfig?: string;
      }) => {
      const { vmDaemonMain } = await import("../api/vm-daemon.js");
      if (o.config) await vmDaemonMain({ kind: "boot", configPath: o.config });
      else if (o.restore) await vmDaemonMain({ kind: "restore", file: o.restore });
      else if (o.incoming && o.keyFile)
        await vmDaemonMain({
          kind: "incoming",
          listen: parseEndpoint(o.incoming, DEFAULT_MIGRATION_PORT),
          keyFile: o.keyFile,
          timeoutMs: o.acceptTimeout * 1000,
          ...(o.coloPeerTimeout
            ? {
                colo: {
                  timeoutMs: Number(o.coloPeerTimeout),
                  heartbeatMs: Number(o.coloHeartbeat ?? DEFAULT_HEARTBEAT_INTERVAL_MS),
                  ...(o.coloArbiter ? { arbiter: parseArbiterAddress(o.coloArbiter), leaseMs: Number(o.coloLease ?? DEFAULT_LEASE_TTL_MS) } : {}),
                  ...(o.coloReprotect ? { reprotect: { ...parseEndpoint(o.coloReprotect, DEFAULT_MIGRATION_PORT), ...(o.coloReprotectConfig ? { configPath: o.coloReprotectConfig } : {}) } } : {}),
                },
              }
            : {}),
        });
      else throw new CliError("__vm-daemon: give --config, --restore or --incoming with --key-file");
    },
    );

  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof CliError) {
      process.stderr.write(`colo: ${err.message}\n`);
      if (err.detail) process.stderr.write(err.detail + "\n");
      return err.exitCode;
    }
    if (err instanceof ConfigError || err instanceof ControlError || err instanceof KeyError || err instanceof ChannelError) {
      process.stderr.write(`colo: ${err.message}\n`);
      return 1;
    }
    const e = err as Error;
    process.stderr.write(`colo: ${e.message ?? String(err)}\n`);
    if (process.env.COLO_DEBUG) process.stderr.write(`${e.stack ?? ""}\n`);
    return 1;
  }
}

const isDaemon = process.argv[2] === "__vm-daemon";
void main(process.argv).then((code) => {
  // The daemon keeps running on its own event loop; every other verb exits.
  if (!isDaemon || code !== 0) process.exit(code);
});
