/**
 * One vif spec string of `vif = [ ... ]`, after xl-network-configuration(5):
 *
 *   mac=00:16:3e:4c:00:10, bridge=colobr, ip=10.77.0.10/24, gatewayip=10.77.0.1, model=virtio
 *
 * Comma-separated key=value items; blanks around items are ignored; an empty
 * spec ('') is a vif with every default.
 */

import { createHash } from "node:crypto";
import type { NicModel, VifConfig } from "./types.js";
import { quote } from "./errors.js";
import { didYouMean } from "./suggest.js";
import { specError, validIPv4, validInterfaceName, type SpecContext } from "./spec.js";

const KNOWN_KEYS = ["mac", "bridge", "ip", "gatewayip", "forwarddev", "model"] as const;
type VifKey = (typeof KNOWN_KEYS)[number];

/** xl-network-configuration(5) keys we do not support, with why. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  script: "vif scripts are not supported: the VM layer creates the TAP and adds it to bridge= itself",
  vifname: "not supported: the VM layer names the TAP",
  type: "not supported: every vif is an emulated NIC (see model=)",
  backend: "there are no driver domains; the colo process serves the NIC itself",
  rate: "rate limiting is not supported",
  devid: "not supported: vifs are numbered in list order",
  accel: "not supported",
  mtu: "not supported (the MTU is 1500)",
  trusted: "not supported",
  untrusted: "not supported",
};

/** Xen's OUI (IEEE-assigned to XenSource), used by libxl for generated MACs. */
const XEN_OUI = [0x00, 0x16, 0x3e] as const;

/** xl's default prefix length when ip= has none is not defined; ours is /24. */
const DEFAULT_PREFIX = 24;

const MODELS: readonly NicModel[] = ["virtio", "ne2k"];

function isVifKey(key: string): key is VifKey {
  return (KNOWN_KEYS as readonly string[]).includes(key);
}

/**
 * The MAC a vif gets when mac= is absent: Xen's OUI, then three octets of
 * SHA-256(name, index) with the top bit of the fourth octet clear (as libxl
 * does for its random MACs). Deterministic, so a VM's primary and secondary
 * copies, built from the same config, present the same MAC.
 */
export function generatedMac(vmName: string, index: number): Uint8Array {
  const digest = createHash("sha256").update(`colo-vif\0${vmName}\0${index}`).digest();
  return Uint8Array.of(XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], (digest[0] ?? 0) & 0x7f, digest[1] ?? 0, digest[2] ?? 0);
}

/** "00:16:3e:4c:00:10" for six octets. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

function parseMac(text: string, ctx: SpecContext): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) {
    throw specError(ctx, "bad-value", `mac: expected six hex octets like 00:16:3e:4c:00:10, got ${quote(text)}`);
  }
  const mac = Uint8Array.from(text.split(":"), (octet) => parseInt(octet, 16));
  // IEEE 802: the least significant bit of the first octet marks a group (multicast) address.
  if (((mac[0] ?? 0) & 0x01) !== 0) {
    throw specError(ctx, "bad-value", `mac: ${text} is a multicast address (low bit of the first octet set); a NIC needs a unicast MAC`);
  }
  if (mac.every((b) => b === 0)) throw specError(ctx, "bad-value", "mac: 00:00:00:00:00:00 is not a valid NIC address");
  return mac;
}

function parseIp(text: string, ctx: SpecContext): string {
  if (/\s/.test(text)) throw specError(ctx, "unsupported-value", `ip: only one address is supported (got ${quote(text)})`);
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? String(DEFAULT_PREFIX) : text.slice(slash + 1);
  const prefix = /^[0-9]{1,2}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!validIPv4(address) || !(prefix >= 1 && prefix <= 32)) {
    throw specError(ctx, "bad-value", `ip: expected an IPv4 address with an optional /prefix (1..32), like 10.77.0.10/24, got ${quote(text)}`);
  }
  return `${address}/${prefix}`;
}

function parseInterfaceName(key: string, text: string, ctx: SpecContext): string {
  if (!validInterfaceName(text)) {
    throw specError(
      ctx,
      "bad-value",
      `${key}: expected a network interface name (1..15 characters, no blanks, "/" or ":"), got ${quote(text)}`,
    );
  }
  return text;
}

/**
 * Parses and validates one vif spec. `vmName` and `index` seed the MAC
 * when mac= is absent. Throws ConfigError naming ctx.key (e.g. "vif[0]").
 */
export function parseVifSpec(spec: string, ctx: SpecContext, vmName: string, index: number): VifConfig {
  const values: Partial<Record<VifKey, string>> = {};
  for (const rawItem of spec.split(",")) {
    const item = rawItem.trim();
    if (item === "") continue;
    const equals = item.indexOf("=");
    if (equals < 0) {
      const why = UNSUPPORTED[item];
      if (why !== undefined) throw specError(ctx, "unsupported-key", `${item}: ${why}`);
      throw specError(ctx, "syntax", `expected key=value, got ${quote(item)}${didYouMean(item, KNOWN_KEYS)}`);
    }
    const key = item.slice(0, equals).trim();
    const value = item.slice(equals + 1).trim();
    const why = UNSUPPORTED[key];
    if (why !== undefined) throw specError(ctx, "unsupported-key", `${key}: ${why}`);
    if (key.startsWith("colo_")) {
      throw specError(
        ctx,
        "unsupported-key",
        `${key}: the COLO proxy is wired by colo itself; mirror and redirect ride the replication connection (forwarddev= is accepted, not needed)`,
      );
    }
    if (!isVifKey(key)) throw specError(ctx, "unknown-key", `unknown vif key ${quote(key)}${didYouMean(key, KNOWN_KEYS)}`);
    if (values[key] !== undefined) throw specError(ctx, "bad-value", `${key}: given twice`);
    values[key] = value;
  }

  const vif: VifConfig = {
    mac: values.mac === undefined ? generatedMac(vmName, index) : parseMac(values.mac, ctx),
    model: "virtio",
    at: { file: ctx.file, line: ctx.line },
  };
  if (values.model !== undefined) {
    const model = MODELS.find((m) => m === values.model);
    if (model === undefined) {
      throw specError(ctx, "unsupported-value", `model: expected virtio or ne2k, got ${quote(values.model)}`);
    }
    vif.model = model;
  }
  if (values.bridge !== undefined) vif.bridge = parseInterfaceName("bridge", values.bridge, ctx);
  if (values.ip !== undefined) vif.ip = parseIp(values.ip, ctx);
  if (values.gatewayip !== undefined) {
    if (!validIPv4(values.gatewayip)) {
      throw specError(ctx, "bad-value", `gatewayip: expected an IPv4 address like 10.77.0.1, got ${quote(values.gatewayip)}`);
    }
    vif.gateway = values.gatewayip;
  }
  if (values.forwarddev !== undefined) vif.forwarddev = parseInterfaceName("forwarddev", values.forwarddev, ctx);
  return vif;
}
