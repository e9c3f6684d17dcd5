import { test } from "node:test";
import assert from "node:assert/strict";
import { debFileName, parseControlStanzas, parseDependsField } from "./apt.js";

const SHOW_OUTPUT = `Package: linux-image-686
Source: linux-signed-i386 (6.1.176+1)
Version: 6.1.176-1
Architecture: i386
Provides: linux-latest-modules-6.1.0-50-686, virtualbox-guest-modules
Depends: linux-image-6.1.0-50-686 (= 6.1.176-1)
Description: Linux for older PCs (meta-package)
 This package depends on the latest Linux kernel.
 .
 More text.

Package: redis-tools
Version: 5:7.0.15-1~deb12u7
Architecture: i386
Pre-Depends: init-system-helpers (>= 1.54~)
Depends: adduser, libatomic1 (>= 4.8), libc6 (>= 2.34), libjemalloc2 (>= 4.0.0), liblzf1 (>= 1.5), libssl3 (>= 3.0.0),
 libsystemd0 | libelogind0:any
SHA256: 0123abcd
`;

test("control stanzas: fields, continuation lines, several stanzas", () => {
  const s = parseControlStanzas(SHOW_OUTPUT);
  assert.equal(s.length, 2);
  assert.equal(s[0]?.get("Package"), "linux-image-686");
  assert.equal(s[0]?.get("Depends"), "linux-image-6.1.0-50-686 (= 6.1.176-1)");
  assert.equal(s[0]?.get("Description"), "Linux for older PCs (meta-package)\nThis package depends on the latest Linux kernel.\n.\nMore text.");
  assert.equal(s[1]?.get("Version"), "5:7.0.15-1~deb12u7");
  assert.match(s[1]?.get("Depends") ?? "", /libssl3 \(>= 3\.0\.0\),\nlibsystemd0 \| libelogind0:any$/);
});

test("dependency fields: versions, alternatives, arch qualifiers, continuation", () => {
  const deps = parseDependsField(parseControlStanzas(SHOW_OUTPUT)[1]?.get("Depends") ?? "");
  assert.deepEqual(deps, [["adduser"], ["libatomic1"], ["libc6"], ["libjemalloc2"], ["liblzf1"], ["libssl3"], ["libsystemd0", "libelogind0"]]);
  assert.deepEqual(parseDependsField(""), []);
  assert.deepEqual(parseDependsField("foo [i386] <!nocheck>, bar:any (<< 2)"), [["foo"], ["bar"]]);
});

test("deb file names as apt-get download writes them (epoch colon escaped)", () => {
  assert.equal(debFileName({ name: "redis-tools", version: "5:7.0.15-1~deb12u7", architecture: "i386" }), "redis-tools_5%3a7.0.15-1~deb12u7_i386.deb");
  assert.equal(debFileName({ name: "libc6", version: "2.36-9+deb12u14", architecture: "i386" }), "libc6_2.36-9+deb12u14_i386.deb");
});
