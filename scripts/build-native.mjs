#!/usr/bin/env node
// Builds the one native piece: dist/native/qemu-write-log-preload.so from
// src/engine/qemu/write-log-preload.c (the qemu engine's kernel write log,
// docs/engines.md). Part of `npm run build`. Without a C compiler it says so
// and exits 0: the qemu engine then compares RAM (status `dirtyLog` says why).
import { spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = join(root, "src/engine/qemu/write-log-preload.c");
const out = join(root, "dist/native/qemu-write-log-preload.so");
const fresh = (() => {
  try {
    return statSync(out).mtimeMs >= statSync(source).mtimeMs;
  } catch {
    return false;
  }
})();
if (!fresh) {
  mkdirSync(dirname(out), { recursive: true });
  const cc = process.env.CC ?? "cc";
  const r = spawnSync(cc, ["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", out, source], { stdio: "inherit" });
  if (r.error !== undefined || r.status !== 0) {
    const why = r.error !== undefined ? r.error.message : `exit ${r.status}`;
    process.stderr.write(`build-native: ${cc} could not build ${out} (${why}); the qemu engine will compare RAM instead of reading the kernel's write log\n`);
  }
}
