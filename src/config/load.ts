/**
 * Meaning, validation and defaults of the top-level keys of a VM config
 * (docs/config.md is the user's reference; keep both in step).
 */

import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { DiskConfig, EngineName, LifecycleAction, VifConfig, VmConfig } from "./types.js";
import { ConfigError, quote } from "./errors.js";
import { parseConfigText, type RawAtom, type RawEntry, type RawList } from "./parse.js";
import { IDE_VDEVS, parseDiskSpec } from "./disk.js";
import { parseVifSpec } from "./vif.js";
import { didYouMean } from "./suggest.js";
import type { SpecContext } from "./spec.js";
import { ACCEL_NAMES, DEFAULT_ENGINE, ENGINE_NAMES, isEngineName, type AccelName } from "./engines.js";

const KNOWN_KEYS = [
  "name",
  "memory",
  "vcpus",
  "engine",
  "accel",
  "kernel",
  "ramdisk",
  "extra",
  "cmdline",
  "disk",
  "vif",
  "on_poweroff",
  "on_reboot",
  "on_crash",
] as const;
type Key = (typeof KNOWN_KEYS)[number];

/** xl.cfg(5) keys a copied Xen config may carry, and why they are refused here. */
const UNSUPPORTED_XL_KEYS: Readonly<Record<string, string>> = {
  type: "every VM boots a Linux kernel directly (kernel=, ramdisk=); there is no guest type to choose",
  builder: "every VM boots a Linux kernel directly (kernel=, ramdisk=); there is no builder to choose",
  bootloader: "no bootloader: give kernel= and ramdisk=",
  root: 'put "root=..." in extra=',
  maxmem: "no ballooning: the guest has memory= MiB",
  maxvcpus: "only 1 vCPU is supported for now",
  cpus: "vCPU pinning is not supported",
  uuid: "VMs are identified by name=",
  pool: "CPU pools are not supported",
  on_watchdog: "not supported",
  on_soft_reset: "not supported",
  serial: "the serial console is always the colo process's console",
  vnc: "there is no display",
  vfb: "there is no display",
  sdl: "there is no display",
  pci: "PCI passthrough cannot be replicated",
  usb: "USB is not supported",
  usbdevice: "USB is not supported",
  vtpm: "not supported",
  p9: "not supported",
  channel: "not supported",
  device_model_version: "there is no separate device model",
  device_model_override: "there is no separate device model",
  acpi: "not configurable",
  apic: "not configurable",
  pae: "not configurable",
  localtime: "not configurable",
};

const LIFECYCLE_ACTIONS: readonly LifecycleAction[] = ["destroy", "restart", "preserve"];
/** xl.cfg(5) actions colo does not implement, and why (docs/config.md "Lifecycle"). */
const UNSUPPORTED_ACTIONS: Readonly<Record<string, string>> = {
  "rename-restart": "a VM's name is its identity on a host (run files, control socket); there is no renamed copy",
  "coredump-destroy": "colo writes no core dumps; use preserve and keep the stopped guest with `colo save`",
  "coredump-restart": "colo writes no core dumps; use preserve and keep the stopped guest with `colo save`",
  "soft-reset": "there is no soft reset (a Xen HVM feature)",
};

/** Engine-neutral bounds of memory=, in MiB; an engine checks its own limits (emu: > 64 MiB + initrd). */
export const MEMORY_MIN_MIB = 16;
export const MEMORY_MAX_MIB = 65536;
/** The qemu engine's limit: guest RAM is one mapping of at most 4 GiB (koffi's view limit, ENGINE-NOTES.md). */
export const QEMU_MEMORY_MAX_MIB = 4096;
export const MEMORY_DEFAULT_MIB = 128;

/** The most IDE disks (hda..hdd) and NICs a VM has for now. */
export const MAX_DISKS = 4;
export const MAX_VIFS = 1;

/** x86 COMMAND_LINE_SIZE (arch/x86/include/asm/setup.h) is 2048 bytes with the NUL. */
export const CMDLINE_MAX_BYTES = 2047;

const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

function isKnownKey(key: string): key is Key {
  return (KNOWN_KEYS as readonly string[]).includes(key);
}

