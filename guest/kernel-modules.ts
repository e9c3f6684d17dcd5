/**
 * The kernel modules the guest loads, grouped in sets (each target's
 * `moduleSets`, target.ts) that /init loads with busybox `insmod` (no
 * modprobe, no modules.dep: the initrd holds only these modules, flat, as
 * /lib/modules/<name>.ko, and /etc/colo/modules/<set> lists each set in
 * load order).
 *
 * A set names only what the guest needs (the NIC driver, the disk driver,
 * the file system); the load order is computed from the kernel being
 * packaged: the closure over each module's `depends=` and `softdep=pre:`,
 * topologically sorted (dependencies first). So a Debian kernel update that
 * adds or moves a dependency changes the order, not the build's success; a
 * module that is missing fails the build naming it and who needs it.
 */

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { GuestBuildError } from "./errors.js";
import { canonicalModuleName, readModInfo } from "./modinfo.js";
import { run } from "./run.js";
import { MODULE_SET_NAMES, type ModuleSetName, type ModuleSets } from "./target.js";

/** What the order computation needs to know of one module. */
export interface ModuleFacts {
  /** Canonical name ("ne2k_pci"). */
  name: string;
  /** `depends=`, canonical names. */
  depends: readonly string[];
  /** `softdep=pre:` names, canonical; each a module name or an alias. */
  softdepsPre: readonly string[];
}

/** The kernel's modules as the order computation sees them (a directory of .ko files, or synthetic data in tests). */
export interface ModuleCatalog {
  /** The kernel release, for messages. */
  readonly release: string;
  /** The module called `name` (canonical), or undefined if the kernel ships no such module file. */
  facts(name: string): Promise<ModuleFacts | undefined>;
  /** Is `name` built into the kernel (modules.builtin)? Then nothing needs loading. */
  isBuiltin(name: string): boolean;
  /** Canonical names of the modules that declare `alias=<alias>`. */
  providers(alias: string): Promise<string[]>;
}

/**
 * Among several modules providing one alias (crc32c: crc32c_generic and
 * crc32c_intel), the one that works on every CPU: the kernel's convention
 * names the portable C implementation `<algorithm>_generic`.
 */
function chooseProvider(alias: string, providers: readonly string[], who: string, release: string): string {
  if (providers.length === 1) return providers[0] as string;
  const generic = providers.filter((p) => p.endsWith("_generic"));
  if (generic.length === 1) return generic[0] as string;
  throw new GuestBuildError(
    "MODULE_INVALID",
    `${who}'s soft dependency ${alias} is provided by ${providers.length === 0 ? "no module" : providers.join(", ")} in kernel ${release}; ` +
      `cannot choose one (name the module in the target's moduleSets, target.ts)`,
  );
}

/**
 * The load order of `wanted` (module names): every module they need by
 * `depends=` or `softdep=pre:`, each once, each after everything it needs.
 * Built-in modules are left out. Fails on a missing module (naming the chain
 * that needs it) and on a dependency cycle.
 */
export async function moduleLoadOrder(setName: string, wanted: readonly string[], catalog: ModuleCatalog): Promise<string[]> {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting: string[] = [];

  const visit = async (name: string, neededBy: readonly string[]): Promise<void> => {
    if (done.has(name)) return;
    if (visiting.includes(name)) {
      throw new GuestBuildError("MODULE_INVALID", `module set ${setName}: dependency cycle ${[...visiting.slice(visiting.indexOf(name)), name].join(" -> ")} (kernel ${catalog.release})`);
    }
    if (catalog.isBuiltin(name)) {
      done.add(name);
      return;
    }
    const facts = await catalog.facts(name);
    if (facts === undefined) {
      const chain = neededBy.length === 0 ? "listed in the set" : `needed by ${neededBy.join(" <- ")}`;
      throw new GuestBuildError("MODULE_INVALID", `module set ${setName}: kernel ${catalog.release} has no module ${name} (${chain}), neither as a file nor built in`);
    }
    visiting.push(name);
    const softdeps: string[] = [];
    for (const dep of facts.softdepsPre) {
      if (catalog.isBuiltin(dep) || (await catalog.facts(dep)) !== undefined) softdeps.push(dep);
      else softdeps.push(chooseProvider(dep, await catalog.providers(dep), name, catalog.release));
    }
    for (const dep of [...facts.depends, ...softdeps]) await visit(dep, [name, ...neededBy]);
    visiting.pop();
    done.add(name);
    order.push(name);
  };

  for (const w of wanted) await visit(canonicalModuleName(w), []);
  return order;
}

export interface GuestModule {
  /** Canonical name ("ne2k_pci"), also the file name in the initrd. */
  name: string;
  /** Uncompressed module bytes. */
  data: Uint8Array;
  /** Where it came from in the unpacked kernel package. */
  source: string;
}

