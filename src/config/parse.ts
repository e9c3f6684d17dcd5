/**
 * The xl.cfg(5) syntax, without meaning: a tokenizer and a parser that turn
 * the text into raw `KEY = VALUE` entries with line numbers. What the keys
 * mean is load.ts's business.
 *
 * Grammar (Xen's tools/libs/util/libxlu_cfg_y.y and libxlu_cfg_l.l, restated):
 *
 *   file      := { statement }
 *   statement := [ KEY "=" value ] ( NEWLINE | ";" )        -- the last may end at end of file
 *   value     := atom | "[" { NEWLINE } [ atom { NEWLINE } { "," { NEWLINE } atom { NEWLINE } } [ "," { NEWLINE } ] ] "]"
 *   atom      := STRING | NUMBER
 *
 * - KEY: a letter or "_", then letters, digits, "_", "." or "-" (xl itself
 *   takes lower case only; we lex more so that a typo gets a "did you mean").
 * - STRING: 'single' or "double" quoted, on one line. Both kinds take the
 *   same backslash escapes: \n \r \t \\ \' \" \xHH, octal \N..\NNN, and a
 *   backslash before any other punctuation stands for that character.
 * - NUMBER: a digit (or "-" and a digit) then letters, digits, "_" or ".";
 *   lexed loosely so that "12x" reaches the key's validation and gets a
 *   precise message. A NUMBER is text too: as in xl, `memory = "160"` and
 *   `memory = 160` are the same.
 * - "#" starts a comment that runs to the end of the line, also inside lists.
 * - Line ends are LF or CRLF; a UTF-8 byte order mark is skipped.
 * - xl's "+=" (append to an earlier setting) is rejected: every key is set once.
 */

import { ConfigError, quote } from "./errors.js";

/** A scalar value: the decoded string, or the text of a bare number. */
export interface RawAtom {
  kind: "atom";
  text: string;
  /** True for 'quoted' or "quoted" strings, false for bare numbers. */
  quoted: boolean;
  line: number;
}

/** A `[ ... ]` list of atoms; `line` is the line of the "[". */
export interface RawList {
  kind: "list";
  items: RawAtom[];
  line: number;
}

export type RawValue = RawAtom | RawList;

export interface RawEntry {
  key: string;
  /** The line of the key. */
  line: number;
  value: RawValue;
}

export interface RawConfig {
  /** The file name used in error messages. */
  file: string;
  /** In file order; each key at most once. */
  entries: RawEntry[];
}

type Punct = "=" | "+=" | "[" | "]" | "," | ";";

type Token =
  | { kind: "ident"; text: string; line: number }
  | { kind: "string"; text: string; line: number }
  | { kind: "number"; text: string; line: number }
  | { kind: "punct"; text: Punct; line: number }
  | { kind: "newline"; line: number }
  | { kind: "eof"; line: number };

const BYTE_ORDER_MARK = "\uFEFF";

