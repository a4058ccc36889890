// The HTTP endpoint installers talk to over the Boot-VLAN:
//   GET  /ks/<token>         the server's kickstart (text/plain); it carries no secret
//   POST /bootstrap/<token>  the server's keys and broker login, as a shell script: once, but
//                            again to the installer whose X-Vsop-Installer-Nonce got them
//   POST /built/<token>      installation finished → 204
//   POST /autosign/<certname> the Puppet master's autosign command asks whether to sign the CSR
//                            in the body: 204 sign, 403 refuse (bearer secret; see puppet/)
//   GET  /healthz
// A token is good until the install is known (its /built call, or the server answering vsop);
// afterwards every route answers 410 Gone. Tokens never reach a log line: logs name them by a
// short sha256 prefix. Each source address gets a bounded number of requests per window (429).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createHash, timingSafeEqual } from "node:crypto";
import { isWellFormedToken, tokenLogId } from "./tokens.js";
import { isWellFormedNonce, NONCE_HEADER } from "./sealed-keys.js";

export type TokenState =
  | {
      kind: "active";
      kickstart: () => Promise<string>;
      /**
       * The key bundle, or undefined when it was fetched before by another caller (it is handed
       * out once; again only to the installer with the same `nonce`).
       */
      bootstrap: (nonce: string | undefined) => Promise<string | undefined>;
    }
  | { kind: "used" }
  /** The server's install data is not recorded yet (503: an installer retries). */
  | { kind: "notReady" }
  | undefined;

/** The subset of a pino logger the server uses. */
export interface ServerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The Puppet master's autosign questions; the route answers 404 without this. */
export interface AutosignOptions {
  /** The secret the master's autosign command presents as `Authorization: Bearer <secret>`. */
  secret: string;
  /** Whether to sign: the CSR (PEM) sent for `certname`. `reason` is short, for the log. */
  decide(certname: string, csrPem: string): Promise<{ sign: boolean; reason: string }>;
}

export interface ProvisioningServerOptions {
  lookup(token: string): Promise<TokenState>;
  onBuilt(token: string): Promise<void>;
  autosign?: AutosignOptions;
  log?: ServerLog;
  /** Request bodies beyond this are refused with 413; default 64 KiB. */
  maxBodyBytes?: number;
  /** Whole-request deadline; default 30 s. */
  requestTimeoutMs?: number;
  /** Requests one source address may make per window; default 60 per 10 s. */
  rateLimit?: { requests: number; windowMs: number };
  /**
   * Whether an error of lookup, onBuilt or decide is an outage of the store behind them (503 with
   * Retry-After, so an installer retries) rather than a fault (500).
   */
  unavailable?(err: unknown): boolean;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly allow?: string,
  ) {
    super(message);
  }
}

type Route = "ks" | "bootstrap" | "built";
const ROUTE = /^\/(ks|bootstrap|built)\/([^/]+)$/;
const AUTOSIGN_ROUTE = /^\/autosign\/([A-Za-z0-9._-]{1,253})$/;
/** A CSR in PEM: Puppet's are 2-3 KiB; the CSR parser refuses more than 16 KiB of DER anyway. */
const MAX_AUTOSIGN_BODY = 32 * 1024;
const METHODS: Record<Route, string[]> = { ks: ["GET"], bootstrap: ["POST"], built: ["POST"] };

/** Fixed-window request counts per source address, bounded in size. */
class RateLimiter {
  private window = 0;
  private counts = new Map<string, number>();
  constructor(private readonly limit: { requests: number; windowMs: number }) {}

  /** Whether the source may make one more request now. */
  allow(source: string): boolean {
    const w = Math.floor(Date.now() / this.limit.windowMs);
    if (w !== this.window || this.counts.size > 100_000) {
      this.window = w;
      this.counts = new Map();
    }
    const n = (this.counts.get(source) ?? 0) + 1;
    this.counts.set(source, n);
    return n <= this.limit.requests;
  }
}

export class ProvisioningServer {
  private readonly server: Server;
  private readonly maxBody: number;
  /** /built calls in progress per token, so a retrying installer does not complete twice. */
  private readonly building = new Map<string, Promise<void>>();
  private readonly built = new Set<string>();
  private readonly limiter: RateLimiter;

