/**
 * A QEMU command line from a typed description: an array of arguments,
 * never a string a shell or QEMU could re-split. Values in QemuOpts/keyval
 * options (`-machine pc,memory-backend=ram0`) have their commas doubled,
 * QEMU's escape (util/qemu-option.c, util/keyval.c), so a path or name
 * cannot add a property of its own.
 */
import type { Accel } from "./accel.js";
import { QemuProcessError } from "./qemu-process-error.js";

export type QemuPropValue = string | number | boolean;
/** Properties of a QemuOpts/keyval option; `undefined` ones are left out. */
export type QemuProps = Readonly<Record<string, QemuPropValue | undefined>>;

/**
 * One option:
 * - `{ flag: "-no-shutdown" }`: the flag alone;
 * - `{ flag: "-kernel", raw: path }`: QEMU takes the whole string as given (`-kernel`, `-append`, `-incoming`);
 * - `{ flag: "-object", type: "memory-backend-file", props: { id: "ram0", ... } }`:
 *   `TYPE,key=value,...` with values escaped.
 */
export type QemuOption =
  | { readonly flag: string; readonly raw?: undefined; readonly props?: undefined }
  | { readonly flag: string; readonly raw: string; readonly props?: undefined }
  | { readonly flag: string; readonly type?: string; readonly props: QemuProps; readonly raw?: undefined };

export interface QemuMachine {
  /** `-machine TYPE,props` (`none` for a machine without devices, `pc`, `q35`). */
  machine: { type: string; props?: QemuProps };
  accel: Accel;
  /** `-m` in MiB. */
  memoryMiB?: number;
  /** `-cpu` model, e.g. "qemu64", "max". */
  cpu?: string;
  /** `-smp` vCPU count. */
  smp?: number;
  /** Everything else, in order: objects, chardevs, netdevs, devices, -kernel, -incoming ... */
  options?: readonly QemuOption[];
  /** Descriptors of ours QEMU inherits, in order, as its fd childFd(0), childFd(1), ... */
  passFds?: readonly number[];
}

/** The descriptor number in QEMU of passFds[i] (after stdin, stdout, stderr). */
export function childFd(i: number): number {
  return 3 + i;
}

/** Flags the process owner sets itself: a description may not add or override them. */
const RESERVED_FLAGS = new Set([
  "-S",
  "-qmp",
  "-qmp-pretty",
  "-mon",
  "-monitor",
  "-daemonize",
  "-pidfile",
  "-nodefaults",
  "-no-user-config",
  "-display",
  "-name",
  "-machine",
  "-M",
  "-accel",
  "-enable-kvm",
  "-m",
  "-cpu",
  "-smp",
]);

/** The chardev id of the QMP monitor (ours; a description's ids must differ). */
export const QMP_CHARDEV_ID = "colo-qmp";

const FLAG = /^-[A-Za-z][A-Za-z0-9_-]*$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function bad(vm: string, message: string): QemuProcessError {
  return new QemuProcessError(vm, "BAD_SPEC", `QEMU command line for ${vm}: ${message}`);
}

/** A string QEMU will see as one argument: no NUL (argv cannot carry one). */
function checkText(vm: string, what: string, s: string): string {
  if (s.includes("\0")) throw bad(vm, `${what} contains a NUL byte`);
  return s;
}

function escapeValue(s: string): string {
  return s.replaceAll(",", ",,");
}

function propText(vm: string, flag: string, key: string, v: QemuPropValue): string {
  if (typeof v === "boolean") return v ? "on" : "off";
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw bad(vm, `${flag} ${key}=${v}: not an integer`);
    return String(v);
  }
  return escapeValue(checkText(vm, `${flag} ${key}`, v));
}

/** `TYPE,key=value,...`; keys and the type are names, values escaped. */
export function formatOpts(vm: string, flag: string, type: string | undefined, props: QemuProps): string {
  const parts: string[] = [];
  if (type !== undefined) {
    if (!NAME.test(type)) throw bad(vm, `${flag} type ${JSON.stringify(type)} is not a name`);
    parts.push(type);
  }
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) continue;
    if (!NAME.test(key)) throw bad(vm, `${flag} property ${JSON.stringify(key)} is not a name`);
    parts.push(`${key}=${propText(vm, flag, key, value)}`);
  }
  if (parts.length === 0) throw bad(vm, `${flag} has neither a type nor properties`);
  return parts.join(",");
}

function optionArgs(vm: string, opt: QemuOption): string[] {
  if (!FLAG.test(opt.flag)) throw bad(vm, `${JSON.stringify(opt.flag)} is not an option flag`);
  if (RESERVED_FLAGS.has(opt.flag)) throw bad(vm, `${opt.flag} is set by the process owner, not by the description`);
  if (opt.raw !== undefined) return [opt.flag, checkText(vm, opt.flag, opt.raw)];
  if (opt.props !== undefined) {
    if (opt.props.id === QMP_CHARDEV_ID || opt.props.chardev === QMP_CHARDEV_ID) throw bad(vm, `id ${QMP_CHARDEV_ID} is the QMP monitor's`);
    return [opt.flag, formatOpts(vm, opt.flag, "type" in opt ? opt.type : undefined, opt.props)];
  }
  return [opt.flag];
}

function positive(vm: string, what: string, n: number): string {
  if (!Number.isSafeInteger(n) || n <= 0) throw bad(vm, `${what} ${n} is not a positive integer`);
  return String(n);
}

/**
 * The arguments after the binary: ours first (paused, no defaults, no
 * display, QMP on `qmpSocketPath`), then the description's.
 */
export function buildQemuArgs(vm: string, qmpSocketPath: string, m: QemuMachine): string[] {
  const args = [
    "-name",
    formatOpts(vm, "-name", undefined, { guest: vm }),
    "-S",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-chardev",
    formatOpts(vm, "-chardev", "socket", { id: QMP_CHARDEV_ID, path: qmpSocketPath, server: true, wait: false }),
    "-mon",
    formatOpts(vm, "-mon", undefined, { chardev: QMP_CHARDEV_ID, mode: "control" }),
    "-accel",
    m.accel,
    "-machine",
    formatOpts(vm, "-machine", m.machine.type, m.machine.props ?? {}),
  ];
  if (m.memoryMiB !== undefined) args.push("-m", positive(vm, "memoryMiB", m.memoryMiB));
  if (m.cpu !== undefined) {
    if (!NAME.test(m.cpu)) throw bad(vm, `cpu ${JSON.stringify(m.cpu)} is not a CPU model name`);
    args.push("-cpu", m.cpu);
  }
  if (m.smp !== undefined) args.push("-smp", positive(vm, "smp", m.smp));
  for (const opt of m.options ?? []) args.push(...optionArgs(vm, opt));
  return args;
}

/** A command line for logs: arguments quoted where a shell would need it (never run through one). */
export function showArgs(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_./:=,+@-]+$/.test(a) ? a : JSON.stringify(a))).join(" ");
}
