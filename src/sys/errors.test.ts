import { test } from "node:test";
import assert from "node:assert/strict";
import { SysError, isSysError } from "./errors.js";
import { errnoNames, errnoValue } from "./libc.js";

test("SysError names the call, the object, the errno name and its text", () => {
  const err = new SysError("ioctl(TUNSETIFF)", 1, "TAP tap0");
  assert.ok(err instanceof Error);
  assert.equal(err.name, "SysError");
  assert.equal(err.call, "ioctl(TUNSETIFF)");
  assert.equal(err.errno, 1);
  assert.equal(err.code, "EPERM");
  assert.equal(err.object, "TAP tap0");
  assert.equal(err.message, "ioctl(TUNSETIFF) for TAP tap0 failed: EPERM (Operation not permitted)");
  assert.ok(isSysError(err, "EPERM"));
  assert.ok(!isSysError(err, "EINVAL"));
  assert.ok(!isSysError(new Error("x")));
});

test("errno names: Linux values, canonical names for aliases", () => {
  assert.equal(errnoValue("EAGAIN"), 11);
  assert.equal(errnoNames.get(11), "EAGAIN");
  assert.equal(errnoNames.get(95), "EOPNOTSUPP");
  assert.equal(errnoNames.get(19), "ENODEV");
  assert.equal(errnoNames.get(77), "EBADFD");
  assert.equal(new SysError("read", 4242).code, "E4242");
  assert.throws(() => errnoValue("ENOSUCH"), RangeError);
});
