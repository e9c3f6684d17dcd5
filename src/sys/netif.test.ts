import { test } from "node:test";
import { readlinkSync, statSync } from "node:fs";
import assert from "node:assert/strict";
import { SysError } from "./errors.js";
import {
  addToBridge,
  interfaceExists,
  interfaceIndex,
  isLinkUp,
  removeFromBridge,
  setLinkDown,
  setLinkUp,
} from "./netif.js";
import { withNetns } from "./netns.js";
import { ip, linkInfo, makeNetns, rootSkipReason } from "./test-support.js";

const skip = rootSkipReason();

function sysError(code: string, call: string, ...inMessage: string[]): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof SysError, `expected a SysError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.call, call);
    for (const s of inMessage) assert.ok(err.message.includes(s), `"${err.message}" should name ${s}`);
    return true;
  };
}

test("index, existence and link up/down, checked against ip(8)", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  const opts = { netns: ns.name };
  await ip("-n", ns.name, "link", "add", "br-a", "type", "bridge");

  const info = await linkInfo(ns.name, "br-a");
  assert.ok(info);
  assert.equal(interfaceIndex("br-a", opts), info.ifindex);
  assert.equal(interfaceExists("br-a", opts), true);
  assert.equal(interfaceExists("no-such-if", opts), false);
  assert.equal(interfaceIndex("lo", opts), 1);
  assert.equal(interfaceExists("br-a"), false, "br-a is not in this process's namespace");

  assert.equal(isLinkUp("br-a", opts), false);
  setLinkUp("br-a", opts);
  assert.equal(isLinkUp("br-a", opts), true);
  assert.ok((await linkInfo(ns.name, "br-a"))?.flags.includes("UP"));
  setLinkUp("br-a", opts); // already up: no-op
  setLinkDown("br-a", opts);
  assert.equal(isLinkUp("br-a", opts), false);
  assert.ok(!(await linkInfo(ns.name, "br-a"))?.flags.includes("UP"));

  assert.throws(() => setLinkUp("no-such-if", opts), sysError("ENODEV", "ioctl(SIOCGIFFLAGS)", "no-such-if", ns.name));
  assert.throws(() => interfaceIndex("bad name", opts), RangeError);
});

test("addToBridge / removeFromBridge, and their errors naming the bridge or the port", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  const opts = { netns: ns.name };
  await ip("-n", ns.name, "link", "add", "br-b", "type", "bridge");
  await ip("-n", ns.name, "link", "add", "va", "type", "veth", "peer", "name", "vb");

  addToBridge("br-b", "va", opts);
  assert.equal((await linkInfo(ns.name, "va"))?.master, "br-b");
  assert.throws(() => addToBridge("br-b", "va", opts), sysError("EBUSY", "ioctl(SIOCBRADDIF)", "br-b", "va"));
  removeFromBridge("br-b", "va", opts);
  assert.equal((await linkInfo(ns.name, "va"))?.master, undefined);
  assert.throws(() => removeFromBridge("br-b", "va", opts), sysError("EINVAL", "ioctl(SIOCBRDELIF)", "br-b", "va"));

  assert.throws(() => addToBridge("nosuchbr", "va", opts), sysError("ENODEV", "ioctl(SIOCBRADDIF)", "bridge nosuchbr", "va"));
  assert.throws(() => addToBridge("br-b", "nosuchport", opts), sysError("ENODEV", "ioctl(SIOCGIFINDEX)", "nosuchport"));
  assert.throws(() => addToBridge("vb", "va", opts), sysError("EOPNOTSUPP", "ioctl(SIOCBRADDIF)", "bridge vb"));
  assert.throws(() => addToBridge("x".repeat(16), "va", opts), /invalid bridge name/);
});

test("withNetns: inside fn the thread is in the namespace, afterwards back home; errors name the namespace", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  const self = (): string => readlinkSync("/proc/thread-self/ns/net");
  const home = self();
  const inside = withNetns(ns.name, self);
  assert.equal(inside, `net:[${statSync(`/run/netns/${ns.name}`).ino}]`);
  assert.notEqual(inside, home);
  assert.equal(self(), home);
  assert.throws(() => withNetns(ns.name, () => { throw new Error("boom"); }), /boom/);
  assert.equal(self(), home, "back home after fn threw");
  assert.throws(() => withNetns("colosys-missing", () => 1), sysError("ENOENT", "open(/run/netns/colosys-missing)", "network namespace colosys-missing"));
  assert.throws(() => withNetns("../etc", () => 1), RangeError);
  assert.equal(self(), home);
});
