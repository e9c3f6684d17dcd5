import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadVmConfig, parseVmConfig } from "./load.js";
import { guestCmdline } from "./cmdline.js";
import { formatMac, generatedMac } from "./vif.js";
import { ConfigError, type ConfigErrorCode } from "./errors.js";
import { DEFAULT_ENGINE, ENGINE_NAMES, isEngineName } from "./engines.js";

/** Config files in these tests are named as a user would type them. */
const FILE = "vms/guest.cfg";
const DIR = resolve("vms");

const MINIMAL = "name = 'guest'\nkernel = 'vmlinuz'\n";

function fails(text: string, line: number | undefined, code: ConfigErrorCode, message: string): void {
  assert.throws(
    () => parseVmConfig(text, FILE),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
      assert.equal(e.file, FILE);
      assert.equal(e.line, line, e.message);
      assert.equal(e.code, code, e.message);
      const where = line === undefined ? `${FILE}: ` : `${FILE}:${line}: `;
      assert.ok(e.message.startsWith(where), `"${e.message}" does not start with "${where}"`);
      assert.ok(e.message.includes(message), `"${e.message}" lacks "${message}"`);
      return true;
    },
  );
}

test("a file with every key, multi-line lists, both quote styles, comments and CRLF", () => {
  const text = [
    "# A COLO-protected guest",
    'name = "web-1"',
    "memory = 0x100   # 256 MiB, hex like xl",
    "vcpus = 1",
    'engine = "emu"',
    "kernel = '/boot/vmlinuz'",
    'ramdisk = "images/initrd.img"',
    "cmdline = 'console=ttyS0 root=/dev/sda'",
    "disk = [",
    "  'format=raw, vdev=hdb, access=ro, target=images/b.img',",
    "  # the system disk",
    '  "colo, colo-host=10.0.0.2, colo-port=9000, colo-export=web-1-hda, active-disk=act.img, hidden-disk=hid.img, vdev=hda, target=images/a,1.img",',
    "]",
    "vif = [ 'bridge=colobr, ip=10.77.0.20, forwarddev=eth1' ]",
    "on_poweroff = 'preserve'; on_reboot = 'destroy'",
    'on_crash = "restart"',
    "",
  ].join("\r\n");
  const config = parseVmConfig(text, FILE);
  assert.equal(config.name, "web-1");
  assert.equal(config.memoryMiB, 256);
  assert.equal(config.vcpus, 1);
  assert.equal(config.engine, "emu");
  assert.equal(config.kernel, "/boot/vmlinuz");
  assert.equal(config.ramdisk, join(DIR, "images/initrd.img"));
  assert.equal(config.cmdline, "console=ttyS0 root=/dev/sda");
  assert.equal(config.source, resolve(FILE));
  assert.deepEqual(
    config.disks.map((d) => [d.vdev, d.target, d.access, d.at.line]),
    [
      ["hda", join(DIR, "images/a,1.img"), "rw", 12],
      ["hdb", join(DIR, "images/b.img"), "ro", 10],
    ],
  );
  assert.deepEqual(config.disks[0]?.colo, {
    host: "10.0.0.2",
    port: 9000,
    exportName: "web-1-hda",
    activeDisk: join(DIR, "act.img"),
    hiddenDisk: join(DIR, "hid.img"),
  });
  assert.equal(config.vifs.length, 1);
  const vif = config.vifs[0];
  assert.ok(vif !== undefined);
  assert.deepEqual(vif.mac, generatedMac("web-1", 0));
  assert.deepEqual([vif.bridge, vif.ip, vif.forwarddev, vif.model, vif.at.line], ["colobr", "10.77.0.20/24", "eth1", "virtio", 14]);
  assert.deepEqual([config.onPoweroff, config.onReboot, config.onCrash], ["preserve", "destroy", "restart"]);
});

test("defaults", () => {
  const config = parseVmConfig(MINIMAL, FILE);
  assert.deepEqual(config, {
    name: "guest",
    memoryMiB: 128,
    vcpus: 1,
    engine: "emu",
    accel: "auto",
    kernel: join(DIR, "vmlinuz"),
    cmdline: "",
    disks: [],
    vifs: [],
    onPoweroff: "destroy",
    onReboot: "restart",
    onCrash: "destroy",
    source: resolve(FILE),
  });
});

test("numbers may be quoted, as in xl; extra is the synonym of cmdline", () => {
  const config = parseVmConfig(MINIMAL + "memory = '160'\nvcpus = \"1\"\nextra = 'quiet'\n", FILE);
  assert.equal(config.memoryMiB, 160);
  assert.equal(config.cmdline, "quiet");
});

