import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { guestInitScriptPath } from "./build.js";
import {
  CMDLINE_KEYS,
  GUEST_DATA_DEVICES,
  GUEST_FAILED_MARKER,
  GUEST_READY_MARKER,
  GUEST_SHELL_PROMPT,
  MEMTEST_FAIL_MARKER,
  MEMTEST_MAX_KIB,
  MEMTEST_PASS_MARKER,
  guestKernelCmdline,
  parseMemtestSize,
} from "./contract.js";
import { GUEST_TARGETS, MODULE_SET_NAMES } from "./target.js";

const execFileAsync = promisify(execFile);

test("kernel command line from options", () => {
  assert.equal(guestKernelCmdline(), "console=ttyS0 quiet");
  assert.equal(
    guestKernelCmdline({ ip: "10.77.0.10/24", gateway: "10.77.0.1", hostname: "pvm", appendfsync: "always", quiet: false, extra: ["loglevel=3"] }),
    "console=ttyS0 colo.ip=10.77.0.10/24 colo.gw=10.77.0.1 colo.hostname=pvm colo.appendfsync=always loglevel=3",
  );
  assert.equal(guestKernelCmdline({ memtest: "16M" }), "console=ttyS0 quiet colo.memtest=16M");
});

test("kernel command line rejects what the init could not parse", () => {
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.10" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.256/24" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.1/33" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ gateway: "gw" }), /colo\.gw/);
  assert.throws(() => guestKernelCmdline({ hostname: "a b" }), /host name/);
  assert.throws(() => guestKernelCmdline({ extra: ["a b"] }), /white space/);
  assert.throws(() => guestKernelCmdline({ memtest: "16" }), /colo\.memtest must be digits then K or M, 4K to 64M, got "16"/);
  assert.throws(() => guestKernelCmdline({ memtest: "65M" }), /colo\.memtest/);
});

/** Sizes and what parseMemtestSize (and init.sh's memtest_kib) make of them, in KiB. */
const MEMTEST_SIZES: Array<[string, number | undefined]> = [
  ["16M", 16384],
  ["8M", 8192],
  ["4K", 4],
  ["512K", 512],
  ["64M", 65536],
  ["65536K", 65536],
  ["65537K", undefined],
  ["65M", undefined],
  ["3K", undefined],
  ["0M", undefined],
  ["016M", undefined],
  ["16", undefined],
  ["16m", undefined],
  ["16G", undefined],
  ["16MB", undefined],
  ["M", undefined],
  ["", undefined],
  ["-1M", undefined],
  ["1.5M", undefined],
  ["1234567K", undefined],
  ["99999999999999999999M", undefined],
];

test("colo.memtest sizes: digits then K or M, 4K to 64M", () => {
  for (const [value, kib] of MEMTEST_SIZES) assert.equal(parseMemtestSize(value), kib, value);
  assert.equal(MEMTEST_MAX_KIB, 65536);
});

/** The text of a shell function `name() { ... }` in init.sh. */
function shellFunction(init: string, name: string): string {
  const m = new RegExp(`^${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}\\n`, "m").exec(init);
  assert.ok(m !== null, `init.sh defines ${name}()`);
  return m[0];
}

test("init.sh's memtest_kib accepts exactly what parseMemtestSize accepts", async () => {
  const init = await readFile(guestInitScriptPath(), "utf8");
  const fn = shellFunction(init, "memtest_kib");
  const script = `${fn}\nfor v in "$@"; do if memtest_kib "$v"; then :; else echo x; fi; done\n`;
  const values = MEMTEST_SIZES.map(([v]) => v);
  const { stdout } = await execFileAsync("sh", ["-c", script, "sh", ...values]);
  const got = stdout.split("\n").slice(0, -1);
  assert.deepEqual(got, MEMTEST_SIZES.map(([, kib]) => (kib === undefined ? "x" : String(kib))));
});