async function indexModuleFiles(dir: string, index: Map<string, string>): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await indexModuleFiles(path, index);
    else if (entry.name.endsWith(".ko") || entry.name.endsWith(".ko.xz")) {
      const key = canonicalModuleName(entry.name.replace(/\.ko(\.xz)?$/, ""));
      // Prefer the uncompressed file if a kernel ever ships both.
      if (!index.has(key) || entry.name.endsWith(".ko")) index.set(key, path);
    }
  }
}

async function readModuleFile(path: string): Promise<Uint8Array> {
  if (!path.endsWith(".xz")) return readFile(path);
  // xz is a host tool (Debian's xz-utils), not guest code.
  const { stdout } = await run("xz", ["-dc", path], { failCode: "MODULE_INVALID", what: `decompressing ${path}` });
  return stdout;
}

/** modules.builtin: one "kernel/fs/ext4/ext4.ko" path per built-in module. */
export function parseModulesBuiltin(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const file = line.trim().split("/").pop() ?? "";
    if (file.endsWith(".ko")) out.add(canonicalModuleName(file.slice(0, -3)));
  }
  return out;
}

/** Reads module files lazily (only those in some set's closure; all of them once if an alias must be resolved). */
class DirectoryCatalog implements ModuleCatalog {
  private readonly loaded = new Map<string, { facts: ModuleFacts; aliases: readonly string[]; data: Uint8Array; source: string }>();
  private aliasIndex: Map<string, string[]> | undefined;

  constructor(
    readonly release: string,
    private readonly files: ReadonlyMap<string, string>,
    private readonly builtin: ReadonlySet<string>,
  ) {}

  async load(name: string): Promise<{ facts: ModuleFacts; aliases: readonly string[]; data: Uint8Array; source: string } | undefined> {
    const hit = this.loaded.get(name);
    if (hit !== undefined) return hit;
    const source = this.files.get(name);
    if (source === undefined) return undefined;
    const data = await readModuleFile(source);
    const info = readModInfo(data, source);
    if (info.name !== name) throw new GuestBuildError("MODULE_INVALID", `${source} calls itself ${info.name}, expected ${name}`);
    const entry = { facts: { name, depends: info.depends, softdepsPre: info.softdepsPre }, aliases: info.aliases, data, source };
    this.loaded.set(name, entry);
    return entry;
  }

  async facts(name: string): Promise<ModuleFacts | undefined> {
    return (await this.load(name))?.facts;
  }

  isBuiltin(name: string): boolean {
    return this.builtin.has(name);
  }

  async providers(alias: string): Promise<string[]> {
    if (this.aliasIndex === undefined) {
      const index = new Map<string, string[]>();
      for (const [name, path] of this.files) {
        // Only the aliases are kept; the module bytes of the rest are not held.
        const data = await readModuleFile(path);
        for (const a of readModInfo(data, path).aliases) index.set(a, [...(index.get(a) ?? []), name]);
      }
      this.aliasIndex = index;
    }
    return [...(this.aliasIndex.get(canonicalModuleName(alias)) ?? [])].sort();
  }
}

/**
 * Computes the load order of each of `sets` (a target's moduleSets) from
 * the modules under `<kernelRoot>/lib/modules/<release>` (decompressing
 * `.ko.xz`) and returns the modules per set, in load order, for the sets
 * the target has.
 */
export async function collectModules(kernelRoot: string, release: string, sets: ModuleSets): Promise<Partial<Record<ModuleSetName, GuestModule[]>>> {
  const modulesDir = join(kernelRoot, "lib", "modules", release);
  const files = new Map<string, string>();
  try {
    await indexModuleFiles(modulesDir, files);
  } catch (e) {
    throw new GuestBuildError("FILE_MISSING", `kernel modules directory ${modulesDir} is unreadable`, { cause: e });
  }
  const builtinText = await readFile(join(modulesDir, "modules.builtin"), "utf8").catch(() => "");
  const catalog = new DirectoryCatalog(release, files, parseModulesBuiltin(builtinText));
  const out: Partial<Record<ModuleSetName, GuestModule[]>> = {};
  for (const setName of MODULE_SET_NAMES) {
    const wanted = sets[setName];
    if (wanted === undefined) continue;
    const list: GuestModule[] = [];
    for (const name of await moduleLoadOrder(setName, wanted, catalog)) {
      const m = await catalog.load(name);
      if (m === undefined) throw new GuestBuildError("MODULE_INVALID", `module ${name} vanished from ${modulesDir}`);
      list.push({ name, data: m.data, source: m.source });
    }
    out[setName] = list;
  }
  return out;
}
