import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfigText } from "./parse.js";
import { ConfigError, type ConfigErrorCode } from "./errors.js";

function fails(text: string, line: number | undefined, code: ConfigErrorCode, fragment: string): void {
  assert.throws(
    () => parseConfigText(text, "t.cfg"),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
      assert.equal(e.file, "t.cfg");
      assert.equal(e.line, line, e.message);
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.includes(fragment), `"${e.message}" lacks "${fragment}"`);
      const where = line === undefined ? "t.cfg: " : `t.cfg:${line}: `;
      assert.ok(e.message.startsWith(where), e.message);
      return true;
    },
  );
}

test("atoms, lists, comments, both quote styles, line numbers", () => {
  const raw = parseConfigText(
    [
      "# leading comment",
      "a = 'single'   # trailing comment",
      'b = "double"',
      "c = 42",
      "d = [",
      "  'one',  # comment inside a list",
      '  "two",',
      "]",
      "e = []; f = 0x10",
    ].join("\n"),
    "t.cfg",
  );
  assert.deepEqual(
    raw.entries.map((e) => [e.key, e.line, e.value]),
    [
      ["a", 2, { kind: "atom", text: "single", quoted: true, line: 2 }],
      ["b", 3, { kind: "atom", text: "double", quoted: true, line: 3 }],
      ["c", 4, { kind: "atom", text: "42", quoted: false, line: 4 }],
      [
        "d",
        5,
        {
          kind: "list",
          line: 5,
          items: [
            { kind: "atom", text: "one", quoted: true, line: 6 },
            { kind: "atom", text: "two", quoted: true, line: 7 },
          ],
        },
      ],
      ["e", 9, { kind: "list", line: 9, items: [] }],
      ["f", 9, { kind: "atom", text: "0x10", quoted: false, line: 9 }],
    ],
  );
});

test("CRLF line ends, a byte order mark and no final newline", () => {
  const raw = parseConfigText("\uFEFFa = 'x'\r\nb = [ 'p',\r\n 'q' ]\r\n\r\nc = 1", "t.cfg");
  assert.deepEqual(
    raw.entries.map((e) => [e.key, e.line]),
    [
      ["a", 1],
      ["b", 2],
      ["c", 5],
    ],
  );
  const b = raw.entries[1]?.value;
  assert.ok(b !== undefined && b.kind === "list");
  assert.deepEqual(
    b.items.map((i) => [i.text, i.line]),
    [
      ["p", 2],
      ["q", 3],
    ],
  );
});

test("backslash escapes in both quote styles", () => {
  const raw = parseConfigText(String.raw`a = "x\"y\\z\n\t\x41\101\,"` + "\n" + String.raw`b = 'it\'s'`, "t.cfg");
  assert.equal(raw.entries[0]?.value.kind === "atom" ? raw.entries[0].value.text : "", 'x"y\\z\n\tAA,');
  assert.equal(raw.entries[1]?.value.kind === "atom" ? raw.entries[1].value.text : "", "it's");
});

test("a # inside a string is not a comment", () => {
  const raw = parseConfigText("a = 'x # y' # z", "t.cfg");
  assert.equal(raw.entries[0]?.value.kind === "atom" ? raw.entries[0].value.text : "", "x # y");
});

const errors: [string, string, number | undefined, ConfigErrorCode, string][] = [
  ["missing =", "a = 1\nb 'x'", 2, "syntax", `b: expected "=" after the key, got "x"`],
  ["bare word value", "name = guest", 1, "syntax", `name: expected a value, got the bare word guest`],
  ["missing value", "a =\n", 1, "syntax", `a: missing value after "="`],
  ["line starting with a value", "\n'x' = 1", 2, "syntax", `expected a key (lines read KEY = VALUE), got "x"`],
  ["trailing garbage", "a = 1 2", 1, "syntax", "a: expected the end of the line after the value, got 2"],
  ["+=", "a += 'x'", 1, "syntax", `a: "+=" is not supported`],
  ["unexpected character", "a = 1\n\n@b = 2", 3, "syntax", `unexpected character "@"`],
  ["bad escape", String.raw`a = "\q"`, 1, "syntax", String.raw`bad escape "\q"`],
  ["bad hex escape", String.raw`a = "\xZ1"`, 1, "syntax", String.raw`bad escape "\xZ1"`],
  ["unterminated string", "a = 1\nb = 'abc\nc = 2", 2, "unterminated-string", "unterminated string"],
  ["unterminated string at CRLF", "b = \"abc\r\n", 1, "unterminated-string", "unterminated string"],
  ["unterminated string at end of file", "b = 'abc\\", 1, "unterminated-string", "unterminated string"],
  ["unterminated list at end of file", "a = 1\nd = [ 'x',\n 'y'\n", 2, "unterminated-list", "reached end of file at line 4"],
  ["unterminated list before the next key", "d = [ 'x',\nvif = [ 'y' ]", 1, "unterminated-list", "reached vif at line 2"],
  ["missing comma in a list", "d = [ 'x'\n 'y' ]", 2, "syntax", `d: expected "," or "]" after a list item, got "y"`],
  ["bare word in a list", "d = [ x ]", 1, "syntax", "d: expected a list item, got the bare word x"],
  ["nested list", "d = [ [ 'x' ] ]", 1, "syntax", "d: nested lists are not supported"],
  ["duplicate key", "a = 1\n# x\na = 2", 3, "duplicate-key", "a: duplicate key (first set at t.cfg:1)"],
];

for (const [title, text, line, code, fragment] of errors) {
  test(`syntax error: ${title}`, () => fails(text, line, code, fragment));
}

test("duplicate key records the first definition", () => {
  assert.throws(
    () => parseConfigText("a = 1\na = 2", "t.cfg"),
    (e: unknown) => e instanceof ConfigError && e.related?.line === 1 && e.related.file === "t.cfg" && e.key === "a",
  );
});
