// DNS lookups that cannot stall the fleet. Each question is bounded (1 s per try, 2 tries, and a
// deadline in case several servers are listed); answers are kept briefly, so a resync of N servers
// does not ask 4N questions; concurrent questions for one name share one query; and DNS servers
// that just timed out are not asked again for a few seconds: during an outage every reconcile
// would otherwise spend its worker's time waiting for the same silence.
import { promises as dns } from "node:dns";
import { StepError } from "../errors.js";

/** The A records of a name, or "notfound" when DNS says there is no such name or record. */
export type Lookup = (name: string) => Promise<string[] | "notfound">;

/** One question to DNS: the addresses and how long they may be kept, or no such name. */
export type Query = (
  name: string,
) => Promise<{ addresses: string[]; ttlSeconds: number } | "notfound">;

export const LOOKUP_LIMITS = {
  tryMs: 1000,
  tries: 2,
  /** Whatever c-ares does with several servers, a lookup ends by then. */
  deadlineMs: 2500,
  /** Answers are kept for their TTL, at most this long, so a changed record is seen soon. */
  maxTtlMs: 30_000,
  notFoundMs: 5_000,
  /** After a timeout or a refused connection, lookups fail at once for this long. */
  downMs: 5_000,
  maxEntries: 1000,
};
export type LookupLimits = typeof LOOKUP_LIMITS;

/** Answers that mean "no such record"; anything else means DNS itself failed. */
const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "NXDOMAIN", "NOTFOUND"]);
/** Failures that say the servers cannot be reached, not that they dislike one name. */
const UNREACHABLE = new Set(["ETIMEOUT", "ECONNREFUSED"]);

/** DNS did not answer (timeout, SERVFAIL, refused): an outage, unlike a name that does not exist. */
export class DNSUnavailable extends StepError {
  constructor(
    readonly host: string,
    readonly code: string,
    cause?: unknown,
  ) {
    super("DNSUnavailable", `DNS could not answer for ${host} (${code}); vsop retries.`, {
      condition: "NameResolved",
      status: "Unknown",
      cause,
    });
  }
}

/** Cached, bounded lookups against the given servers (host or host:port), or the system's. */
export function dnsLookup(servers: string[] = []): Lookup {
  return cachedLookup(resolverQuery(servers));
}

export function resolverQuery(servers: string[], limits = LOOKUP_LIMITS): Query {
  const { tryMs, tries, deadlineMs } = limits;
  const resolver = new dns.Resolver({ timeout: tryMs, tries, maxTimeout: tryMs });
  if (servers.length) resolver.setServers(servers);
  return async (name) => {
    try {
      const records = await withDeadline(resolver.resolve4(name, { ttl: true }), deadlineMs);
      if (!records.length) return "notfound";
      const ttlSeconds = Math.min(...records.map((r) => r.ttl));
      return { addresses: records.map((r) => r.address), ttlSeconds };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (NOT_FOUND.has(code)) return "notfound";
      throw new DNSUnavailable(name, code || (err as Error).message, err);
    }
  };
}

export function cachedLookup(
  query: Query,
  limits: LookupLimits = LOOKUP_LIMITS,
  now: () => number = Date.now,
): Lookup {
  const answers = new Map<string, { value: string[] | "notfound"; until: number }>();
  const inFlight = new Map<string, Promise<string[] | "notfound">>();
  let down: { until: number; code: string } | undefined;

  const keep = (name: string, value: string[] | "notfound", ms: number) => {
    if (ms <= 0) return;
    answers.set(name, { value, until: now() + ms });
    // Map keeps insertion order: the first key is the oldest answer.
    if (answers.size > limits.maxEntries) answers.delete(answers.keys().next().value!);
  };

  return (name) => {
    const hit = answers.get(name);
    if (hit && hit.until > now()) return Promise.resolve(hit.value);
    answers.delete(name);
    if (down && down.until > now()) return Promise.reject(new DNSUnavailable(name, down.code));
    let pending = inFlight.get(name);
    if (!pending) {
      pending = query(name)
        .then(
          (a) => {
            if (a === "notfound") {
              keep(name, a, limits.notFoundMs);
              return a;
            }
            keep(name, a.addresses, Math.min(a.ttlSeconds * 1000, limits.maxTtlMs));
            return a.addresses;
          },
          (err: unknown) => {
            if (err instanceof DNSUnavailable && UNREACHABLE.has(err.code))
              down = { until: now() + limits.downMs, code: err.code };
            throw err;
          },
        )
        .finally(() => inFlight.delete(name));
      inFlight.set(name, pending);
    }
    return pending;
  };
}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`no answer in ${ms} ms`), { code: "ETIMEOUT" })),
      ms,
    );
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
