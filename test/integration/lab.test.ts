/**
 * The lab (src/lab, docs/lab.md) for real: up twice (the second run changes
 * nothing), traffic client -> host bridge over the LAN and h1 <-> h2 over
 * the replication link, completion of a damaged lab, down twice.
 *
 * Needs root. Uses its own prefix, so a developer's running lab ("colo") is
 * never touched. Reachability is checked with a one-datagram UDP echo
 * between two `node` processes in the namespaces (no ping on these hosts).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { labDown, labStatus, labTopology, labUp, LAB } from "../../src/lab/lab.js";
import { listNetns } from "../../src/lab/link-state.js";
import { runIp } from "../../src/lab/ip-command.js";
import { preconditionTest } from "../tools/lab-fixture.js";
import { cleanupAlways } from "../tools/interrupt.js";

const PREFIX = `colotest-${process.pid}`;
const T = labTopology(PREFIX);
const skip = process.getuid?.() === 0 ? false : "needs root (network namespaces)";
const rootTest = preconditionTest(skip);
const ECHO_PORT = 7077;

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Spawns `ip netns exec NS node -e SCRIPT ARGS`; `ready` resolves on the first stdout line. */
function nodeIn(netns: string, script: string, args: string[]): { ready: Promise<string>; exit: Promise<Exit> } {
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let onLine: (line: string) => void = () => undefined;
  const ready = new Promise<string>((res) => (onLine = res));
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
    if (stdout.includes("\n")) onLine(stdout.slice(0, stdout.indexOf("\n")));
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exit = new Promise<Exit>((res, rej) => {
    child.on("error", rej);
    child.on("close", (code) => {
      onLine("");
      res({ code, stdout, stderr });
    });
  });
  return { ready, exit };
}

// Echoes one datagram, then exits; gives up after 10 s (a guard, not a wait).
const ECHO_SERVER = `
  const s = require("node:dgram").createSocket("udp4");
  const guard = setTimeout(() => process.exit(3), 10000);
  s.on("message", (m, from) => s.send(m, from.port, from.address, () => { clearTimeout(guard); s.close(); }));
  s.bind(Number(process.argv[2]), process.argv[1], () => console.log("ready"));`;
// Sends one datagram, prints the echo; exits 1 when none comes within 3 s.
const ECHO_CLIENT = `
  const s = require("node:dgram").createSocket("udp4");
  const guard = setTimeout(() => { console.error("no echo from " + process.argv[1]); process.exit(1); }, 3000);
  s.on("message", (m, from) => { console.log(m.toString() + " from " + from.address); clearTimeout(guard); s.close(); });
  s.send(process.argv[3], Number(process.argv[2]), process.argv[1]);`;

/** A UDP datagram from `clientNs` to `serverIp` (bound in `serverNs`) and its echo back. */
async function udpEcho(serverNs: string, serverIp: string, clientNs: string): Promise<void> {
  const token = `colo-lab-${randomBytes(6).toString("hex")}`;
  const server = nodeIn(serverNs, ECHO_SERVER, [serverIp, String(ECHO_PORT)]);
  if ((await server.ready) !== "ready") assert.fail(`echo server in ${serverNs} on ${serverIp}: ${(await server.exit).stderr}`);
  const client = await nodeIn(clientNs, ECHO_CLIENT, [serverIp, String(ECHO_PORT), token]).exit;
  const srv = await server.exit;
  assert.equal(client.code, 0, `${clientNs} -> ${serverIp} (${serverNs}): ${client.stderr}; server: ${JSON.stringify(srv)}`);
  assert.equal(client.stdout.trim(), `${token} from ${serverIp}`);
  assert.equal(srv.code, 0, srv.stderr);
}

async function link(ns: string, name: string): Promise<{ master?: string; flags: string[]; addr_info: { local: string; prefixlen: number }[] }> {
  const out = JSON.parse(await runIp(["-n", ns, "-j", "addr", "show", "dev", name])) as { master?: string; flags: string[]; addr_info: { local: string; prefixlen: number }[] }[];
  const l = out[0];
  assert.ok(l, `${ns}: no link ${name}`);
  return l;
}

async function prefixedNamespaces(): Promise<string[]> {
  return [...(await listNetns())].filter((n) => n.startsWith(`${PREFIX}-`));
}

before(async () => {
  if (skip) return;
  await labDown({ prefix: PREFIX });
});

cleanupAlways(async () => {
  if (skip) return;
  await labDown({ prefix: PREFIX });
});

