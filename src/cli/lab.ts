import { labDown, labStatus, labUp } from "../lab/lab.js";
import { fail } from "./output.js";

/** `colo lab up|down|status` (docs/lab.md). */
export async function labVerb(action: string): Promise<void> {
  switch (action) {
    case "up":
      await labUp();
      process.stdout.write("lab up\n");
      return;
    case "down":
      await labDown();
      process.stdout.write("lab down\n");
      return;
    case "status":
      process.stdout.write(JSON.stringify(await labStatus(), null, 2) + "\n");
      return;
    default:
      fail(`lab: unknown action "${action}" (expected up, down or status)`);
  }
}
