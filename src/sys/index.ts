/**
 * src/sys: the only code that touches the kernel. Layers above import from
 * here (never koffi, never the files behind this index directly), except
 * clock.ts, which every layer imports directly (it loads no koffi).
 */
export { elapsedMs, monotonicMs, type Clock } from "./clock.js";
export { SysError, isSysError } from "./errors.js";
export { IFNAMSIZ, validateInterfaceName } from "./ifreq.js";
export { withNetns, validateNetnsName } from "./netns.js";
export type { NetnsOption } from "./netif.js";
export {
  addToBridge,
  interfaceExists,
  interfaceIndex,
  isLinkUp,
  linkFlags,
  removeFromBridge,
  setLinkDown,
  setLinkUp,
} from "./netif.js";
export type { FrameListener, TapDevice, TapErrorListener, TapOptions, TapStats } from "./tap.js";
export { openTap } from "./tap.js";
export type { SharedMapping } from "./shared-memory.js";
export { mapSharedFile } from "./shared-memory.js";
export { descriptorsLinkedTo, mappingsOfFile, processEnded, threadsOf } from "./process.js";
export type { UnixPair } from "./unix-pair.js";
export { closeEnd, unixStreamPair, unreadBytes } from "./unix-pair.js";
export type { WriteLog } from "./write-log.js";
export { bufferAddress, openProcessWriteLog, openWriteLog } from "./write-log.js";
