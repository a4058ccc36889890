// Hostname convention: <apptype>-<environment>-<instance>.<domain> by default, or the class's pattern.
import vm from "node:vm";
import { DEFAULT_NAMING_PATTERN } from "../api/defaults.js";
import { StepError } from "../errors.js";
import { compilePattern, refusePattern } from "./pattern.js";

export interface HostnameParts {
  hostname: string;
  shortName: string;
  domain: string;
  apptype: string;
  environment: string;
  instance: string;
}

export function parseHostname(hostname: string, pattern = DEFAULT_NAMING_PATTERN): HostnameParts {
  const re = compilePattern(pattern);
  checkLength(hostname);
  // vsop's own pattern has no ambiguous repetition and the input is at most 253 characters, so
  // it runs without the watchdog, whose thread per match cost about 0.5 ms on every reconcile
  // (3 of the operator's 29 CPU seconds in a 200-server make bench).
  const m =
    pattern === DEFAULT_NAMING_PATTERN ? re.exec(hostname) : execBounded(re, hostname, pattern);
  const g = m?.groups ?? {};
  if (!m || !g.apptype || !g.environment || !g.instance) {
    throw new StepError(
      "NameConventionViolation",
      `Hostname ${hostname} does not follow the naming convention ${
        pattern === DEFAULT_NAMING_PATTERN ? "<apptype>-<environment>-<instance>.<domain>" : pattern
      }; rename it, e.g. web-prod-1.example.com.`,
      { condition: "NameResolved" },
    );
  }
  const dot = hostname.indexOf(".");
  return {
    hostname,
    shortName: hostname.slice(0, dot),
    domain: g.domain ?? hostname.slice(dot + 1),
    apptype: g.apptype,
    environment: g.environment,
    instance: g.instance,
  };
}

/** DNS limits, checked before any pattern runs so that the input a pattern sees stays short. */
const MAX_HOSTNAME_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;

function checkLength(hostname: string): void {
  const long = hostname.split(".").find((l) => l.length > MAX_LABEL_LENGTH);
  if (hostname.length <= MAX_HOSTNAME_LENGTH && long === undefined) return;
  const shown = hostname.length > 80 ? `${hostname.slice(0, 60)}…` : hostname;
  throw new StepError(
    "NameConventionViolation",
    long === undefined
      ? `Hostname ${shown} is ${hostname.length} characters long; a DNS name has at most ${MAX_HOSTNAME_LENGTH}, choose a shorter one.`
      : `Hostname ${shown} has a label of ${long.length} characters; a DNS label has at most ${MAX_LABEL_LENGTH}, choose a shorter one.`,
    { condition: "NameResolved" },
  );
}

// Backstop for what a static check cannot see (e.g. many adjacent .* are polynomial, not
// exponential): the match runs in a vm context whose watchdog interrupts it, and a pattern that
// was interrupted MATCH_ATTEMPTS times in a row is refused from then on. The watchdog counts
// wall time, so one interrupted match may only mean a process starved of CPU (make chaos and
// make bench saw the default pattern refused, and every server Failed, on a loaded machine).
const MATCH_TIMEOUT_MS = 200;
const MATCH_ATTEMPTS = 3;
const matchContext = vm.createContext({ re: /$^/, input: "" });
const matchScript = new vm.Script("re.exec(input)");

export type MatchRunner = (re: RegExp, input: string, timeoutMs: number) => RegExpExecArray | null;

const runMatch: MatchRunner = (re, input, timeoutMs) => {
  Object.assign(matchContext, { re, input });
  return matchScript.runInContext(matchContext, { timeout: timeoutMs }) as RegExpExecArray | null;
};

/** re.exec(input) under the watchdog; `run` is replaceable for tests. */
export function execBounded(
  re: RegExp,
  input: string,
  pattern: string,
  run: MatchRunner = runMatch,
): RegExpExecArray | null {
  for (let attempt = 1; ; attempt++) {
    try {
      return run(re, input, MATCH_TIMEOUT_MS);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ERR_SCRIPT_EXECUTION_TIMEOUT") throw err;
      if (attempt < MATCH_ATTEMPTS) continue;
      throw refusePattern(
        pattern,
        `matching it took longer than ${MATCH_TIMEOUT_MS} ms, ${MATCH_ATTEMPTS} times in a row, so it backtracks too much; simplify it`,
      );
    }
  }
}

/** The label vsop sets on a server for one part of its hostname. */
export const partLabel = (part: "apptype" | "environment" | "instance") =>
  `provisioning.vsop.dev/${part}`;

/** Label values must be ≤63 characters of [A-Za-z0-9._-]; longer or odd parts are left out. */
export function partLabels(parts: HostnameParts): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ["apptype", "environment", "instance"] as const) {
    const v = parts[key];
    if (/^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$/.test(v)) out[partLabel(key)] = v;
  }
  return out;
}
