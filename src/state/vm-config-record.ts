/**
 * VM_CONFIG (docs/specs/stream.md §3.6): the VM's configuration file, so that
 * a restore or an incoming migration knows the VM's name, memory, kernel,
 * disks and NIC (as `xl save` keeps the domain config in the save file).
 * Body: `u32 format, u32 path_length`, the path, then the config text, both
 * UTF-8 without NUL.
 */
import { StreamError, type StreamErrorCode, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { MAX_VM_CONFIG_PATH, MAX_VM_CONFIG_TEXT, VM_CONFIG_SUBHEADER_SIZE } from "./record-types.js";

/** format values (spec §3.6). */
export const VM_CONFIG_FORMAT = {
  /** An xl.cfg-style config file (docs/config.md), UTF-8. */
  XL_CFG: 1,
} as const;

export type VmConfigFormat = (typeof VM_CONFIG_FORMAT)[keyof typeof VM_CONFIG_FORMAT];

export const vmConfigHeaderLayout = defineLayout("VM_CONFIG sub-header", VM_CONFIG_SUBHEADER_SIZE, {
  format: { offset: 0, type: "u32", meaning: "1: xl.cfg text, UTF-8" },
  pathLength: { offset: 4, type: "u32", meaning: "octets of the path; the text takes the rest of the body" },
});

/** A VM_CONFIG record as the reader yields it. */
export interface VmConfigRecord {
  readonly format: VmConfigFormat;
  /**
   * Absolute path of the config file on the sending host. Relative paths
   * inside `text` resolve against its folder.
   */
  readonly path: string;
  /** The config file's contents. */
  readonly text: string;
}

/** What StreamWriter.writeVmConfig() takes: the format is XL_CFG. */
export interface VmConfigInput {
  readonly path: string;
  readonly text: string;
}

/** Why a VM_CONFIG cannot be written or read: its StreamError code and detail. */
export interface VmConfigProblem {
  readonly code: StreamErrorCode;
  readonly detail: string;
}

/** Strict: invalid UTF-8 throws; a byte order mark is kept as part of the text (it is not special here). */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

function decodeUtf8(octets: Uint8Array): string | undefined {
  try {
    return utf8.decode(octets);
  } catch {
    return undefined;
  }
}

/** The contents rules shared by path and text (their lengths are checked by the caller). */
function contentsProblem(name: string, octets: Uint8Array): VmConfigProblem | undefined {
  const nul = octets.indexOf(0);
  if (nul >= 0) return { code: "BAD_FIELD", detail: `${name} has a NUL octet at ${nul}` };
  return undefined;
}

function pathProblem(path: Uint8Array): VmConfigProblem | undefined {
  if (path.length < 1 || path.length > MAX_VM_CONFIG_PATH) {
    return { code: "BAD_FIELD", detail: `path_length ${path.length}, allowed 1 to ${MAX_VM_CONFIG_PATH}` };
  }
  return contentsProblem("path", path) ?? (path[0] !== 0x2f ? { code: "BAD_FIELD", detail: "path is not absolute (it must begin with /)" } : undefined);
}

function textProblem(text: Uint8Array): VmConfigProblem | undefined {
  if (text.length < 1 || text.length > MAX_VM_CONFIG_TEXT) {
    return { code: "BAD_LENGTH", detail: `config text of ${text.length} octets, allowed 1 to ${MAX_VM_CONFIG_TEXT}` };
  }
  return contentsProblem("config text", text);
}

/** UTF-8 of a string the writer was given, or the problem (not a string, or a lone surrogate TextEncoder would replace). */
function encodeString(name: string, value: unknown): Uint8Array | VmConfigProblem {
  if (typeof value !== "string") return { code: "BAD_FIELD", detail: `${name} is not a string` };
  const octets = encoder.encode(value);
  if (decodeUtf8(octets) !== value) return { code: "BAD_FIELD", detail: `${name} is not well-formed Unicode (a lone surrogate)` };
  return octets;
}

/**
 * The body of a VM_CONFIG record (format XL_CFG) for `config`, or the problem
 * that forbids writing it, with the code a reader would reject it with.
 */
export function encodeVmConfig(config: VmConfigInput): Uint8Array | VmConfigProblem {
  const path = encodeString("path", config.path);
  if (!(path instanceof Uint8Array)) return path;
  const text = encodeString("config text", config.text);
  if (!(text instanceof Uint8Array)) return text;
  const problem = pathProblem(path) ?? textProblem(text);
  if (problem !== undefined) return problem;
  const body = new Uint8Array(VM_CONFIG_SUBHEADER_SIZE + path.length + text.length);
  vmConfigHeaderLayout.encodeInto(body, 0, { format: VM_CONFIG_FORMAT.XL_CFG, pathLength: path.length });
  body.set(path, VM_CONFIG_SUBHEADER_SIZE);
  body.set(text, VM_CONFIG_SUBHEADER_SIZE + path.length);
  return body;
}

/** Decode a body whose length is within the type's bounds (10 to 69 640 octets). */
export function decodeVmConfig(body: Uint8Array, where: StreamLocation): VmConfigRecord {
  const fail = (problem: VmConfigProblem): never => {
    throw new StreamError(problem.code, where, problem.detail);
  };
  const h = vmConfigHeaderLayout.decode(body);
  if (h.format !== VM_CONFIG_FORMAT.XL_CFG) fail({ code: "BAD_FIELD", detail: `unknown format ${h.format}` });
  if (h.pathLength < 1 || h.pathLength > MAX_VM_CONFIG_PATH) {
    fail({ code: "BAD_FIELD", detail: `path_length ${h.pathLength}, allowed 1 to ${MAX_VM_CONFIG_PATH}` });
  }
  const room = body.length - VM_CONFIG_SUBHEADER_SIZE;
  if (h.pathLength >= room) {
    fail({ code: "BAD_LENGTH", detail: `path_length ${h.pathLength} leaves no config text in a body of ${body.length} octets` });
  }
  const pathOctets = body.subarray(VM_CONFIG_SUBHEADER_SIZE, VM_CONFIG_SUBHEADER_SIZE + h.pathLength);
  const textOctets = body.subarray(VM_CONFIG_SUBHEADER_SIZE + h.pathLength);
  const problem = pathProblem(pathOctets) ?? textProblem(textOctets);
  if (problem !== undefined) fail(problem);
  const path = decodeUtf8(pathOctets);
  if (path === undefined) return fail({ code: "BAD_FIELD", detail: "path is not valid UTF-8" });
  const text = decodeUtf8(textOctets);
  if (text === undefined) return fail({ code: "BAD_FIELD", detail: "config text is not valid UTF-8" });
  return { format: VM_CONFIG_FORMAT.XL_CFG, path, text };
}
