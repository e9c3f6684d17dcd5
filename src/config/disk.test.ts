import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDiskSpec } from "./disk.js";
import { ConfigError, type ConfigErrorCode } from "./errors.js";
import type { SpecContext } from "./spec.js";

const ctx: SpecContext = { file: "g.cfg", line: 7, key: "disk[0]", baseDir: "/vm" };

function fails(spec: string, code: ConfigErrorCode, fragment: string): void {
  assert.throws(
    () => parseDiskSpec(spec, ctx),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.code, code, e.message);
      assert.equal(e.line, 7);
      assert.ok(e.message.startsWith("g.cfg:7: disk[0]: "), e.message);
      assert.ok(e.message.includes(fragment), `"${e.message}" lacks "${fragment}"`);
      return true;
    },
  );
}

test("keyed form, relative target resolved against the config's folder", () => {
  assert.deepEqual(parseDiskSpec("format=raw, vdev=hda, access=rw, target=../img/d.img", ctx), {
    target: "/img/d.img",
    format: "raw",
    vdev: "hda",
    access: "rw",
    at: { file: "g.cfg", line: 7 },
  });
});

test("the xl-disk-configuration(5) equivalent forms give the same disk", () => {
  const forms = [
    "/dev/vg/guest-volume,,hda",
    "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    "vdev=hda, /dev/vg/guest-volume",
    " /dev/vg/guest-volume , raw , hda , w ",
  ];
  for (const form of forms) {
    const disk = parseDiskSpec(form, ctx);
    assert.deepEqual([disk.target, disk.format, disk.vdev, disk.access], ["/dev/vg/guest-volume", "raw", "hda", "rw"], form);
  }
});

test("target= takes the rest of the spec, commas and blanks included", () => {
  const disk = parseDiskSpec("vdev=hdb, access=r, target=/images/a,b=c, colo ", ctx);
  assert.equal(disk.target, "/images/a,b=c, colo ");
  assert.equal(disk.access, "ro");
  assert.equal(disk.colo, undefined);
});

test("COLO keys, all five, with the colo flag", () => {
  const disk = parseDiskSpec(
    "colo, colo-host=10.0.0.2, colo-port=9000, colo-export=guest-hda, active-disk=act.img, hidden-disk=/tmp/hid.img, vdev=hda, target=d.img",
    ctx,
  );
  assert.deepEqual(disk.colo, {
    host: "10.0.0.2",
    port: 9000,
    exportName: "guest-hda",
    activeDisk: "/vm/act.img",
    hiddenDisk: "/tmp/hid.img",
  });
  assert.equal(disk.target, "/vm/d.img");
});

const colo = "colo, colo-host=h2, colo-port=9000, colo-export=e, active-disk=a.img, hidden-disk=h.img";

const errors: [string, string, ConfigErrorCode, string][] = [
  ["qcow2", "format=qcow2, vdev=hda, target=d.img", "unsupported-value", `format: only raw is supported (got "qcow2")`],
  ["xvda", "vdev=xvda, target=d.img", "unsupported-value", `vdev: only IDE disks hda, hdb, hdc and hdd are supported (got "xvda")`],
  ["no vdev", "target=d.img", "missing-key", "vdev: missing"],
  ["bad access", "vdev=hda, access=rx, target=d.img", "bad-value", `access: expected rw or ro (or w, r), got "rx"`],
  ["no target", "format=raw, vdev=hda", "missing-key", "target: missing"],
  ["empty target", "vdev=hda, target=", "bad-value", "target: empty"],
  ["unknown key", "vdevv=hda, target=d.img", "unknown-key", `unknown disk key "vdevv" (did you mean "vdev"?)`],
  ["devtype", "devtype=cdrom, vdev=hdc, target=x.iso", "unsupported-key", "devtype: only hard disks"],
  ["cdrom flag", "x.iso,,hdc,cdrom", "unsupported-key", "cdrom: only hard disks"],
  ["vdev twice", "vdev=hda, vdev=hdb, target=d.img", "bad-value", "vdev: given twice"],
  ["too many positionals", "d.img,raw,hda,rw,extra", "bad-value", `unexpected "extra"`],
  ["deprecated prefix form", "raw:/d.img,hda,w", "unsupported-value", "deprecated"],
  ["COLO key without colo", "colo-host=h2, vdev=hda, target=d.img", "conflicting-keys", `colo-host: only valid on a COLO disk (add the "colo" flag)`],
  ["colo without colo-port", "colo, colo-host=h2, colo-export=e, active-disk=a, hidden-disk=h, vdev=hda, target=d.img", "missing-key", "colo: colo-port= is required"],
  ["colo-port out of range", colo.replace("9000", "70000") + ", vdev=hda, target=d.img", "bad-value", `colo-port: expected a port number 1..65535, got "70000"`],
  ["colo-port 0", colo.replace("9000", "0") + ", vdev=hda, target=d.img", "bad-value", "colo-port: expected a port number"],
  ["colo-host bad", colo.replace("h2", "bad host!") + ", vdev=hda, target=d.img", "bad-value", "colo-host: expected an IP address or host name"],
  ["active = hidden", colo.replace("h.img", "a.img") + ", vdev=hda, target=d.img", "bad-value", "must be different files"],
  ["active = target", colo + ", vdev=hda, target=a.img", "bad-value", "active-disk: must not be the target image"],
];

for (const [title, spec, code, fragment] of errors) {
  test(`disk error: ${title}`, () => fails(spec, code, fragment));
}