  constructor(private readonly options: ProvisioningServerOptions) {
    this.maxBody = options.maxBodyBytes ?? 64 * 1024;
    this.limiter = new RateLimiter(options.rateLimit ?? { requests: 60, windowMs: 10_000 });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
    this.server.requestTimeout = options.requestTimeoutMs ?? 30_000;
    this.server.headersTimeout = Math.min(10_000, this.server.requestTimeout);
    this.server.keepAliveTimeout = 5_000;
  }

  /** The underlying node:http server, for callers that manage endpoints uniformly. */
  get httpServer(): Server {
    return this.server;
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.server.listening) return resolve();
      this.server.close((err) => (err ? reject(err) : resolve()));
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "";
    const path = (req.url ?? "").split("?")[0]!;
    const autosign = AUTOSIGN_ROUTE.exec(path);
    if (autosign || path === "/autosign" || path.startsWith("/autosign/"))
      return this.handleAutosign(req, res, method, autosign?.[1]);
    const match = ROUTE.exec(path);
    const route = match ? (match[1] as Route) : path === "/healthz" ? "healthz" : undefined;
    const token = match && isWellFormedToken(match[2]!) ? match[2]! : undefined;
    const fields: Record<string, unknown> = { method, route };
    if (token) fields.tokenId = tokenLogId(token);
    let status: number;
    try {
      if (route !== "healthz" && !this.limiter.allow(req.socket.remoteAddress ?? ""))
        throw new HttpError(429, "too many requests; retry later");
      await this.drainBody(req);
      const nonce = route === "bootstrap" ? this.nonce(req) : undefined;
      const result = await this.dispatch(method, route, token, nonce);
      status = result.status;
      this.reply(res, status, result.body);
    } catch (err) {
      const failure = this.failure(err, fields, token);
      status = failure.status;
      this.reply(res, status, `${failure.message}\n`, {
        close: status === 413 || status === 429,
        retryAfter: failure.retryAfter,
        allow: err instanceof HttpError ? err.allow : undefined,
      });
    }
    if (route && route !== "healthz")
      this.options.log?.info({ ...fields, status }, "provisioning request");
  }

  private async dispatch(
    method: string,
    route: Route | "healthz" | undefined,
    token: string | undefined,
    nonce: string | undefined,
  ): Promise<{ status: number; body?: string }> {
    const allow = (methods: string[]) => {
      if (!methods.includes(method))
        throw new HttpError(405, "method not allowed", methods.join(", "));
    };
    if (route === "healthz") {
      allow(["GET", "HEAD"]);
      return { status: 200, body: "ok\n" };
    }
    if (!route || !token) throw new HttpError(404, "not found");
    allow(METHODS[route]);

    if (this.built.has(token)) throw new HttpError(410, "token already used");
    const state = await this.options.lookup(token);
    if (!state) throw new HttpError(404, "not found");
    if (state.kind === "used") throw new HttpError(410, "token already used");
    if (state.kind === "notReady") throw new HttpError(503, "not ready yet; retry shortly");
    if (route === "ks") return { status: 200, body: await state.kickstart() };
    if (route === "bootstrap") {
      const body = await state.bootstrap(nonce);
      if (body === undefined) throw new HttpError(410, "keys already fetched");
      return { status: 200, body };
    }

    // A retrying installer may call again while the first call is still being recorded.
    let done = this.building.get(token);
    if (!done) {
      done = this.options.onBuilt(token);
      this.building.set(token, done);
      try {
        await done;
        this.rememberBuilt(token);
      } finally {
        this.building.delete(token);
      }
    } else await done;
    return { status: 204 };
  }

  /** The installer's nonce for /bootstrap, when it sent one; a malformed one is refused (400). */
  private nonce(req: IncomingMessage): string | undefined {
    const v = req.headers[NONCE_HEADER];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || !isWellFormedNonce(v))
      throw new HttpError(400, `${NONCE_HEADER} must be 32 to 128 letters, digits, - or _`);
    return v;
  }

  /**
   * The master's autosign question. The master asks for every server from one address, so an
   * authenticated call is not rate limited; a call without the secret counts against its
   * source's limit like any other request (guessing the secret is as slow as guessing a token).
   */
  private async handleAutosign(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    certname: string | undefined,
  ): Promise<void> {
    const opts = this.options.autosign;
    let status: number;
    let reason: string | undefined;
    try {
      if (!opts || !certname) throw new HttpError(404, "not found");
      if (!bearerMatches(req.headers.authorization, opts.secret)) {
        if (!this.limiter.allow(req.socket.remoteAddress ?? ""))
          throw new HttpError(429, "too many requests; retry later");
        throw new HttpError(401, "the autosign secret is missing or wrong");
      }
      if (method !== "POST") throw new HttpError(405, "method not allowed", "POST");
      const body = await this.readBody(req, MAX_AUTOSIGN_BODY);
      const verdict = await opts.decide(certname, body.toString("utf8"));
      reason = verdict.reason;
      status = verdict.sign ? 204 : 403;
      this.reply(res, status, verdict.sign ? undefined : `not signed: ${verdict.reason}\n`);
    } catch (err) {
      const failure = this.failure(err, { route: "autosign" }, undefined);
      status = failure.status;
      this.reply(res, status, `${failure.message}\n`, {
        close: status === 413 || status === 429 || status === 401,
        retryAfter: failure.retryAfter,
        allow: err instanceof HttpError ? err.allow : undefined,
      });
    }
    this.options.log?.info({ method, route: "autosign", status, reason }, "provisioning request");
  }

  /**
   * The answer to a failed request. An HttpError says its own; an outage of the store is 503 and
   * anything else 500, both logged (through `describe`, which keeps the token out).
   */
  private failure(
    err: unknown,
    fields: Record<string, unknown>,
    token: string | undefined,
  ): { status: number; message: string; retryAfter?: string } {
    if (err instanceof HttpError)
      return {
        status: err.status,
        message: err.message,
        retryAfter: err.status === 429 ? "10" : undefined,
      };
    if (this.options.unavailable?.(err)) {
      this.options.log?.warn(
        { ...fields, err: describe(err, token) },
        "request failed; retry later",
      );
      return { status: 503, message: "temporarily unavailable; retry shortly", retryAfter: "5" };
    }
    this.options.log?.error({ ...fields, err: describe(err, token) }, "request failed");
    return { status: 500, message: "internal error" };
  }

  /** The body, refusing more than `max` bytes. */
  private readBody(req: IncomingMessage, max: number): Promise<Buffer> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > max) return Promise.reject(new HttpError(413, "body too large"));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let seen = 0;
      req.on("data", (chunk: Buffer) => {
        seen += chunk.length;
        if (seen > max) {
          req.removeAllListeners("data");
          req.pause();
          reject(new HttpError(413, "body too large"));
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });
  }

  /** Bounded memory of completed tokens, for callers whose lookup lags behind onBuilt. */
  private rememberBuilt(token: string): void {
    this.built.add(token);
    if (this.built.size > 1024) this.built.delete(this.built.values().next().value!);
  }

  /** Reads and discards the body, refusing more than maxBody bytes. */
  private drainBody(req: IncomingMessage): Promise<void> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > this.maxBody) return Promise.reject(new HttpError(413, "body too large"));
    return new Promise((resolve, reject) => {
      let seen = 0;
      req.on("data", (chunk: Buffer) => {
        seen += chunk.length;
        if (seen > this.maxBody) {
          req.removeAllListeners("data");
          req.pause();
          reject(new HttpError(413, "body too large"));
        }
      });
      req.on("end", () => resolve());
      req.on("error", reject);
    });
  }

  private reply(
    res: ServerResponse,
    status: number,
    body?: string,
    opts: { close?: boolean; allow?: string | undefined; retryAfter?: string | undefined } = {},
  ): void {
    if (res.headersSent) return;
    const headers: Record<string, string> = { "cache-control": "no-store" };
    if (opts.allow) headers.allow = opts.allow;
    if (opts.retryAfter) headers["retry-after"] = opts.retryAfter;
    if (opts.close) headers.connection = "close";
    if (status === 204 || body === undefined) {
      res.writeHead(status, headers).end();
      return;
    }
    headers["content-type"] = "text/plain; charset=utf-8";
    headers["content-length"] = String(Buffer.byteLength(body));
    res.writeHead(status, headers).end(body);
  }
}

/** Whether an Authorization header carries `Bearer <secret>` (constant time in the secret). */
function bearerMatches(header: string | undefined, secret: string): boolean {
  const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(header ?? "");
  if (!m || !secret) return false;
  const a = createHash("sha256").update(m[1]!).digest();
  const b = createHash("sha256").update(secret).digest();
  return timingSafeEqual(a, b);
}

/** An error's name and message only (a stack or cause could quote a URL), token masked. */
function describe(err: unknown, token: string | undefined): { name: string; message: string } {
  const name = err instanceof Error ? err.name : "Error";
  let message = err instanceof Error ? err.message : String(err);
  if (token) message = message.split(token).join(`<token ${tokenLogId(token)}>`);
  return { name, message };
}
