import { test } from "node:test";
import assert from "node:assert/strict";
import { buildQemuArgs, formatOpts, showArgs } from "./qemu-args.js";
import { QemuProcessError } from "./qemu-process-error.js";

const base = { machine: { type: "none" }, accel: "tcg" } as const;

test("args: ours first (paused, no defaults, QMP chardev + monitor), then the machine, then the options in order", () => {
  const args = buildQemuArgs("vm1", "/run/x/qmp.sock", {
    machine: { type: "pc", props: { "memory-backend": "ram0", "suppress-vmdesc": true } },
    accel: "tcg",
    memoryMiB: 160,
    cpu: "qemu64",
    smp: 1,
    options: [
      { flag: "-object", type: "memory-backend-file", props: { id: "ram0", size: 167772160, "mem-path": "/dev/shm/g", share: true } },
      { flag: "-kernel", raw: "/boot/vmlinuz" },
      { flag: "-append", raw: "console=ttyS0 quiet" },
      { flag: "-no-shutdown" },
      { flag: "-global", props: { "migration.send-configuration": false } },
    ],
  });
  assert.deepEqual(args, [
    "-name", "guest=vm1",
    "-S", "-nodefaults", "-no-user-config", "-display", "none",
    "-chardev", "socket,id=colo-qmp,path=/run/x/qmp.sock,server=on,wait=off",
    "-mon", "chardev=colo-qmp,mode=control",
    "-accel", "tcg",
    "-machine", "pc,memory-backend=ram0,suppress-vmdesc=on",
    "-m", "160", "-cpu", "qemu64", "-smp", "1",
    "-object", "memory-backend-file,id=ram0,size=167772160,mem-path=/dev/shm/g,share=on",
    "-kernel", "/boot/vmlinuz",
    "-append", "console=ttyS0 quiet",
    "-no-shutdown",
    "-global", "migration.send-configuration=off",
  ]); // prettier-ignore
});

test("args: a comma in a value is doubled (QEMU's escape), so it cannot add a property", () => {
  assert.equal(formatOpts("v", "-chardev", "socket", { id: "c", path: "/tmp/a,server=off" }), "socket,id=c,path=/tmp/a,,server=off");
  const args = buildQemuArgs("a,b", "/tmp/d,x/qmp.sock", base);
  assert.ok(args.includes("guest=a,,b"));
  assert.ok(args.includes("socket,id=colo-qmp,path=/tmp/d,,x/qmp.sock,server=on,wait=off"));
  // raw arguments are QEMU's own strings: passed as they are
  assert.deepEqual(buildQemuArgs("v", "/s", { ...base, options: [{ flag: "-append", raw: "a,b=c" }] }).slice(-2), ["-append", "a,b=c"]);
});

test("args: undefined properties are left out", () => {
  assert.equal(formatOpts("v", "-device", "virtio-net-pci", { netdev: "n0", mac: undefined }), "virtio-net-pci,netdev=n0");
});

test("args: what cannot be written as a command line is BAD_SPEC naming the VM", () => {
  const bad: [Parameters<typeof buildQemuArgs>[2], RegExp][] = [
    [{ ...base, options: [{ flag: "-qmp", raw: "stdio" }] }, /-qmp is set by the process owner/],
    [{ ...base, options: [{ flag: "-S" }] }, /-S is set by the process owner/],
    [{ ...base, options: [{ flag: "-machine", raw: "pc" }] }, /-machine is set by the process owner/],
    [{ ...base, options: [{ flag: "kernel", raw: "x" }] }, /"kernel" is not an option flag/],
    [{ ...base, options: [{ flag: "-device", type: "e1000,netdev=x", props: {} }] }, /type "e1000,netdev=x" is not a name/],
    [{ ...base, options: [{ flag: "-device", type: "e1000", props: { "a=b": 1 } }] }, /property "a=b" is not a name/],
    [{ ...base, options: [{ flag: "-object", type: "x", props: { size: 1.5 } }] }, /size=1.5: not an integer/],
    [{ ...base, options: [{ flag: "-append", raw: "a\0b" }] }, /NUL/],
    [{ ...base, options: [{ flag: "-chardev", type: "socket", props: { id: "colo-qmp" } }] }, /colo-qmp is the QMP monitor's/],
    [{ ...base, options: [{ flag: "-global", props: {} }] }, /neither a type nor properties/],
    [{ ...base, memoryMiB: 0 }, /memoryMiB 0 is not a positive integer/],
    [{ ...base, cpu: "max,+vmx" }, /is not a CPU model name/],
  ];
  for (const [machine, why] of bad) {
    assert.throws(
      () => buildQemuArgs("vm9", "/s", machine),
      (err: unknown) => {
        assert.ok(err instanceof QemuProcessError);
        assert.equal(err.code, "BAD_SPEC");
        assert.match(err.message, /^QEMU command line for vm9: /);
        assert.match(err.message, why);
        return true;
      },
      String(why),
    );
  }
});

test("args: showArgs quotes only what a shell would need quoted", () => {
  assert.equal(showArgs(["qemu", "-append", "console=ttyS0 quiet", "-m", "160"]), 'qemu -append "console=ttyS0 quiet" -m 160');
});
