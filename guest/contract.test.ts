import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { guestInitScriptPath } from "./build.js";
import { CMDLINE_KEYS, GUEST_FAILED_MARKER, GUEST_READY_MARKER, GUEST_SHELL_PROMPT, guestKernelCmdline } from "./contract.js";
import { MODULE_SETS } from "./kernel-modules.js";

const execFileAsync = promisify(execFile);

test("kernel command line from options", () => {
  assert.equal(guestKernelCmdline(), "console=ttyS0 quiet");
  assert.equal(
    guestKernelCmdline({ ip: "10.77.0.10/24", gateway: "10.77.0.1", hostname: "pvm", appendfsync: "always", quiet: false, extra: ["loglevel=3"] }),
    "console=ttyS0 colo.ip=10.77.0.10/24 colo.gw=10.77.0.1 colo.hostname=pvm colo.appendfsync=always loglevel=3",
  );
});

test("kernel command line rejects what the init could not parse", () => {
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.10" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.256/24" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ ip: "10.77.0.1/33" }), /A\.B\.C\.D\/NN/);
  assert.throws(() => guestKernelCmdline({ gateway: "gw" }), /colo\.gw/);
  assert.throws(() => guestKernelCmdline({ hostname: "a b" }), /host name/);
  assert.throws(() => guestKernelCmdline({ extra: ["a b"] }), /white space/);
});

test("init.sh speaks the contract: keys, markers, prompt, module sets", async () => {
  const init = await readFile(guestInitScriptPath(), "utf8");
  for (const key of Object.values(CMDLINE_KEYS)) assert.ok(init.includes(`${key}=*)`), `init.sh parses ${key}`);
  assert.ok(init.includes(`echo "${GUEST_READY_MARKER}"`));
  assert.ok(init.includes(`echo "${GUEST_FAILED_MARKER} $*"`));
  assert.ok(init.includes(`PS1='${GUEST_SHELL_PROMPT}'`));
  for (const set of Object.keys(MODULE_SETS)) assert.ok(init.includes(`load_modules ${set}`), `init.sh loads ${set}`);
});

test("init.sh is valid POSIX shell (sh -n)", async () => {
  await execFileAsync("sh", ["-n", guestInitScriptPath()]);
});
