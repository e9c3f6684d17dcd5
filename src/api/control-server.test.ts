import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlServer, type ControlHandler } from "./control-server.js";
import { openConsole, request, ControlError } from "./control-client.js";

function rawExchange(path: string, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = "";
    s.on("data", (c) => (out += c.toString()));
    s.on("close", () => resolve(out));
    s.on("error", reject);
    s.write(payload);
  });
}

test("control socket: requests, errors, console streaming, cleanup", async () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-ctl-"));
  const path = join(dir, "vm.sock");
  const typed: string[] = [];
  const handler: ControlHandler = {
    async handle(req) {
      if (req.op === "status") return { state: "running" };
      if (req.op === "pause") throw new Error("cannot pause now");
      return undefined;
    },
    attachConsole(socket) {
      socket.write("hello from guest\n");
      socket.on("data", (c: Buffer) => {
        typed.push(c.toString());
        socket.write(`echo:${c.toString()}`);
      });
      socket.resume();
    },
  };
  const server = await ControlServer.listen(path, handler);
  try {
    assert.deepEqual(await request(path, { op: "status" }), { state: "running" });
    await assert.rejects(request(path, { op: "pause" }), (e: unknown) => e instanceof ControlError && /cannot pause now/.test(e.message));
    assert.match(await rawExchange(path, "{bad json\n"), /"ok":false.*not JSON/);
    assert.match(await rawExchange(path, '{"op":"fly"}\n'), /unknown op/);

    const con = await openConsole(path, true);
    const got = await new Promise<string>((resolve) => {
      let text = "";
      con.on("data", (c: Buffer) => {
        text += c.toString();
        if (text.includes("echo:ls")) resolve(text);
      });
      con.resume();
      con.write("ls");
    });
    con.destroy();
    assert.match(got, /hello from guest\n.*echo:ls/s);
    assert.deepEqual(typed, ["ls"]);
  } finally {
    await server.close();
    assert.equal(existsSync(path), false, "socket file removed on close");
    rmSync(dir, { recursive: true, force: true });
  }
  await assert.rejects(request(path, { op: "status" }, 1000), (e: unknown) => e instanceof ControlError && e.code === "UNREACHABLE");
});
