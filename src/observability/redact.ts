// The one place that decides what of an error or a text may leave the process (log lines,
// Events, condition messages). Errors pass an allow-list: name, message, code, HTTP status,
// method, URL path without query, vSphere fault name, and the same of their cause. Nothing else of
// an axios, amqplib or http object is ever read, so a new field (config.headers,
// request._header, ...) cannot slip through. Every text is scrubbed of what looks like a
// credential, whatever key or sentence it sits in.

export interface SafeError {
  type: string;
  message: string;
  code?: string;
  status?: number;
  method?: string;
  path?: string;
  fault?: string;
  cause?: SafeError;
}

const MAX_TEXT = 2000;
const CAUSE_DEPTH = 3;

const SCRUBS: [RegExp, string][] = [
  // PEM blocks (private keys, certificates): whole block, also when cut off.
  [/-----BEGIN [A-Z0-9 ]+-----[\s\S]*?(-----END [A-Z0-9 ]+-----|$)/g, "[redacted PEM]"],
  // HTTP Authorization values.
  [/\b(Bearer|Basic|Negotiate)\s+[A-Za-z0-9._~+/=-]{8,}/gi, "$1 [redacted]"],
  // JSON Web Tokens (ServiceAccount tokens) wherever they appear.
  [/\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g, "[redacted JWT]"],
  // userinfo in URLs: scheme://user:password@host
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, "$1[redacted]@"],
  // install tokens in provisioning URLs
  [/\/(ks|built|bootstrap)\/[A-Za-z0-9_-]{16,}/g, "/$1/[token]"],
  // key=value / key: value pairs whose key names a secret
  [
    /\b(password|passwd|secret|token|api[_-]?key|private[_-]?key|cookie|vmware_soap_session)(["']?\s*[:=]\s*["']?)[^\s"',;&]+/gi,
    "$1$2[redacted]",
  ],
];

/** The text with anything that looks like a credential replaced, and bounded in length. */
export function scrub(text: string): string {
  let out = text.length > MAX_TEXT * 2 ? text.slice(0, MAX_TEXT * 2) : text;
  for (const [re, to] of SCRUBS) out = out.replace(re, to);
  return out.length > MAX_TEXT ? `${out.slice(0, MAX_TEXT)}…` : out;
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v ? v : undefined);

/** The path of a URL or path-with-query, without query, fragment or userinfo. */
function urlPath(v: unknown): string | undefined {
  const s = str(v);
  if (!s) return undefined;
  try {
    return new URL(s, "http://x").pathname;
  } catch {
    return undefined;
  }
}

/** An error as it may be logged: only allow-listed fields, every text scrubbed. */
export function serializeError(err: unknown, depth = 0): SafeError {
  if (!(err instanceof Error)) {
    return { type: typeof err, message: scrub(typeof err === "string" ? err : String(err)) };
  }
  const e = err as Error & Record<string, unknown>;
  const config = (e.config ?? {}) as Record<string, unknown>;
  const response = (e.response ?? {}) as Record<string, unknown>;
  const out: SafeError = { type: scrub(e.name || "Error"), message: scrub(e.message ?? "") };
  const code = str(e.code) ?? (typeof e.code === "number" ? String(e.code) : undefined);
  if (code) out.code = scrub(code);
  const status = typeof e.status === "number" ? e.status : response.status;
  if (typeof status === "number") out.status = status;
  const method = str(e.method) ?? str(config.method);
  if (method) out.method = scrub(method.toUpperCase());
  const path = urlPath(e.path) ?? urlPath(config.url);
  if (path) out.path = scrub(path);
  const fault = str(e.fault);
  if (fault) out.fault = scrub(fault);
  if (e.cause !== undefined && depth < CAUSE_DEPTH) out.cause = serializeError(e.cause, depth + 1);
  return out;
}

const SECRET_KEY =
  /^(password|passwd|secret|token|authorization|cookie|privatekey|private_key|apikey|api_key|credentials?)$/i;
const MAX_DEPTH = 6;

/**
 * A log object made safe: errors anywhere become SafeErrors, strings are scrubbed, values under
 * secret-sounding keys are dropped, and depth is bounded.
 */
export function sanitize(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return scrub(value);
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Error) return serializeError(value);
  if (depth >= MAX_DEPTH) return "[depth limit]";
  if (Array.isArray(value)) return value.slice(0, 100).map((v) => sanitize(v, depth + 1));
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return scrub(String(value));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>))
    out[k] = SECRET_KEY.test(k) ? "[redacted]" : sanitize(v, depth + 1);
  return out;
}
