/**
 * The QMP wire format: the byte stream from QEMU cut into lines, and each
 * line parsed once into a typed message. Source: QEMU 7.2
 * docs/interop/qmp-spec.txt (§2.2 greeting, §2.4 success/error responses,
 * §2.5 asynchronous events; every server message is one JSON object on one
 * line ending in CRLF).
 *
 * Nothing here throws on bad input: a bad line becomes a `malformed`
 * message with the reason, and the connection decides what that means.
 */
import { StringDecoder } from "node:string_decoder";

/** A JSON value we send (the arguments of a command). */
export type JsonValue = string | number | boolean | null | readonly JsonValue[] | { readonly [key: string]: JsonValue };

/** A JSON object as received: fields not yet narrowed. */
export type JsonObject = Readonly<Record<string, unknown>>;

/** The `id` we put on a command and QEMU echoes back. */
export type QmpId = number | string;

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  /** Distribution package string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3". */
  package: string;
}

export interface QmpGreeting {
  version: QemuVersion;
  /** Optional protocol capabilities offered (7.2 offers "oob"). */
  capabilities: readonly string[];
}

export interface QmpEvent {
  event: string;
  data: JsonObject;
  /** QEMU's wall clock when it emitted the event (logs; STOP to RESUME times a pause: vcpu-stop-timer.ts). */
  timestamp: { seconds: number; microseconds: number };
}

export type QmpMessage =
  | { kind: "greeting"; greeting: QmpGreeting }
  | { kind: "return"; id: QmpId | undefined; value: unknown }
  | { kind: "error"; id: QmpId | undefined; class: string; desc: string }
  | { kind: "event"; event: QmpEvent }
  | { kind: "malformed"; why: string };

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0;
}

/** `QMP.version` of the greeting, or `query-version`'s return value. */
export function parseQemuVersion(v: unknown): QemuVersion | string {
  if (!isJsonObject(v)) return "version is not an object";
  const qemu = v.qemu;
  if (!isJsonObject(qemu)) return "version.qemu is not an object";
  const { major, minor, micro } = qemu;
  if (!isCount(major) || !isCount(minor) || !isCount(micro)) return "version.qemu.{major,minor,micro} are not counts";
  if (typeof v.package !== "string") return "version.package is not a string";
  return { major, minor, micro, package: v.package };
}

function parseGreeting(body: unknown): QmpMessage {
  if (!isJsonObject(body)) return { kind: "malformed", why: "QMP greeting is not an object" };
  const version = parseQemuVersion(body.version);
  if (typeof version === "string") return { kind: "malformed", why: `QMP greeting: ${version}` };
  const caps = body.capabilities;
  if (!Array.isArray(caps) || !caps.every((c): c is string => typeof c === "string")) {
    return { kind: "malformed", why: "QMP greeting: capabilities is not a list of strings" };
  }
  return { kind: "greeting", greeting: { version, capabilities: caps } };
}

function parseId(msg: JsonObject): QmpId | undefined | false {
  if (!("id" in msg)) return undefined;
  const id = msg.id;
  return typeof id === "number" || typeof id === "string" ? id : false;
}

function parseEvent(msg: JsonObject): QmpMessage {
  const name = msg.event;
  if (typeof name !== "string" || name === "") return { kind: "malformed", why: "event name is not a string" };
  const data = msg.data ?? {};
  if (!isJsonObject(data)) return { kind: "malformed", why: `event ${name}: data is not an object` };
  const ts = msg.timestamp;
  if (!isJsonObject(ts) || typeof ts.seconds !== "number" || typeof ts.microseconds !== "number") {
    return { kind: "malformed", why: `event ${name}: timestamp is not {seconds, microseconds}` };
  }
  return { kind: "event", event: { event: name, data, timestamp: { seconds: ts.seconds, microseconds: ts.microseconds } } };
}

/** Parses one line (without its line ending) from QEMU. */
export function parseQmpLine(line: string): QmpMessage {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    return { kind: "malformed", why: `not JSON (${err instanceof Error ? err.message : String(err)})` };
  }
  if (!isJsonObject(msg)) return { kind: "malformed", why: "not a JSON object" };
  if ("QMP" in msg) return parseGreeting(msg.QMP);
  if ("event" in msg) return parseEvent(msg);
  const id = parseId(msg);
  if (id === false) return { kind: "malformed", why: "id is neither a number nor a string" };
  if ("return" in msg) return { kind: "return", id, value: msg.return };
  if ("error" in msg) {
    const e = msg.error;
    if (!isJsonObject(e) || typeof e.class !== "string" || typeof e.desc !== "string") {
      return { kind: "malformed", why: "error is not {class, desc}" };
    }
    return { kind: "error", id, class: e.class, desc: e.desc };
  }
  return { kind: "malformed", why: "neither a greeting, a return, an error nor an event" };
}

/** A line quoted for an error message: bounded, control characters escaped by JSON.stringify. */
export function quoteLine(line: string, max = 200): string {
  return JSON.stringify(line.length > max ? `${line.slice(0, max)}...` : line);
}

/** Longest line we accept, in characters: a `query-qmp-schema` reply is ~200 K; anything near this is not QMP. */
export const MAX_QMP_LINE_CHARS = 16 * 2 ** 20;

/**
 * Cuts a byte stream into lines. UTF-8 sequences split across chunks are
 * kept whole; a trailing CR is dropped; empty lines are skipped. A line
 * longer than `maxLineChars` is an error (QEMU never sends one).
 */
export class QmpLineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";

  constructor(private readonly maxLineChars = MAX_QMP_LINE_CHARS) {}

  /** The complete lines in `chunk` (plus what came before), or an error string when the line limit is exceeded. */
  push(chunk: Buffer): string[] | { tooLong: string } {
    const text = this.partial + this.decoder.write(chunk);
    const parts = text.split("\n");
    this.partial = parts.pop() ?? "";
    const longest = [...parts, this.partial].find((p) => p.length > this.maxLineChars);
    if (longest !== undefined) {
      return { tooLong: `a line longer than ${this.maxLineChars} characters (starts ${quoteLine(longest, 80)})` };
    }
    const lines: string[] = [];
    for (const part of parts) {
      const line = part.endsWith("\r") ? part.slice(0, -1) : part;
      if (line.trim() !== "") lines.push(line);
    }
    return lines;
  }

  /** What is left at EOF: an incomplete last line, if any. */
  end(): string {
    const rest = this.partial + this.decoder.end();
    this.partial = "";
    return rest.trim();
  }
}