test("init.sh's memtest_loop: one PASS line per clean pass, FAIL with the end of the output, stops on a non-test failure; each report after an empty line", async () => {
  const init = await readFile(guestInitScriptPath(), "utf8");
  const dir = await mkdtemp(join(tmpdir(), "colo-memtest-"));
  try {
    const log = join(dir, "memtest.log");
    const fn = shellFunction(init, "memtest_loop").replaceAll("/tmp/memtest.log", log);
    // A fake memtester: passes twice, then finds bad memory (4), then cannot start (1).
    const fake = [
      "#!/bin/sh",
      `[ "$1 $2" = "8M 1" ] || { echo "bad arguments: $*"; exit 9; }`,
      `n=$(cat "${dir}/count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n >"${dir}/count"`,
      `bs=$(printf '\\b')`,
      `case $n in`,
      `1 | 2) printf 'Loop 1/1:\\n  Random Value        :  %s-%s\\\\%s ok\\n\\nDone.\\n' "$bs" "$bs" "$bs"; exit 0 ;;`,
      `3) printf '  Compare XOR         : %s-%s\\n' "$bs" "$bs"; echo "FAILURE: 0x1 != 0x3 at offset 0x00000010." >&2; printf '\\nDone.\\n'; exit 4 ;;`,
      `*) echo "failed to lock memory" >&2; exit 1 ;;`,
      `esac`,
      "",
    ].join("\n");
    await writeFile(join(dir, "memtester"), fake);
    await writeFile(join(dir, "renice"), "#!/bin/sh\nexit 0\n");
    await chmod(join(dir, "memtester"), 0o755);
    await chmod(join(dir, "renice"), 0o755);
    // oom_score_adj is the test shell's own (raising it needs no privilege).
    const { stdout } = await execFileAsync("sh", ["-c", `${fn}\nmemtest_loop 8M; echo "returned $?"\n`], {
      env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? "/usr/bin:/bin"}` },
    });
    assert.equal(
      stdout,
      [
        "",
        `${MEMTEST_PASS_MARKER} 1`,
        "",
        `${MEMTEST_PASS_MARKER} 2`,
        "",
        `${MEMTEST_FAIL_MARKER} 3 4`,
        "memtester 3:   Compare XOR         : ",
        "memtester 3: FAILURE: 0x1 != 0x3 at offset 0x00000010.",
        "memtester 3: Done.",
        "",
        `${MEMTEST_FAIL_MARKER} 4 1`,
        "memtester 4: failed to lock memory",
        "returned 1",
        "",
      ].join("\n"),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("init.sh speaks the contract: keys, markers, prompt, module sets", async () => {
  const init = await readFile(guestInitScriptPath(), "utf8");
  for (const key of Object.values(CMDLINE_KEYS)) assert.ok(init.includes(`${key}=*)`), `init.sh parses ${key}`);
  assert.ok(init.includes(`echo "${GUEST_READY_MARKER}"`));
  assert.ok(init.includes(`echo "${GUEST_FAILED_MARKER} $*"`));
  assert.ok(init.includes(`PS1='${GUEST_SHELL_PROMPT}'`));
  assert.ok(init.includes(`printf '\\n%s\\n' "${MEMTEST_PASS_MARKER} $n"`));
  assert.ok(init.includes(`printf '\\n%s\\n%s\\n' "${MEMTEST_FAIL_MARKER} $n $rc" "$log"`));
  for (const set of MODULE_SET_NAMES) assert.ok(init.includes(`load_modules ${set}`), `init.sh loads ${set}`);
  for (const target of GUEST_TARGETS) {
    for (const set of Object.keys(target.moduleSets)) assert.ok(init.includes(`load_modules ${set}`), `init.sh loads ${target.arch}'s set ${set}`);
    assert.ok(GUEST_DATA_DEVICES.includes(target.dataDevice), `${target.arch}'s data disk ${target.dataDevice} is one init.sh looks for`);
  }
  // data_disk() looks for exactly GUEST_DATA_DEVICES, in that order, and /init mounts what it found.
  assert.ok(shellFunction(init, "data_disk").includes(`for dev in ${GUEST_DATA_DEVICES.join(" ")}; do`));
  assert.ok(init.includes(`if disk=$(data_disk); then`) && init.includes(`mount -t ext4 -o noatime "$disk" /data`));
});

