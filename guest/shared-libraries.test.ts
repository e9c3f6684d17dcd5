import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLoaderList } from "./shared-libraries.js";

// Real output of Debian's i386 ld-linux.so.2 --list (abridged).
const LIST = `	linux-gate.so.1 (0xf7f2c000)
	libatomic.so.1 => /c/usr/lib/i386-linux-gnu/libatomic.so.1 (0xf7eb9000)
	libc.so.6 => /c/lib/i386-linux-gnu/libc.so.6 (0xf74b5000)
	/lib/ld-linux.so.2 => /c/lib/i386-linux-gnu/ld-linux.so.2 (0xf7f2e000)
	libgpg-error.so.0 => /c/lib/i386-linux-gnu/libgpg-error.so.0 (0xf7016000)
	libfoo.so.9 => not found
`;

test("parses found and missing libraries, skips the vDSO and the interpreter", () => {
  assert.deepEqual(parseLoaderList(LIST), [
    { soname: "libatomic.so.1", path: "/c/usr/lib/i386-linux-gnu/libatomic.so.1" },
    { soname: "libc.so.6", path: "/c/lib/i386-linux-gnu/libc.so.6" },
    { soname: "libgpg-error.so.0", path: "/c/lib/i386-linux-gnu/libgpg-error.so.0" },
    { soname: "libfoo.so.9", path: null },
  ]);
  assert.deepEqual(parseLoaderList(""), []);
});
