// Hostname convention: <apptype>-<environment>-<instance>.<domain> by default, or the class's pattern.
import { DEFAULT_NAMING_PATTERN } from "../api/defaults.js";
import { StepError } from "../errors.js";

export interface HostnameParts {
  hostname: string;
  shortName: string;
  domain: string;
  apptype: string;
  environment: string;
  instance: string;
}

export function parseHostname(hostname: string, pattern = DEFAULT_NAMING_PATTERN): HostnameParts {
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (err) {
    throw new StepError(
      "InvalidClass",
      `The class's naming.pattern is not a valid regular expression: ${(err as Error).message}.`,
      { condition: "NameResolved" },
    );
  }
  const m = re.exec(hostname);
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

/** Label values must be ≤63 characters of [A-Za-z0-9._-]; longer or odd parts are left out. */
export function partLabels(parts: HostnameParts): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ["apptype", "environment", "instance"] as const) {
    const v = parts[key];
    if (/^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$/.test(v)) out[`provisioning.vsop.dev/${key}`] = v;
  }
  return out;
}