test("init.sh's load_modules: a set the image has no file for is skipped; loaded modules are skipped; a failed insmod is reported", async (t) => {
  const init = await readFile(guestInitScriptPath(), "utf8");
  const dir = await mkdtemp(join(tmpdir(), "colo-modules-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fn = shellFunction(init, "load_modules")
    .replaceAll("/etc/colo/modules/", `${dir}/sets/`)
    .replaceAll("/sys/module/", `${dir}/sysmod/`)
    .replaceAll("/lib/modules/", `${dir}/ko/`)
    .replaceAll("/tmp/insmod.err", `${dir}/insmod.err`);
  await mkdir(join(dir, "sets"));
  await mkdir(join(dir, "sysmod", "virtio_ring"), { recursive: true });
  await writeFile(join(dir, "sets", "disk"), "virtio_ring\nvirtio_blk\n\next4\n");
  await writeFile(join(dir, "sets", "bad"), "nosuch\n");
  // A fake insmod: logs its argument, fails for "nosuch".
  await writeFile(join(dir, "insmod"), `#!/bin/sh\necho "$1" >>'${dir}/insmod.log'\ncase "$1" in *nosuch*) echo "unknown symbol" >&2; exit 1 ;; esac\n`);
  await chmod(join(dir, "insmod"), 0o755);
  const script = `fail() { echo "FAIL $*"; }\n${fn}\nload_modules ne2k; echo "ne2k $?"\nload_modules disk; echo "disk $?"\nload_modules bad; echo "bad $?"\n`;
  const { stdout } = await execFileAsync("sh", ["-c", script], { env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? "/usr/bin:/bin"}` } });
  assert.equal(stdout, "ne2k 0\ndisk 0\nFAIL insmod nosuch: unknown symbol \nbad 1\n");
  assert.equal(await readFile(join(dir, "insmod.log"), "utf8"), [`${dir}/ko/virtio_blk.ko`, `${dir}/ko/ext4.ko`, `${dir}/ko/nosuch.ko`, ""].join("\n"));
});

/** A block device node of this host, for data_disk's `-b` test (loop devices exist on Debian hosts). */
async function hostBlockDevice(): Promise<string | undefined> {
  for (const candidate of ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/zram0"]) {
    if (await stat(candidate).then((s) => s.isBlockDevice(), () => false)) return candidate;
  }
  return undefined;
}

test("init.sh's data_disk finds /dev/sda (emu) or /dev/vda (qemu), sda first, nothing when there is no disk", async (t) => {
  const block = await hostBlockDevice();
  if (block === undefined) {
    t.skip("no block device node on this host to stand for the guest's disk");
    return;
  }
  const init = await readFile(guestInitScriptPath(), "utf8");
  const dir = await mkdtemp(join(tmpdir(), "colo-disk-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fn = shellFunction(init, "data_disk").replaceAll("/sys/block/", `${dir}/sys/block/`).replaceAll("/dev/", `${dir}/dev/`);
  await mkdir(join(dir, "sys", "block"), { recursive: true });
  await mkdir(join(dir, "dev"));
  const dataDisk = async (): Promise<string> => (await execFileAsync("sh", ["-c", `${fn}\nif data_disk; then :; else echo "none $?"; fi\n`])).stdout;

  assert.equal(await dataDisk(), "none 1\n");
  await mkdir(join(dir, "sys", "block", "vda"));
  await symlink(block, join(dir, "dev", "vda"));
  assert.equal(await dataDisk(), `${dir}/dev/vda\n`);
  await mkdir(join(dir, "sys", "block", "sda"));
  await symlink(block, join(dir, "dev", "sda"));
  assert.equal(await dataDisk(), `${dir}/dev/sda\n`);
});

test("init.sh is valid POSIX shell (sh -n)", async () => {
  await execFileAsync("sh", ["-n", guestInitScriptPath()]);
});
