import { spawn } from "node:child_process";

/** The name of the network namespace this process runs in (`ip netns identify`), if any. */
export function currentNetns(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "identify", String(process.pid)], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.on("error", () => resolve(undefined));
    child.on("close", () => resolve(out.trim() || undefined));
  });
}