function isDigit(c: string): boolean {
  return c >= "0" && c <= "9";
}
function isLetter(c: string): boolean {
  return (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
}
function isIdentStart(c: string): boolean {
  return isLetter(c) || c === "_";
}
function isIdentPart(c: string): boolean {
  return isLetter(c) || isDigit(c) || c === "_" || c === "." || c === "-";
}
function isNumberPart(c: string): boolean {
  return isLetter(c) || isDigit(c) || c === "_" || c === ".";
}
function isHexDigit(c: string): boolean {
  return isDigit(c) || (c >= "a" && c <= "f") || (c >= "A" && c <= "F");
}

/** How a token reads in an error message. */
function describe(token: Token): string {
  switch (token.kind) {
    case "ident":
      return token.text;
    case "string":
      return quote(token.text);
    case "number":
      return token.text;
    case "punct":
      return `"${token.text}"`;
    case "newline":
      return "end of line";
    case "eof":
      return "end of file";
  }
}

class Lexer {
  private pos = 0;
  private line = 1;
  private readonly text: string;

  constructor(
    text: string,
    private readonly file: string,
  ) {
    this.text = text.startsWith(BYTE_ORDER_MARK) ? text.slice(BYTE_ORDER_MARK.length) : text;
  }

  next(): Token {
    const text = this.text;
    for (;;) {
      if (this.pos >= text.length) return { kind: "eof", line: this.line };
      const c = text.charAt(this.pos);
      if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v") {
        this.pos++;
        continue;
      }
      if (c === "#") {
        while (this.pos < text.length && text.charAt(this.pos) !== "\n") this.pos++;
        continue;
      }
      if (c === "\n") {
        this.pos++;
        return { kind: "newline", line: this.line++ };
      }
      break;
    }
    const c = text.charAt(this.pos);
    const line = this.line;
    if (c === "'" || c === '"') return { kind: "string", text: this.readString(c), line };
    if (isDigit(c) || (c === "-" && isDigit(text.charAt(this.pos + 1)))) {
      const start = this.pos++;
      while (this.pos < text.length && isNumberPart(text.charAt(this.pos))) this.pos++;
      return { kind: "number", text: text.slice(start, this.pos), line };
    }
    if (isIdentStart(c)) {
      const start = this.pos++;
      while (this.pos < text.length && isIdentPart(text.charAt(this.pos))) this.pos++;
      return { kind: "ident", text: text.slice(start, this.pos), line };
    }
    if (c === "+" && text.charAt(this.pos + 1) === "=") {
      this.pos += 2;
      return { kind: "punct", text: "+=", line };
    }
    if (c === "=" || c === "[" || c === "]" || c === "," || c === ";") {
      this.pos++;
      return { kind: "punct", text: c, line };
    }
    const shown = String.fromCodePoint(text.codePointAt(this.pos) ?? 0);
    throw new ConfigError("syntax", this.file, line, undefined, `unexpected character ${quote(shown)}`);
  }

  /** Reads a quoted string starting at the opening quote; returns the decoded contents. */
  private readString(quoteChar: string): string {
    const text = this.text;
    const line = this.line;
    const unterminated = (): ConfigError =>
      new ConfigError(
        "unterminated-string",
        this.file,
        line,
        undefined,
        `unterminated string: the ${quoteChar} opened here does not close on this line`,
      );
    let out = "";
    this.pos++;
    for (;;) {
      if (this.pos >= text.length) throw unterminated();
      const c = text.charAt(this.pos);
      if (c === "\n") throw unterminated();
      if (c === "\r" && text.charAt(this.pos + 1) === "\n") throw unterminated();
      this.pos++;
      if (c === quoteChar) return out;
      if (c !== "\\") {
        out += c;
        continue;
      }
      if (this.pos >= text.length) throw unterminated();
      const e = text.charAt(this.pos);
      if (e === "\n" || e === "\r") throw unterminated();
      this.pos++;
      switch (e) {
        case "n":
          out += "\n";
          continue;
        case "r":
          out += "\r";
          continue;
        case "t":
          out += "\t";
          continue;
        case "x": {
          const hex = text.slice(this.pos, this.pos + 2);
          if (hex.length !== 2 || !isHexDigit(hex.charAt(0)) || !isHexDigit(hex.charAt(1))) {
            throw new ConfigError("syntax", this.file, line, undefined, `bad escape "\\x${hex}": \\x takes two hex digits`);
          }
          this.pos += 2;
          out += String.fromCharCode(parseInt(hex, 16));
          continue;
        }
      }
      if (e >= "0" && e <= "7") {
        let digits = e;
        while (digits.length < 3 && text.charAt(this.pos) >= "0" && text.charAt(this.pos) <= "7") {
          digits += text.charAt(this.pos++);
        }
        const code = parseInt(digits, 8);
        if (code > 0xff) {
          throw new ConfigError("syntax", this.file, line, undefined, `bad escape "\\${digits}": octal escapes stop at \\377`);
        }
        out += String.fromCharCode(code);
        continue;
      }
      if (isLetter(e) || isDigit(e)) {
        throw new ConfigError("syntax", this.file, line, undefined, `bad escape "\\${e}" in string`);
      }
      out += e;
    }
  }
}

class Parser {
  private lookahead: Token;

  constructor(
    private readonly lexer: Lexer,
    private readonly file: string,
  ) {
    this.lookahead = lexer.next();
  }

  private peek(): Token {
    return this.lookahead;
  }

  private take(): Token {
    const token = this.lookahead;
    if (token.kind !== "eof") this.lookahead = this.lexer.next();
    return token;
  }

  private skipNewlines(): void {
    while (this.peek().kind === "newline") this.take();
  }

  private error(line: number, key: string | undefined, detail: string): ConfigError {
    return new ConfigError("syntax", this.file, line, key, detail);
  }