class Validator {
  private readonly entries = new Map<Key, RawEntry>();
  private readonly baseDir: string;

  constructor(
    private readonly file: string,
    rawEntries: RawEntry[],
  ) {
    this.baseDir = dirname(resolve(file));
    for (const entry of rawEntries) {
      const key = entry.key;
      if (!isKnownKey(key)) {
        const why = UNSUPPORTED_XL_KEYS[key];
        if (why !== undefined) {
          throw this.error("unsupported-key", entry.line, key, `an xl key colo does not support: ${why}`);
        }
        throw this.error("unknown-key", entry.line, key, `unknown key${didYouMean(key, KNOWN_KEYS)}`);
      }
      this.entries.set(key, entry);
    }
  }

  private error(
    code: ConstructorParameters<typeof ConfigError>[0],
    line: number | undefined,
    key: string | undefined,
    detail: string,
    related?: { file: string; line: number },
  ): ConfigError {
    return new ConfigError(code, this.file, line, key, detail, related);
  }

  private atom(key: Key): RawAtom | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.value.kind !== "atom") {
      throw this.error("bad-value", entry.line, key, "expected a single value, got a list");
    }
    return entry.value;
  }

  private list(key: Key): RawList | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.value.kind !== "list") {
      throw this.error("bad-value", entry.line, key, `expected a list like [ '...' ], got a single value`);
    }
    return entry.value;
  }

  private required(key: Key): RawAtom {
    const value = this.atom(key);
    if (value === undefined) throw this.error("missing-key", undefined, key, "required key is missing");
    return value;
  }

  private wholeNumber(key: Key, value: RawAtom, unit: string): number {
    const text = value.text.trim();
    const expected = `expected a whole number${unit}, got ${quote(value.text)}`;
    if (/^0[0-9]+$/.test(text)) {
      throw this.error("bad-value", value.line, key, `${expected} (a leading 0 is ambiguous: xl reads it as octal)`);
    }
    let n: number;
    if (/^(0|[1-9][0-9]*)$/.test(text)) n = Number(text);
    else if (/^0[xX][0-9a-fA-F]+$/.test(text)) n = parseInt(text.slice(2), 16);
    else throw this.error("bad-value", value.line, key, expected);
    if (!Number.isSafeInteger(n)) throw this.error("bad-value", value.line, key, `${expected} (too large)`);
    return n;
  }

  /** A string value; rejects control characters (they never belong in a name, path or command line). */
  private text(key: Key, value: RawAtom): string {
    if (/[\x00-\x1f\x7f]/.test(value.text)) {
      throw this.error("bad-value", value.line, key, `control characters are not allowed, got ${quote(value.text)}`);
    }
    return value.text;
  }

  private path(key: Key, value: RawAtom): string {
    const text = this.text(key, value);
    if (text.trim() === "") throw this.error("bad-value", value.line, key, "expected a file path, got an empty string");
    return resolve(this.baseDir, text);
  }

  private name(): string {
    const value = this.required("name");
    const name = value.text;
    if (!NAME_PATTERN.test(name)) {
      throw this.error(
        "bad-value",
        value.line,
        "name",
        `expected 1..64 characters from A-Z a-z 0-9 _ . - (not starting with "." or "-"), got ${quote(name)}`,
      );
    }
    return name;
  }

  private memory(): number {
    const value = this.atom("memory");
    if (value === undefined) return MEMORY_DEFAULT_MIB;
    const mib = this.wholeNumber("memory", value, " of MiB");
    if (mib < MEMORY_MIN_MIB || mib > MEMORY_MAX_MIB) {
      throw this.error("bad-value", value.line, "memory", `${mib} MiB is out of range (${MEMORY_MIN_MIB}..${MEMORY_MAX_MIB})`);
    }
    return mib;
  }

  private vcpus(): 1 {
    const value = this.atom("vcpus");
    if (value === undefined) return 1;
    const n = this.wholeNumber("vcpus", value, "");
    if (n === 1) return 1;
    if (n === 0) throw this.error("bad-value", value.line, "vcpus", "expected at least 1 vCPU, got 0");
    throw this.error("unsupported-value", value.line, "vcpus", `only 1 vCPU is supported for now (got ${n})`);
  }

  private engine(): EngineName {
    const value = this.atom("engine");
    if (value === undefined) return DEFAULT_ENGINE;
    if (isEngineName(value.text)) return value.text;
    const known = ENGINE_NAMES.map((n) => quote(n)).join(", ");
    throw this.error("unsupported-value", value.line, "engine", `${quote(value.text)} is not an engine of colo (engines: ${known})`);
  }

  /**
   * What an engine cannot run, refused here with file:line rather than when
   * the VM starts: the qemu engine's guest RAM is one file we map whole
   * (at most 4 GiB: src/sys/shared-memory.ts), and its NIC is virtio-net.
   */
  private engineLimits(engine: EngineName, memoryMiB: number, vifs: readonly VifConfig[]): void {
    if (engine !== "qemu") return;
    if (memoryMiB > QEMU_MEMORY_MAX_MIB) {
      throw this.error("unsupported-value", this.atom("memory")?.line, "memory", `${memoryMiB} MiB: the qemu engine maps guest RAM whole, at most ${QEMU_MEMORY_MAX_MIB} MiB`);
    }
    for (const [i, vif] of vifs.entries()) {
      if (vif.model !== "virtio") {
        throw this.error("unsupported-value", vif.at.line, "vif", `vif[${i}]: model=${vif.model} is the emu engine's; the qemu engine's NIC is virtio-net (model=virtio)`);
      }
    }
  }

  private accel(engine: EngineName): AccelName {
    const value = this.atom("accel");
    if (value === undefined) return "auto";
    const accel = ACCEL_NAMES.find((a) => a === value.text);
    if (accel === undefined) throw this.error("bad-value", value.line, "accel", `expected ${ACCEL_NAMES.join(", ")}, got ${quote(value.text)}`);
    if (engine !== "qemu") throw this.error("unsupported-value", value.line, "accel", `accel= chooses QEMU's accelerator; engine ${quote(engine)} has none (set engine = "qemu")`);
    return accel;
  }

  private cmdline(): string {
    const extra = this.entries.get("extra");
    const cmdline = this.entries.get("cmdline");
    if (extra !== undefined && cmdline !== undefined) {
      const [first, second] = extra.line <= cmdline.line ? [extra, cmdline] : [cmdline, extra];
      throw this.error(
        "conflicting-keys",
        second.line,
        second.key,
        `${second.key} and ${first.key} (at ${this.file}:${first.line}) are synonyms: give one`,
        { file: this.file, line: first.line },
      );
    }
    const key: Key = extra !== undefined ? "extra" : "cmdline";
    const value = this.atom(key);
    if (value === undefined) return "";
    const text = this.text(key, value);
    if (Buffer.byteLength(text) > CMDLINE_MAX_BYTES) {
      throw this.error(
        "bad-value",
        value.line,
        key,
        `the kernel command line is ${Buffer.byteLength(text)} bytes; x86 Linux takes at most ${CMDLINE_MAX_BYTES}`,
      );
    }
    return text;
  }

  private lifecycle(key: "on_poweroff" | "on_reboot" | "on_crash", fallback: LifecycleAction): LifecycleAction {
    const value = this.atom(key);
    if (value === undefined) return fallback;
    const action = LIFECYCLE_ACTIONS.find((a) => a === value.text);
    if (action !== undefined) return action;
    const choices = "destroy, restart or preserve";
    const why = UNSUPPORTED_ACTIONS[value.text];
    if (why !== undefined) {
      throw this.error("unsupported-value", value.line, key, `${quote(value.text)} is not supported: ${why} (use ${choices})`);
    }
    throw this.error("bad-value", value.line, key, `expected ${choices}, got ${quote(value.text)}`);
  }

  private specs(key: "disk" | "vif", max: number, what: string): { item: RawAtom; ctx: SpecContext }[] {
    const list = this.list(key);
    if (list === undefined) return [];
    const over = list.items[max];
    if (over !== undefined) {
      throw this.error("too-many", over.line, key, `${what}, got ${list.items.length}`);
    }
    return list.items.map((item, index) => {
      if (!item.quoted) {
        throw this.error("bad-value", item.line, `${key}[${index}]`, `expected a quoted spec string, got ${item.text}`);
      }
      return { item, ctx: { file: this.file, line: item.line, key: `${key}[${index}]`, baseDir: this.baseDir } };
    });
  }

  /**
   * Disks sorted by vdev. The vdevs must fill hda, hdb, ... without a gap:
   * engines take disks by position and the guest names them sda, sdb, ... in
   * that order, so a lone hdb would silently become the guest's sda.
   */
  private disks(): DiskConfig[] {
    const parsed: { disk: DiskConfig; ctx: SpecContext }[] = [];
    const owner = (disk: DiskConfig): string => `${parsed.find((p) => p.disk === disk)?.ctx.key ?? "disk"} (line ${disk.at.line})`;
    for (const { item, ctx } of this.specs("disk", MAX_DISKS, `at most ${MAX_DISKS} disks are supported (IDE hda..hdd)`)) {
      const disk = parseDiskSpec(item.text, ctx);
      const sameVdev = parsed.find((p) => p.disk.vdev === disk.vdev);
      if (sameVdev !== undefined) {
        throw this.error("bad-value", ctx.line, ctx.key, `vdev: ${disk.vdev} is already used by ${owner(sameVdev.disk)}`);
      }
      const sameTarget = parsed.find((p) => p.disk.target === disk.target);
      if (sameTarget !== undefined) {
        throw this.error("bad-value", ctx.line, ctx.key, `target: ${disk.target} is already used by ${owner(sameTarget.disk)}`);
      }
      parsed.push({ disk, ctx });
    }
    parsed.sort((a, b) => IDE_VDEVS.indexOf(a.disk.vdev) - IDE_VDEVS.indexOf(b.disk.vdev));
    parsed.forEach(({ disk, ctx }, slot) => {
      const expected = IDE_VDEVS[slot];
      if (disk.vdev !== expected) {
        throw this.error(
          "bad-value",
          ctx.line,
          ctx.key,
          `vdev: ${disk.vdev} without ${expected ?? "the disks before it"}: disks must fill ${IDE_VDEVS.join(", ")} in order (the guest names them sda, sdb, ... by position)`,
        );
      }
    });
    return parsed.map((p) => p.disk);
  }

  private vifs(name: string): VifConfig[] {
    const specs = this.specs("vif", MAX_VIFS, `only ${MAX_VIFS} vif is supported for now`);
    return specs.map(({ item, ctx }, index) => parseVifSpec(item.text, ctx, name, index));
  }

  build(): VmConfig {
    const name = this.name();
    const memoryMiB = this.memory();
    const vcpus = this.vcpus();
    const engine = this.engine();
    const accel = this.accel(engine);
    const kernel = this.path("kernel", this.required("kernel"));
    const ramdiskValue = this.atom("ramdisk");
    const cmdline = this.cmdline();
    const vifs = this.vifs(name);
    this.engineLimits(engine, memoryMiB, vifs);
    const config: VmConfig = {
      name,
      memoryMiB,
      vcpus,
      engine,
      accel,
      kernel,
      cmdline,
      disks: this.disks(),
      vifs,
      onPoweroff: this.lifecycle("on_poweroff", "destroy"),
      onReboot: this.lifecycle("on_reboot", "restart"),
      onCrash: this.lifecycle("on_crash", "destroy"),
      source: resolve(this.file),
    };
    if (ramdiskValue !== undefined) config.ramdisk = this.path("ramdisk", ramdiskValue);
    return config;
  }
}

/**
 * Parses and validates config text. `file` names the file in messages (as
 * given, e.g. "guest.cfg") and, resolved against the working directory,
 * anchors relative paths. Throws ConfigError.
 */
export function parseVmConfig(text: string, file: string): VmConfig {
  const raw = parseConfigText(text, file);
  return new Validator(file, raw.entries).build();
}

/** Reads and parses a config file. Throws ConfigError (code "io" when unreadable). */
export async function loadVmConfig(path: string): Promise<VmConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConfigError("io", path, undefined, undefined, `cannot read the config file: ${reason}`);
  }
  return parseVmConfig(text, path);
}
