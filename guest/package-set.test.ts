import { test } from "node:test";
import assert from "node:assert/strict";
import type { AptPackage } from "./apt.js";
import { MEMTESTER_PACKAGE, type PackageLookup, resolveGuestPackages } from "./package-set.js";

function pkg(name: string, version: string, depends: string[][] = []): AptPackage {
  return { name, version, architecture: "i386", depends, sha256: undefined };
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

/** Looks names up in `archive` like showPackages does, recording each call. */
function fakeLookup(archive: Map<string, AptPackage>, calls: string[][]): PackageLookup {
  return async (names, optional) => {
    calls.push([...names]);
    const out = new Map<string, AptPackage>();
    for (const n of [...names, ...optional]) {
      const p = archive.get(n);
      if (p !== undefined) out.set(n, p);
      else if (names.includes(n)) throw new Error(`apt-cache has no i386 candidate for: ${n}`);
    }
    return out;
  };
}

test("the set holds memtester and the library closure of redis-tools and memtester", async () => {
  const calls: string[][] = [];
  const set = await resolveGuestPackages([], fakeLookup(ARCHIVE, calls));
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
  const first = await resolveGuestPackages([], fakeLookup(ARCHIVE, []));
  const calls: string[][] = [];
  const again = await resolveGuestPackages(
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
  const set = await resolveGuestPackages([], fakeLookup(archive, []));
  assert.ok(set.libraries.some((p) => p.name === "libfoo1"));
  assert.ok(!set.all.some((p) => p.name === "libbar1"), "only the first alternative is taken");
});

test("a missing memtester fails the resolution", async () => {
  const archive = new Map(ARCHIVE);
  archive.delete("memtester");
  await assert.rejects(resolveGuestPackages([], fakeLookup(archive, [])), /memtester/);
});
