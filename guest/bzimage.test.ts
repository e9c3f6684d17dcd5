import { test } from "node:test";
import assert from "node:assert/strict";
import { PAYLOAD_MAGICS, payloadFormat, readBzImagePayload } from "./bzimage.js";
import { makeBzImage } from "./bzimage-testing.js";
import { GuestBuildError } from "./errors.js";

test("the payload is found through setup_sects, payload_offset and payload_length; the size word is split off", () => {
  const payload = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3, 4, 5]);
  const image = makeBzImage({ payload, uncompressedSize: 123456, setupSects: 3, payloadOffset: 0x1234 });
  const p = readBzImagePayload(image, "vmlinuz");
  assert.equal(p.protocol, "2.15");
  assert.equal(p.protectedModeOffset, 4 * 512);
  assert.equal(p.offset, 4 * 512 + 0x1234);
  assert.deepEqual(Buffer.from(p.compressed), payload);
  assert.equal(p.uncompressedSize, 123456);
  assert.equal(p.format, "xz");
  // setup_sects 0 means 4 (boot.rst)
  assert.equal(readBzImagePayload(makeBzImage({ payload, setupSects: 0 }), "old").protectedModeOffset, 5 * 512);
});

test("payload formats by magic: gzip, bzip2, lzma, xz, lzo, lz4, zstd; anything else is unknown", () => {
  assert.equal(payloadFormat(Buffer.from("1f8b0800", "hex")), "gzip");
  assert.equal(payloadFormat(Buffer.from("fd377a585a000004", "hex")), "xz");
  assert.equal(payloadFormat(Buffer.from("28b52ffd0400", "hex")), "zstd");
  assert.equal(payloadFormat(Buffer.from("02214c18", "hex")), "lz4");
  for (const { format, magic } of PAYLOAD_MAGICS) assert.equal(payloadFormat(Buffer.from([...magic, 0xee])), format);
  assert.equal(payloadFormat(Buffer.from("7f454c46", "hex")), undefined);
  assert.equal(payloadFormat(Buffer.from("fd37", "hex")), undefined, "a truncated magic is no magic");
});

test("not a bzImage, a protocol without payload fields, a payload outside the file: KERNEL_INVALID naming the file", () => {
  const bad = (image: Buffer, re: RegExp): void =>
    assert.throws(() => readBzImagePayload(image, "boot/vmlinuz-x"), (e: unknown) => e instanceof GuestBuildError && e.code === "KERNEL_INVALID" && re.test(e.message));
  const good = makeBzImage({ payload: Buffer.from("1f8b00", "hex") });
  bad(Buffer.alloc(100), /boot\/vmlinuz-x: 100 bytes: too short/);
  const noMagic = Buffer.from(good);
  noMagic.write("XXXX", 0x202, "latin1");
  bad(noMagic, /not a bzImage \(no "HdrS" at 0x202/);
  bad(makeBzImage({ payload: Buffer.from("1f8b00", "hex"), version: 0x0207 }), /boot protocol 2\.07 has no payload_offset\/payload_length/);
  const tooLong = Buffer.from(good);
  tooLong.writeUInt32LE(good.length, 0x24c);
  bad(tooLong, /does not fit in the file/);
});
