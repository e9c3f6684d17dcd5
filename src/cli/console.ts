import { openConsole } from "../api/control-client.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm } from "../api/registry.js";
import { fail } from "./output.js";

/** Ctrl-] detaches, as in `xl console` and telnet. */
export const DETACH_KEY = 0x1d;

/**
 * `colo console NAME`: the guest's serial console on this terminal. With a
 * TTY, the terminal is in raw mode and Ctrl-] detaches; with piped input the
 * console closes when input ends.
 */
export async function attachConsole(name: string, opts: { replay: boolean }): Promise<void> {
  const record = findVm(name);
  if (!record) fail(`no VM named ${name} is running (see colo list)`);
  const socket = await openConsole(vmRunFiles(name).socket, opts.replay);
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  if (tty) {
    process.stderr.write(`colo: connected to ${name}'s console; Ctrl-] to detach\r\n`);
    stdin.setRawMode(true);
  }
  await new Promise<void>((resolve) => {
    let closed = false;
    const finish = () => {
      if (closed) return;
      closed = true;
      if (tty) stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onInput);
      socket.destroy();
      resolve();
    };
    const onInput = (chunk: Buffer) => {
      const detach = tty ? chunk.indexOf(DETACH_KEY) : -1;
      if (detach >= 0) {
        if (detach > 0) socket.write(chunk.subarray(0, detach));
        finish();
        return;
      }
      socket.write(chunk);
    };
    socket.on("data", (chunk: Buffer) => process.stdout.write(chunk));
    socket.on("close", finish);
    socket.on("error", finish);
    socket.resume();
    stdin.on("data", onInput);
    stdin.on("end", () => {
      // Piped input: give the guest a moment's output stream until the socket drains, then close.
      socket.end();
    });
    stdin.resume();
  });
  if (tty) process.stderr.write("\r\ncolo: detached\r\n");
}
