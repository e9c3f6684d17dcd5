import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { EM_X86_64 } from "./elf.js";
import { makeDynamicElf } from "./elf-testing.js";
import { GuestBuildError } from "./errors.js";
import { resolveInTree, sharedLibraryClosure } from "./shared-libraries.js";
import { AMD64_TARGET, I386_TARGET } from "./target.js";

const I386_ABI = I386_TARGET.abi;

async function put(root: string, rel: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

async function link(root: string, rel: string, target: string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await symlink(target, join(root, rel));
}

/** A guest tree shaped like Debian i386's: the loader behind an absolute link, versioned libraries behind relative links. */
async function guestTree(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "colo-libs-"));
  await put(root, "usr/bin/redis", makeDynamicElf({ interpreter: "/lib/ld-linux.so.2", needed: ["libssl.so.3", "libc.so.6"] }));
  await put(root, "usr/lib/i386-linux-gnu/libssl.so.3.0.1", makeDynamicElf({ soname: "libssl.so.3", needed: ["libcrypto.so.3", "libc.so.6"] }));
  await link(root, "usr/lib/i386-linux-gnu/libssl.so.3", "libssl.so.3.0.1");
  await put(root, "usr/lib/i386-linux-gnu/libcrypto.so.3", makeDynamicElf({ soname: "libcrypto.so.3", needed: ["libc.so.6"] }));
  await put(root, "lib/i386-linux-gnu/libc.so.6", makeDynamicElf({ soname: "libc.so.6", needed: ["ld-linux.so.2"] }));
  await put(root, "lib/i386-linux-gnu/ld-linux.so.2", makeDynamicElf({ soname: "ld-linux.so.2" }));
  // Debian's /lib/ld-linux.so.2 is an absolute link: it must resolve inside the tree, not on the host.
  await link(root, "lib/ld-linux.so.2", "/lib/i386-linux-gnu/ld-linux.so.2");
  return root;
}

test("the DT_NEEDED closure, found inside the tree through relative and absolute links", async (t) => {
  const root = await guestTree();
  t.after(() => rm(root, { recursive: true, force: true }));
  const needs = await sharedLibraryClosure(root, "usr/bin/redis", I386_ABI);
  assert.equal(needs.interpreter, "/lib/ld-linux.so.2");
  assert.deepEqual(needs.libraries, [
    { soname: "libc.so.6", path: "lib/i386-linux-gnu/libc.so.6" },
    { soname: "libcrypto.so.3", path: "usr/lib/i386-linux-gnu/libcrypto.so.3" },
    { soname: "libssl.so.3", path: "usr/lib/i386-linux-gnu/libssl.so.3.0.1" },
  ]);
  assert.equal(await resolveInTree(root, "lib/ld-linux.so.2"), "lib/i386-linux-gnu/ld-linux.so.2");
  assert.equal(await resolveInTree(root, "../../lib/../lib/ld-linux.so.2"), "lib/i386-linux-gnu/ld-linux.so.2");
  assert.equal(await resolveInTree(root, "lib/nothing"), undefined);
});

test("DT_RUNPATH with $ORIGIN is searched before the library directories", async (t) => {
  const root = await guestTree();
  t.after(() => rm(root, { recursive: true, force: true }));
  await put(root, "opt/app/bin/app", makeDynamicElf({ interpreter: "/lib/ld-linux.so.2", needed: ["libown.so.1"], runpath: "$ORIGIN/../lib" }));
  await put(root, "opt/app/lib/libown.so.1", makeDynamicElf({ soname: "libown.so.1", needed: ["libc.so.6"] }));
  const needs = await sharedLibraryClosure(root, "opt/app/bin/app", I386_ABI);
  assert.deepEqual(needs.libraries.map((l) => l.path), ["lib/i386-linux-gnu/libc.so.6", "opt/app/lib/libown.so.1"]);
});

test("a missing library names the chain that needs it; a foreign architecture is refused", async (t) => {
  const root = await guestTree();
  t.after(() => rm(root, { recursive: true, force: true }));
  await rm(join(root, "usr/lib/i386-linux-gnu/libcrypto.so.3"));
  await assert.rejects(
    sharedLibraryClosure(root, "usr/bin/redis", I386_ABI),
    (e: unknown) => e instanceof GuestBuildError && e.code === "LIBRARY_MISSING" && /usr\/bin\/redis -> libssl\.so\.3 needs libcrypto\.so\.3, found in no unpacked package/.test(e.message),
  );
  await put(root, "usr/bin/amd64", makeDynamicElf({ is64: true, machine: EM_X86_64, needed: ["libc.so.6"] }));
  await assert.rejects(sharedLibraryClosure(root, "usr/bin/amd64", I386_ABI), /ELF machine 62, the i386 guest needs 3/);
});

test("amd64: the loader behind /lib64's absolute link, libraries in the x86_64-linux-gnu dirs, i386 files refused", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "colo-libs64-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const elf = (spec: Parameters<typeof makeDynamicElf>[0]): Buffer => makeDynamicElf({ is64: true, machine: EM_X86_64, ...spec });
  await put(root, "usr/bin/redis", elf({ interpreter: "/lib64/ld-linux-x86-64.so.2", needed: ["libssl.so.3", "libc.so.6"] }));
  await put(root, "usr/lib/x86_64-linux-gnu/libssl.so.3", elf({ soname: "libssl.so.3", needed: ["libc.so.6"] }));
  await put(root, "lib/x86_64-linux-gnu/libc.so.6", elf({ soname: "libc.so.6", needed: ["ld-linux-x86-64.so.2"] }));
  await put(root, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", elf({ soname: "ld-linux-x86-64.so.2" }));
  await link(root, "lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  const needs = await sharedLibraryClosure(root, "usr/bin/redis", AMD64_TARGET.abi);
  assert.equal(needs.interpreter, "/lib64/ld-linux-x86-64.so.2");
  assert.deepEqual(needs.libraries, [
    { soname: "libc.so.6", path: "lib/x86_64-linux-gnu/libc.so.6" },
    { soname: "libssl.so.3", path: "usr/lib/x86_64-linux-gnu/libssl.so.3" },
  ]);
  assert.equal(await resolveInTree(root, "lib64/ld-linux-x86-64.so.2"), "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  await put(root, "usr/bin/i386", makeDynamicElf({ needed: ["libc.so.6"] }));
  await assert.rejects(sharedLibraryClosure(root, "usr/bin/i386", AMD64_TARGET.abi), /ELF machine 3, the amd64 guest needs 62/);
});
