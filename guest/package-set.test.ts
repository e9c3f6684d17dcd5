import { test } from "node:test";
import assert from "node:assert/strict";
import type { AptPackage } from "./apt.js";
import { MEMTESTER_PACKAGE, type PackageLookup, resolveGuestPackages } from "./package-set.js";
import { AMD64_TARGET, I386_TARGET } from "./target.js";

function pkg(name: string, version: string, depends: string[][] = [], architecture = "i386"): AptPackage {
  return { name, version, architecture, depends, sha256: undefined };
}

/** A small apt database shaped like bookworm i386 (versions as of the first memtester image). */
const ARCHIVE = new Map<string, AptPackage>(
  [
    pkg("linux-image-686", "6.1.176-1", [["linux-image-6.1.0-50-686"]]),
    pkg("linux-image-6.1.0-50-686", "6.1.176-1", [["kmod"], ["linux-base"], ["initramfs-tools", "linux-initramfs-tool"]]),
    pkg("busybox-static", "1:1.35.0-4+deb12u1+b1"),
    pkg("redis-server", "5:7.0.15-1~deb12u7", [["adduser"], ["redis-tools"]]),
    pkg("redis-tools", "5:7.0.15-1~deb12u7", [["init-system-helpers"], ["adduser"], ["libatomic1"], ["libc6"], ["libjemalloc2"], ["libssl3"]]),
    pkg("memtester", "4.6.0-1", [["libc6"]]),
    pkg("libc6", "2.36-9+deb12u14", [["libgcc-s1"]]),
    pkg("libgcc-s1", "12.2.0-14+deb12u1", [["gcc-12-base"], ["libc6"]]),
    pkg("libstdc++6", "12.2.0-14+deb12u1", [["gcc-12-base"], ["libc6"], ["libgcc-s1"]]),
    pkg("libatomic1", "12.2.0-14+deb12u1", [["gcc-12-base"], ["libc6"]]),
    pkg("libjemalloc2", "5.3.0-1", [["libc6"], ["libgcc-s1"], ["libstdc++6"]]),
    pkg("libssl3", "3.0.20-1~deb12u2", [["libc6"]]),
  ].map((p) => [p.name, p]),
);

/** Looks names up in `archive` like showPackages does, recording each call (and refusing another architecture than the archive's). */
function fakeLookup(archive: Map<string, AptPackage>, calls: string[][], archiveArch = "i386"): PackageLookup {
  return async (arch, names, optional) => {
    assert.equal(arch, archiveArch, "every lookup asks for the target's architecture");
    calls.push([...names]);
    const out = new Map<string, AptPackage>();
    for (const n of [...names, ...optional]) {
      const p = archive.get(n);
      if (p !== undefined) out.set(n, p);
      else if (names.includes(n)) throw new Error(`apt-cache has no ${arch} candidate for: ${n}`);
    }
    return out;
  };
}

test("the set holds memtester and the library closure of redis-tools and memtester", async () => {
  const calls: string[][] = [];
  const set = await resolveGuestPackages(I386_TARGET, [], fakeLookup(ARCHIVE, calls));
  assert.equal(set.kernelRelease, "6.1.0-50-686");
  assert.equal(set.memtester.name, MEMTESTER_PACKAGE);
  assert.equal(set.memtester.version, "4.6.0-1");
  assert.deepEqual(
    set.libraries.map((p) => p.name),
    ["libatomic1", "libc6", "libgcc-s1", "libjemalloc2", "libssl3", "libstdc++6"],
  );
  // `all` (what the manifest records and the build downloads): sorted, memtester included, nothing twice.
  const names = set.all.map((p) => p.name);
  assert.deepEqual(names, [...names].sort());
  assert.equal(new Set(names).size, names.length);
  for (const n of ["busybox-static", "linux-image-686", "linux-image-6.1.0-50-686", "memtester", "redis-server", "redis-tools", "libc6"]) {
    assert.ok(names.includes(n), n);
  }
  assert.ok(calls[0]?.includes(MEMTESTER_PACKAGE), "memtester is asked for in the first apt-cache call");
});