test("the example guest.cfg loads", async () => {
  const path = fileURLToPath(new URL("../../../examples/guest.cfg", import.meta.url));
  const config = await loadVmConfig(path);
  const examples = resolve(path, "..");
  assert.equal(config.name, "guest");
  assert.equal(config.memoryMiB, 160);
  assert.equal(config.kernel, resolve(examples, "../.cache/guest/vmlinuz"));
  assert.equal(config.ramdisk, resolve(examples, "../.cache/guest/initrd.img"));
  assert.equal(config.cmdline, "console=ttyS0 quiet colo.ip=10.77.0.10/24");
  assert.equal(config.disks[0]?.target, resolve(examples, "../.cache/vm/guest-data.img"));
  assert.equal(formatMac(config.vifs[0]?.mac ?? new Uint8Array()), "00:16:3e:4c:00:10");
  assert.equal(config.vifs[0]?.bridge, "colobr");
  assert.equal(guestCmdline(config), `${config.cmdline} colo.hostname=guest`);
});

test("the example guest-qemu.cfg loads", async () => {
  const path = fileURLToPath(new URL("../../../examples/guest-qemu.cfg", import.meta.url));
  const config = await loadVmConfig(path);
  const examples = resolve(path, "..");
  assert.deepEqual([config.name, config.memoryMiB, config.engine, config.accel], ["guest-qemu", 256, "qemu", "auto"]);
  assert.equal(config.kernel, resolve(examples, "../.cache/guest-amd64/vmlinux"));
  assert.equal(config.ramdisk, resolve(examples, "../.cache/guest-amd64/initrd.img"));
  assert.equal(config.disks[0]?.target, resolve(examples, "../.cache/vm/guest-qemu-data.img"));
  assert.equal(config.vifs[0]?.model, "virtio");
  assert.equal(guestCmdline(config), `${config.cmdline} colo.hostname=guest-qemu`);
});

