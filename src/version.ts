// vsop's version, from its package.json (dist/ and src/ both sit beside it).
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/**
 * The User-Agent of vsop's requests to the API server: its version, host (the pod's name in a
 * cluster) and process, so an audit log tells which replica or process wrote what.
 */
export function userAgent(): string {
  return `vsop/${version()} (${hostname()}; pid ${process.pid})`;
}