test("topology constants", () => {
  assert.equal(LAB.prefix, "colo");
  assert.deepEqual(LAB.hosts, ["colo-h1", "colo-h2"]);
  assert.equal(LAB.namespaces.client, "colo-client");
  assert.equal(LAB.namespaces.lan, "colo-lan");
  assert.equal(LAB.hostBridge, "colobr");
  assert.equal(LAB.guestIp, "10.77.0.10");
  assert.equal(LAB.clientIp, "10.77.0.2");
  assert.deepEqual(LAB.replIps, ["10.77.1.1", "10.77.1.2"]);
  assert.deepEqual(T.hosts, [`${PREFIX}-h1`, `${PREFIX}-h2`]);
  assert.throws(() => labTopology("bad prefix"), RangeError);
});

rootTest("lab up twice, LAN and replication traffic, completion of a damaged lab, down twice", { timeout: 120_000 }, async (t) => {
  const { lan, client, h1, h2 } = T.namespaces;

  const first = await labUp({ prefix: PREFIX });
  assert.ok(first.commands.length > 20, first.commands.join("\n"));
  const second = await labUp({ prefix: PREFIX });
  assert.deepEqual(second.commands, [], "a complete lab: the second labUp runs no command");
  const status = await labStatus({ prefix: PREFIX });
  assert.equal(status.state, "up");
  assert.deepEqual(status.problems, []);
  assert.deepEqual(status.namespaces, { [lan]: true, [client]: true, [h1]: true, [h2]: true });

  // The wiring, as ip(8) reports it.
  assert.deepEqual((await link(client, T.clientIf)).addr_info.map((a) => `${a.local}/${a.prefixlen}`), ["10.77.0.2/24"]);
  for (const [i, host] of T.hosts.entries()) {
    assert.equal((await link(host, T.hostUplink)).master, T.hostBridge);
    const br = await link(host, T.hostBridge);
    assert.ok(br.flags.includes("UP"));
    assert.deepEqual(br.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${T.hostLanIps[i]}/24`], "the host's own LAN address (its path to the arbiter)");
  }
  assert.deepEqual((await link(lan, T.lanBridge)).addr_info.map((a) => `${a.local}/${a.prefixlen}`), ["10.77.0.1/24"], "the arbiter's address");
  for (const port of Object.values(T.lanPorts)) assert.equal((await link(lan, port)).master, T.lanBridge);
  assert.deepEqual((await link(h1, T.replIf)).addr_info.map((a) => a.local), ["10.77.1.1"]);
  assert.deepEqual((await link(h2, T.replIf)).addr_info.map((a) => a.local), ["10.77.1.2"]);

  // The client reaches each host's bridge over the LAN (what a TAP on colobr would be); the hosts reach the arbiter's address.
  for (const [host, addr] of [[h1, "10.77.0.3"], [h2, "10.77.0.4"]] as const) {
    await udpEcho(host, addr, client);
    await udpEcho(lan, "10.77.0.1", host);
  }
  // h1 <-> h2 over the replication link, both ways.
  await udpEcho(h2, "10.77.1.2", h1);
  await udpEcho(h1, "10.77.1.1", h2);

  // Damage: an uplink gone (its veth peer goes too), the replication link cut, an address lost.
  await runIp(["-n", lan, "link", "del", "dev", T.lanPorts.h2]);
  await runIp(["-n", h1, "link", "set", "dev", T.replIf, "down"]);
  await runIp(["-n", client, "addr", "flush", "dev", T.clientIf]);
  const damaged = await labStatus({ prefix: PREFIX });
  assert.equal(damaged.state, "partial");
  assert.ok(damaged.problems.includes(`veth ${h2}/${T.hostUplink} <-> ${lan}/${T.lanPorts.h2} missing`), damaged.problems.join("\n"));
  assert.ok(damaged.problems.includes(`${h1}: ${T.replIf} down`), damaged.problems.join("\n"));
  assert.ok(damaged.problems.includes(`${client}: ${T.clientIf} lacks 10.77.0.2/24`), damaged.problems.join("\n"));
  const repaired = await labUp({ prefix: PREFIX });
  t.diagnostic(`repair: ${repaired.commands.join(" ; ")}`);
  assert.ok(!repaired.commands.some((c) => c.includes("netns add")), "completed in place, not rebuilt");
  assert.equal((await labStatus({ prefix: PREFIX })).state, "up");
  await udpEcho(h2, "10.77.0.4", client); // the repaired uplink carries LAN traffic again
  await udpEcho(h2, "10.77.1.2", h1);

  const down1 = await labDown({ prefix: PREFIX });
  assert.deepEqual([...down1.removed].sort(), [client, h1, h2, lan].sort());
  assert.deepEqual(down1.busy, []);
  const down2 = await labDown({ prefix: PREFIX });
  assert.deepEqual(down2.removed, []);
  assert.deepEqual(await prefixedNamespaces(), []);
  assert.equal((await labStatus({ prefix: PREFIX })).state, "down");
});