test("hints from the stored manifest resolve the set in one lookup", async () => {
  const first = await resolveGuestPackages(I386_TARGET, [], fakeLookup(ARCHIVE, []));
  const calls: string[][] = [];
  const again = await resolveGuestPackages(
    I386_TARGET,
    first.all.map((p) => p.name),
    fakeLookup(ARCHIVE, calls),
  );
  assert.deepEqual(again.all, first.all);
  assert.equal(calls.length, 1);
});

test("memtester's own library dependencies join the closure", async () => {
  const archive = new Map(ARCHIVE);
  archive.set("memtester", pkg("memtester", "9.9-1", [["libc6"], ["libfoo1", "libbar1"]]));
  archive.set("libfoo1", pkg("libfoo1", "1.0-1", [["libc6"]]));
  const set = await resolveGuestPackages(I386_TARGET, [], fakeLookup(archive, []));
  assert.ok(set.libraries.some((p) => p.name === "libfoo1"));
  assert.ok(!set.all.some((p) => p.name === "libbar1"), "only the first alternative is taken");
});

test("a missing memtester fails the resolution", async () => {
  const archive = new Map(ARCHIVE);
  archive.delete("memtester");
  await assert.rejects(resolveGuestPackages(I386_TARGET, [], fakeLookup(archive, [])), /memtester/);
});

/** The same archive as bookworm amd64 ships it: the amd64 metapackage and flavour, every package amd64. */
const ARCHIVE_AMD64 = new Map<string, AptPackage>(
  [...ARCHIVE.values()]
    .filter((p) => !p.name.startsWith("linux-image"))
    .map((p) => ({ ...p, architecture: "amd64" }))
    .concat([
      pkg("linux-image-amd64", "6.1.192-3", [["linux-image-6.1.0-57-amd64"]], "amd64"),
      pkg("linux-image-6.1.0-57-amd64", "6.1.192-3", [["kmod"], ["linux-base"]], "amd64"),
    ])
    .map((p) => [p.name, p]),
);

test("amd64 target: the linux-image-amd64 metapackage names the kernel; every lookup is for amd64", async () => {
  const calls: string[][] = [];
  const set = await resolveGuestPackages(AMD64_TARGET, [], fakeLookup(ARCHIVE_AMD64, calls, "amd64"));
  assert.equal(set.kernelRelease, "6.1.0-57-amd64");
  assert.equal(set.kernelImage.name, "linux-image-6.1.0-57-amd64");
  assert.ok(calls[0]?.includes("linux-image-amd64"));
  assert.ok(!calls.flat().includes("linux-image-686"), "nothing of the i386 target is asked for");
  assert.ok(set.all.every((p) => p.architecture === "amd64"));
  assert.deepEqual(
    set.libraries.map((p) => p.name),
    ["libatomic1", "libc6", "libgcc-s1", "libjemalloc2", "libssl3", "libstdc++6"],
  );
});

test("a metapackage naming another flavour fails with the target's flavour in the message", async () => {
  const archive = new Map(ARCHIVE_AMD64);
  archive.set("linux-image-amd64", pkg("linux-image-amd64", "6.1.192-3", [["linux-image-6.1.0-57-cloud-amd64"]], "amd64"));
  await assert.rejects(
    resolveGuestPackages(AMD64_TARGET, [], fakeLookup(archive, [], "amd64")),
    /linux-image-amd64:amd64 6\.1\.192-3 depends on no linux-image-<release>-amd64 package/,
  );
  // The i386 pattern never takes -686-pae.
  const i386 = new Map(ARCHIVE);
  i386.set("linux-image-686", pkg("linux-image-686", "6.1.176-1", [["linux-image-6.1.0-50-686-pae"]]));
  await assert.rejects(resolveGuestPackages(I386_TARGET, [], fakeLookup(i386, [])), /depends on no linux-image-<release>-686 package/);
});