test("loadVmConfig resolves paths against the file's folder and names the file as given", async () => {
  const dir = await mkdtemp(join(tmpdir(), "colo-config-"));
  try {
    const path = join(dir, "a.cfg");
    await writeFile(path, MINIMAL + "memory = 12x\n");
    await assert.rejects(loadVmConfig(path), (e: unknown) => e instanceof ConfigError && e.message === `${path}:3: memory: expected a whole number of MiB, got "12x"`);
    await writeFile(path, MINIMAL);
    assert.equal((await loadVmConfig(path)).kernel, join(dir, "vmlinuz"));
    const missing = join(dir, "missing.cfg");
    await assert.rejects(
      loadVmConfig(missing),
      (e: unknown) => e instanceof ConfigError && e.code === "io" && e.line === undefined && e.message.startsWith(`${missing}: cannot read`),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("guestCmdline adds colo.ip= from the vif unless the cmdline has it", () => {
  const { vifs } = parseVmConfig(MINIMAL + "vif = [ 'ip=10.77.0.10' ]\n", FILE);
  const base = { cmdline: "", vifs };
  assert.equal(guestCmdline(base), "colo.ip=10.77.0.10/24");
  assert.equal(guestCmdline({ ...base, cmdline: "console=ttyS0 " }), "console=ttyS0 colo.ip=10.77.0.10/24");
  assert.equal(guestCmdline({ ...base, cmdline: "colo.ip=10.0.0.9/8 quiet" }), "colo.ip=10.0.0.9/8 quiet");
  assert.equal(guestCmdline({ ...base, cmdline: "xcolo.ip=1 quiet" }), "xcolo.ip=1 quiet colo.ip=10.77.0.10/24");
  assert.equal(guestCmdline({ ...base, vifs: [] }), "");
});

test("guestCmdline adds colo.gw= from gatewayip= and colo.hostname= from the name", () => {
  const config = parseVmConfig(MINIMAL + "vif = [ 'ip=10.77.0.10, gatewayip=10.77.0.1' ]\n", FILE);
  const line = guestCmdline(config);
  assert.match(line, /(^| )colo\.ip=10\.77\.0\.10\/24( |$)/);
  assert.match(line, /(^| )colo\.gw=10\.77\.0\.1( |$)/);
  assert.match(line, new RegExp(`(^| )colo\\.hostname=${config.name}( |$)`));
  assert.equal(guestCmdline({ ...config, cmdline: "colo.hostname=x colo.gw=1.2.3.4" }), "colo.hostname=x colo.gw=1.2.3.4 colo.ip=10.77.0.10/24");
});

test("up to 4 disks", () => {
  const disks = ["hdd", "hdc", "hdb", "hda"].map((v) => `'vdev=${v}, target=${v}.img'`).join(", ");
  const config = parseVmConfig(MINIMAL + `disk = [ ${disks} ]\n`, FILE);
  assert.deepEqual(
    config.disks.map((d) => d.vdev),
    ["hda", "hdb", "hdc", "hdd"],
  );
});

/** [title, text, line, code, message fragment] */
const errors: [string, string, number | undefined, ConfigErrorCode, string][] = [
  ["memory not a number", MINIMAL + "memory = 12x\n", 3, "bad-value", `vms/guest.cfg:3: memory: expected a whole number of MiB, got "12x"`],
  ["memory quoted not a number", MINIMAL + "memory = '12 MiB'\n", 3, "bad-value", `memory: expected a whole number of MiB, got "12 MiB"`],
  ["memory negative", MINIMAL + "memory = -5\n", 3, "bad-value", `memory: expected a whole number of MiB, got "-5"`],
  ["memory leading zero", MINIMAL + "memory = 0128\n", 3, "bad-value", "a leading 0 is ambiguous"],
  ["memory too small", MINIMAL + "memory = 8\n", 3, "bad-value", "memory: 8 MiB is out of range (16..65536)"],
  ["memory too large", MINIMAL + "memory = 65537\n", 3, "bad-value", "memory: 65537 MiB is out of range (16..65536)"],
  ["memory a list", MINIMAL + "memory = [ 128 ]\n", 3, "bad-value", "memory: expected a single value, got a list"],
  ["vcpus 2", MINIMAL + "vcpus = 2\n", 3, "unsupported-value", "vcpus: only 1 vCPU is supported for now (got 2)"],
  ["vcpus 0", MINIMAL + "vcpus = 0\n", 3, "bad-value", "vcpus: expected at least 1 vCPU, got 0"],
  ["name missing", "kernel = 'k'\n", undefined, "missing-key", "vms/guest.cfg: name: required key is missing"],
  ["kernel missing", "name = 'g'\n", undefined, "missing-key", "kernel: required key is missing"],
  ["name with a blank", "name = 'gu est'\nkernel = 'k'\n", 1, "bad-value", `name: expected 1..64 characters from A-Z a-z 0-9 _ . -`],
  ["name too long", `name = '${"a".repeat(65)}'\nkernel = 'k'\n`, 1, "bad-value", "name: expected 1..64 characters"],
  ["name starting with -", "name = '-g'\nkernel = 'k'\n", 1, "bad-value", `got "-g"`],
  ["empty kernel", "name = 'g'\nkernel = ''\n", 2, "bad-value", "kernel: expected a file path, got an empty string"],
  ["unknown key, near typo", MINIMAL + "\nmemroy = 128\n", 4, "unknown-key", `memroy: unknown key (did you mean "memory"?)`],
  ["unknown key, dash for underscore", MINIMAL + "on-crash = 'destroy'\n", 3, "unknown-key", `on-crash: unknown key (did you mean "on_crash"?)`],
  ["unknown key, far from any", MINIMAL + "frobnicate = 1\n", 3, "unknown-key", "frobnicate: unknown key"],
  ["xl key we do not support", MINIMAL + "maxmem = 512\n", 3, "unsupported-key", "maxmem: an xl key colo does not support"],
  ["duplicate key", MINIMAL + "memory = 128\n\nmemory = 160\n", 5, "duplicate-key", "memory: duplicate key (first set at vms/guest.cfg:3)"],
  ["extra and cmdline", MINIMAL + "cmdline = 'a'\nextra = 'b'\n", 4, "conflicting-keys", "extra: extra and cmdline (at vms/guest.cfg:3) are synonyms: give one"],
  ["control character in the cmdline", MINIMAL + 'extra = "a\\nb"\n', 3, "bad-value", "extra: control characters are not allowed"],
  ["cmdline too long", MINIMAL + `extra = '${"x".repeat(2048)}'\n`, 3, "bad-value", "x86 Linux takes at most 2047"],
  ["engine xen", MINIMAL + "engine = 'xen'\n", 3, "unsupported-value", `vms/guest.cfg:3: engine: "xen" is not an engine of colo (engines: "emu", "qemu")`],
  ["engine kvm (no such engine: the VM would run on emu)", MINIMAL + "\nengine = 'kvm'\n", 4, "unsupported-value", `vms/guest.cfg:4: engine: "kvm" is not an engine of colo (engines: "emu", "qemu")`],
  ["accel without engine qemu", MINIMAL + "accel = 'tcg'\n", 3, "unsupported-value", `vms/guest.cfg:3: accel: accel= chooses QEMU's accelerator; engine "emu" has none`],
  ["qemu: more RAM than one mapping", MINIMAL + "engine = 'qemu'\nmemory = 8192\n", 4, "unsupported-value", `vms/guest.cfg:4: memory: 8192 MiB: the qemu engine maps guest RAM whole, at most 4096 MiB`],
  ["qemu: an ne2k NIC", MINIMAL + "engine = 'qemu'\nvif = [ 'model=ne2k' ]\n", 4, "unsupported-value", `vms/guest.cfg:4: vif: vif[0]: model=ne2k is the emu engine's; the qemu engine's NIC is virtio-net`],
  ["accel unknown", MINIMAL + "engine = 'qemu'\naccel = 'hvf'\n", 4, "bad-value", `vms/guest.cfg:4: accel: expected auto, kvm, tcg, got "hvf"`],
  ["engine in another case", MINIMAL + "engine = 'EMU'\n", 3, "unsupported-value", `engine: "EMU" is not an engine of colo`],
  ["on_crash coredump-destroy", MINIMAL + "on_crash = 'coredump-destroy'\n", 3, "unsupported-value", `vms/guest.cfg:3: on_crash: "coredump-destroy" is not supported: colo writes no core dumps`],
  ["on_crash coredump-restart", MINIMAL + "\n\non_crash = 'coredump-restart'\n", 5, "unsupported-value", `vms/guest.cfg:5: on_crash: "coredump-restart" is not supported`],
  ["on_reboot rename-restart", MINIMAL + "on_reboot = 'rename-restart'\n", 3, "unsupported-value", `on_reboot: "rename-restart" is not supported: a VM's name is its identity`],
  ["on_poweroff soft-reset", MINIMAL + "on_poweroff = 'soft-reset'\n", 3, "unsupported-value", `on_poweroff: "soft-reset" is not supported: there is no soft reset`],
  ["on_reboot unknown", MINIMAL + "on_reboot = 'reboot'\n", 3, "bad-value", `on_reboot: expected destroy, restart or preserve, got "reboot"`],
  ["disk not a list", MINIMAL + "disk = 'vdev=hda, target=d.img'\n", 3, "bad-value", "disk: expected a list like [ '...' ], got a single value"],
  ["disk item a number", MINIMAL + "disk = [ 5 ]\n", 3, "bad-value", "disk[0]: expected a quoted spec string, got 5"],
  ["disk error on the item's own line", MINIMAL + "disk = [\n  'vdev=hda, target=a.img',\n  'vdev=sda, target=b.img',\n]\n", 5, "unsupported-value", `disk[1]: vdev: only IDE disks hda, hdb, hdc and hdd are supported (got "sda")`],
  ["five disks", MINIMAL + "disk = [ 'vdev=hda,target=a', 'vdev=hdb,target=b', 'vdev=hdc,target=c',\n 'vdev=hdd,target=d',\n 'vdev=hda,target=e' ]\n", 5, "too-many", "disk: at most 4 disks are supported (IDE hda..hdd), got 5"],
  ["two disks on one vdev", MINIMAL + "disk = [ 'vdev=hda, target=a.img',\n 'vdev=hda, target=b.img' ]\n", 4, "bad-value", "disk[1]: vdev: hda is already used by disk[0] (line 3)"],
  ["one image twice", MINIMAL + "disk = [ 'vdev=hda, target=a.img', 'vdev=hdb, target=./a.img' ]\n", 3, "bad-value", "disk[1]: target: " + join(DIR, "a.img") + " is already used by disk[0]"],
  ["a gap in the vdevs", MINIMAL + "disk = [ 'vdev=hda, target=a.img',\n 'vdev=hdc, target=c.img' ]\n", 4, "bad-value", "disk[1]: vdev: hdc without hdb: disks must fill hda, hdb, hdc, hdd in order"],
  ["a lone hdb", MINIMAL + "disk = [ 'vdev=hdb, target=b.img' ]\n", 3, "bad-value", "disk[0]: vdev: hdb without hda"],
  ["two vifs", MINIMAL + "vif = [ 'bridge=a',\n 'bridge=b' ]\n", 4, "too-many", "vif: only 1 vif is supported for now, got 2"],
  ["vif error carries its line", MINIMAL + "vif = [\n  'mac=ff:ff:ff:ff:ff:ff'\n]\n", 4, "bad-value", "vif[0]: mac: ff:ff:ff:ff:ff:ff is a multicast address"],
  ["syntax errors come through", MINIMAL + "vif = [ 'a'\n", 3, "unterminated-list", "vif: unterminated list"],
];

for (const [title, text, line, code, fragment] of errors) {
  test(`config error: ${title}`, () => fails(text, line, code, fragment));
}

test("engine: every name in ENGINE_NAMES loads, and nothing else does", () => {
  for (const name of ENGINE_NAMES) assert.equal(parseVmConfig(MINIMAL + `engine = '${name}'\n`, FILE).engine, name);
  assert.equal(parseVmConfig(MINIMAL, FILE).engine, DEFAULT_ENGINE);
  assert.ok(isEngineName(DEFAULT_ENGINE));
  assert.equal(isEngineName("kvm"), false);
  const q = parseVmConfig(MINIMAL + "engine = 'qemu'\naccel = 'kvm'\n", FILE);
  assert.deepEqual([q.engine, q.accel], ["qemu", "kvm"]);
});
