/** Where a command would be executed from: checked before spawning, so a missing binary is named. */
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join, resolve } from "node:path";

export type ExecutableLookup = { path: string; why?: undefined } | { path?: undefined; why: string };

function executable(path: string): string | undefined {
  try {
    if (!statSync(path).isFile()) return `${path} is not a file`;
    accessSync(path, constants.X_OK);
    return undefined;
  } catch (err) {
    const code = err instanceof Error && "code" in err ? err.code : undefined;
    return code === "ENOENT" ? `${path} does not exist` : `${path} is not executable`;
  }
}

/** `name` as given when it holds a slash, else the first executable of that name on `searchPath`. */
export function findExecutable(name: string, searchPath: string): ExecutableLookup {
  if (name.includes("/")) {
    const path = isAbsolute(name) ? name : resolve(name);
    const why = executable(path);
    return why === undefined ? { path } : { why };
  }
  for (const dir of searchPath.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    if (executable(candidate) === undefined) return { path: candidate };
  }
  return { why: `${name} not found on PATH (${searchPath || "empty"})` };
}
