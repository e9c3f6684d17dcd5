import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError } from "commander";
import { defaultGuestCacheDir } from "../../guest/build.js";
import { AMD64_TARGET, GUEST_TARGETS, I386_TARGET } from "../../guest/target.js";
import { imageArchArg, imageCacheDir } from "./image.js";

test("--arch takes i386, amd64 or all", () => {
  assert.equal(imageArchArg("i386"), "i386");
  assert.equal(imageArchArg("amd64"), "amd64");
  assert.equal(imageArchArg("all"), "all");
  assert.throws(() => imageArchArg("x86_64"), (e: unknown) => e instanceof InvalidArgumentError && /expected i386, amd64, all, got "x86_64"/.test(e.message));
});

test("cache directories: the defaults per target; --cache is the directory of a single target, the i386 one with amd64 beside it for all", () => {
  assert.equal(imageCacheDir(AMD64_TARGET, GUEST_TARGETS, undefined), defaultGuestCacheDir("amd64"));
  assert.equal(imageCacheDir(I386_TARGET, GUEST_TARGETS, undefined), defaultGuestCacheDir("i386"));
  assert.equal(imageCacheDir(I386_TARGET, [I386_TARGET], "/tmp/x"), "/tmp/x");
  assert.equal(imageCacheDir(AMD64_TARGET, [AMD64_TARGET], "/tmp/x"), "/tmp/x");
  assert.equal(imageCacheDir(I386_TARGET, GUEST_TARGETS, "/tmp/x"), "/tmp/x");
  assert.equal(imageCacheDir(AMD64_TARGET, GUEST_TARGETS, "/tmp/x"), "/tmp/x-amd64");
});
