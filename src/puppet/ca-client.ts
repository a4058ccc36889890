// The Puppet CA's certificate_status HTTP API, with a client certificate the master's auth.conf
// allows for exactly this (see README "Puppet"). Every call is short (a few seconds at most) and
// follows the reconcile's abort signal: a reconcile may make one, never wait for long.
import https from "node:https";
import { currentSignal } from "../abort.js";

/** The CA could not be asked (connection refused, timeout, TLS failure). */
export class PuppetCAUnreachable extends Error {
  override name = "PuppetCAUnreachable";
}

/** The CA answered with an error status (403: auth.conf does not allow vsop's certificate). */
export class PuppetCAError extends Error {
  override name = "PuppetCAError";
  constructor(
    message: string,
    readonly status: number,
    readonly method: string,
  ) {
    super(message);
  }
}

export interface CertificateStatus {
  /** requested, signed or revoked. */
  state: string;
  serial?: string;
  notAfter?: string;
}

export interface PuppetCAOptions {
  /** e.g. https://puppet.example.com:8140 */
  url: string;
  /** PEM: vsop's client certificate and key, and the CA that signed the master's certificate. */
  cert: string;
  key: string;
  ca: string;
  timeoutMs?: number;
}

const MAX_REPLY = 64 * 1024;

export class PuppetCA {
  private readonly agent: https.Agent;
  private readonly base: URL;

  constructor(private readonly opts: PuppetCAOptions) {
    this.base = new URL(opts.url);
    if (this.base.protocol !== "https:")
      throw new PuppetCAUnreachable(
        `the Puppet CA URL must be https://, not ${this.base.protocol}`,
      );
    this.agent = new https.Agent({
      cert: opts.cert,
      key: opts.key,
      ca: opts.ca,
      keepAlive: true,
      maxSockets: 4,
    });
  }

  /** The certificate (or pending request) of `certname`; undefined when the CA has none. */
  async status(certname: string): Promise<CertificateStatus | undefined> {
    const r = await this.call("GET", certname);
    if (r.status === 404) return undefined;
    this.expectOk(r, "GET");
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(r.body) as Record<string, unknown>;
    } catch {
      throw new PuppetCAError("the Puppet CA's answer is not JSON", r.status, "GET");
    }
    const serial = body.serial_number;
    const notAfter = typeof body.not_after === "string" ? isoTime(body.not_after) : undefined;
    return {
      state: String(body.state ?? "unknown"),
      ...(typeof serial === "number" || typeof serial === "string"
        ? { serial: String(serial) }
        : {}),
      ...(notAfter ? { notAfter } : {}),
    };
  }

  /** Revokes the signed certificate of `certname` (nothing to do when it has none). */
  async revoke(certname: string): Promise<void> {
    const r = await this.call("PUT", certname, JSON.stringify({ desired_state: "revoked" }));
    if (r.status === 404 || r.status === 409) return;
    this.expectOk(r, "PUT");
  }

  /** Removes everything the CA keeps of `certname` (certificate, request); gone is fine. */
  async clean(certname: string): Promise<void> {
    const r = await this.call("DELETE", certname);
    if (r.status === 404) return;
    this.expectOk(r, "DELETE");
  }

  close(): void {
    this.agent.destroy();
  }

  private expectOk(r: { status: number; body: string }, method: string): void {
    if (r.status >= 200 && r.status < 300) return;
    // The CA's error text is short and names no secret; keep its first line, bounded.
    const text = r.body.split("\n")[0]!.slice(0, 200);
    throw new PuppetCAError(
      `the Puppet CA answered ${method} with HTTP ${r.status}${text ? ` (${text})` : ""}`,
      r.status,
      method,
    );
  }

  private call(
    method: "GET" | "PUT" | "DELETE",
    certname: string,
    body?: string,
  ): Promise<{ status: number; body: string }> {
    const url = new URL(
      `${this.base.pathname.replace(/\/$/, "")}/puppet-ca/v1/certificate_status/${encodeURIComponent(certname)}`,
      this.base,
    );
    const signals = [AbortSignal.timeout(this.opts.timeoutMs ?? 5000)];
    const outer = currentSignal();
    if (outer) signals.push(outer);
    return new Promise((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          agent: this.agent,
          signal: AbortSignal.any(signals),
          headers: {
            accept: "application/json",
            ...(body ? { "content-type": "application/json" } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_REPLY) {
              res.destroy(new PuppetCAUnreachable("the Puppet CA's answer is too large"));
              return;
            }
            chunks.push(c);
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
          );
          res.on("error", (err) => reject(unreachable(err)));
        },
      );
      req.on("error", (err) => reject(unreachable(err)));
      req.end(body);
    });
  }
}

function unreachable(err: Error): Error {
  if (err instanceof PuppetCAUnreachable) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    err.name === "AbortError" || err.name === "TimeoutError"
      ? "no answer in time"
      : `${code ?? err.name}${err.message ? `: ${err.message}` : ""}`;
  return new PuppetCAUnreachable(`the Puppet CA cannot be reached (${why})`);
}

/** Puppet's "2031-11-27T04:21:41UTC" and ISO forms alike, as RFC 3339; undefined otherwise. */
function isoTime(s: string): string | undefined {
  const t = Date.parse(s.replace(/UTC$/, "Z"));
  return Number.isNaN(t) ? undefined : new Date(t).toISOString().replace(/\.000Z$/, "Z");
}