  parseFile(): RawConfig {
    const entries: RawEntry[] = [];
    const seen = new Map<string, RawEntry>();
    for (;;) {
      const token = this.take();
      if (token.kind === "eof") break;
      if (token.kind === "newline" || (token.kind === "punct" && token.text === ";")) continue;
      if (token.kind !== "ident") {
        throw this.error(token.line, undefined, `expected a key (lines read KEY = VALUE), got ${describe(token)}`);
      }
      const key = token.text;
      const op = this.take();
      if (op.kind === "punct" && op.text === "+=") {
        throw this.error(op.line, key, `"+=" is not supported: set each key once with "="`);
      }
      if (!(op.kind === "punct" && op.text === "=")) {
        throw this.error(op.line, key, `expected "=" after the key, got ${describe(op)}`);
      }
      const value = this.parseValue(key);
      const end = this.peek();
      if (!(end.kind === "newline" || end.kind === "eof" || (end.kind === "punct" && end.text === ";"))) {
        throw this.error(end.line, key, `expected the end of the line after the value, got ${describe(end)}`);
      }
      const entry: RawEntry = { key, line: token.line, value };
      const first = seen.get(key);
      if (first !== undefined) {
        throw new ConfigError(
          "duplicate-key",
          this.file,
          token.line,
          key,
          `duplicate key (first set at ${this.file}:${first.line})`,
          { file: this.file, line: first.line },
        );
      }
      seen.set(key, entry);
      entries.push(entry);
    }
    return { file: this.file, entries };
  }

  private parseValue(key: string): RawValue {
    const token = this.take();
    switch (token.kind) {
      case "string":
        return { kind: "atom", text: token.text, quoted: true, line: token.line };
      case "number":
        return { kind: "atom", text: token.text, quoted: false, line: token.line };
      case "ident":
        throw this.error(token.line, key, `expected a value, got the bare word ${token.text} (quote strings: "${token.text}")`);
      case "newline":
      case "eof":
        throw this.error(token.line, key, `missing value after "="`);
      case "punct":
        if (token.text === "[") return this.parseList(key, token.line);
        throw this.error(token.line, key, `expected a value, got ${describe(token)}`);
    }
  }

  /**
   * Whether `token` (just taken inside a list) shows that the list was never
   * closed: the end of the file, a ";", or the start of the next statement
   * (a key followed by "=").
   */
  private endsList(token: Token): boolean {
    if (token.kind === "eof" || (token.kind === "punct" && token.text === ";")) return true;
    if (token.kind !== "ident") return false;
    const next = this.peek();
    return next.kind === "punct" && (next.text === "=" || next.text === "+=");
  }

  private parseList(key: string, openLine: number): RawList {
    const items: RawAtom[] = [];
    const unterminated = (at: Token): ConfigError =>
      new ConfigError(
        "unterminated-list",
        this.file,
        openLine,
        key,
        `unterminated list: the "[" opened here has no matching "]" (reached ${describe(at)} at line ${at.line})`,
      );
    for (;;) {
      this.skipNewlines();
      let token = this.take();
      if (token.kind === "punct" && token.text === "]") break;
      if (token.kind === "string" || token.kind === "number") {
        items.push({ kind: "atom", text: token.text, quoted: token.kind === "string", line: token.line });
      } else if (this.endsList(token)) {
        throw unterminated(token);
      } else if (token.kind === "ident") {
        throw this.error(token.line, key, `expected a list item, got the bare word ${token.text} (quote strings: "${token.text}")`);
      } else if (token.kind === "punct" && token.text === "[") {
        throw this.error(token.line, key, "nested lists are not supported");
      } else {
        throw this.error(token.line, key, `expected a list item or "]", got ${describe(token)}`);
      }
      this.skipNewlines();
      token = this.take();
      if (token.kind === "punct" && token.text === "]") break;
      if (token.kind === "punct" && token.text === ",") continue;
      if (this.endsList(token)) throw unterminated(token);
      throw this.error(token.line, key, `expected "," or "]" after a list item, got ${describe(token)}`);
    }
    return { kind: "list", items, line: openLine };
  }
}

/**
 * Parses xl.cfg text into raw entries. `file` names the file in error
 * messages. Throws ConfigError (syntax, unterminated-string,
 * unterminated-list, duplicate-key).
 */
export function parseConfigText(text: string, file: string): RawConfig {
  return new Parser(new Lexer(text, file), file).parseFile();
}
