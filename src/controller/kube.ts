// A small Kubernetes REST client (axios for requests, node:https for lists and watches),
// authenticated by a ClusterAccess (kubeconfig.ts).
// Small on purpose: the operator needs get/list/watch/create/replace/patch/delete and to see
// every request (metrics, the zero-write test), which a generated client hides.
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import type { AxiosInstance, AxiosRequestConfig } from "axios";
import { currentSignal } from "../abort.js";
import type { ClusterAccess } from "./kubeconfig.js";
import { decodeWithoutManagedFields, ListSplitter } from "./list-stream.js";

export class KubeError extends Error {
  override name = "KubeError";
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
  }
}

/**
 * The API server could not be reached or did not answer in time. Carries the verb, the path and
 * the network code only: the axios error it replaces holds the Authorization header.
 */
export class KubeUnreachable extends Error {
  override name = "KubeUnreachable";
  constructor(
    readonly method: string,
    readonly path: string,
    readonly code: string,
  ) {
    super(`${method} ${path}: the API server did not answer (${code})`);
  }
}

/**
 * Whether the API server is away or overloaded (unreachable, 5xx, 429 throttling) rather than
 * refusing the request: the same call is worth making again later.
 */
export function isKubeOutage(err: unknown): err is KubeUnreachable | KubeError {
  return (
    err instanceof KubeUnreachable ||
    (err instanceof KubeError && (err.status >= 500 || err.status === 429))
  );
}

/** Runs an axios call, replacing a transport error by KubeUnreachable (never rethrown raw). */
async function send<T>(method: string, path: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const e = err as { code?: unknown; name?: unknown };
    const code =
      typeof e.code === "string" ? e.code : typeof e.name === "string" ? e.name : "unknown";
    throw new KubeUnreachable(method, path.split("?")[0]!, code);
  }
}

export const isNotFound = (e: unknown) => e instanceof KubeError && e.status === 404;
export const isConflict = (e: unknown) => e instanceof KubeError && e.status === 409;
export const isGone = (e: unknown) => e instanceof KubeError && e.status === 410;

/** One watch event larger than this ends the watch (the informer relists). */
const MAX_WATCH_LINE = 32 * 1024 * 1024;
const NEWLINE = 0x0a;

export type RequestCounter = (method: string, path: string, code: string) => void;

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

export class Kube {
  private conn: { agent: https.Agent; headers: Record<string, string> } | undefined;
  private connBuiltAt = 0;
  private http: { conn: Kube["conn"]; axios: AxiosInstance } | undefined;
  /**
   * Called once per request with the verb and the HTTP status code ("error" when no response
   * came), for metrics and tests. Requests that end before it is set are kept and told to it.
   */
  private onRequest: RequestCounter | undefined;
  private uncounted: Parameters<RequestCounter>[] = [];
  /** Sent as User-Agent with every request (the audit log keeps it); axios's own otherwise. */
  userAgent?: string;

  constructor(private readonly kc: ClusterAccess) {}

  /** Tells `count` about every request, those already made first. */
  countRequests(count: RequestCounter): void {
    this.onRequest = count;
    for (const args of this.uncounted.splice(0)) count(...args);
  }

  private tell(method: string, path: string, code: string): void {
    if (this.onRequest) this.onRequest(method, path, code);
    else if (this.uncounted.length < 100) this.uncounted.push([method, path, code]);
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? "";
  }

  /** The TLS agent and headers; rebuilt every minute so rotated service-account tokens are used. */
  private async connection(): Promise<{ agent: https.Agent; headers: Record<string, string> }> {
    if (this.conn && Date.now() - this.connBuiltAt < 60_000) return this.conn;
    const opts: https.RequestOptions = {};
    await this.kc.applyToHTTPSOptions(opts);
    const agent = new https.Agent({
      keepAlive: true,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      rejectUnauthorized: opts.rejectUnauthorized ?? true,
    });
    const headers = {
      ...(opts.headers as Record<string, string> | undefined),
      ...(this.userAgent ? { "User-Agent": this.userAgent } : {}),
    };
    this.conn = { agent, headers };
    this.connBuiltAt = Date.now();
    return this.conn;
  }

  /** axios on the current connection; loaded when first needed (lists do without it). */
  private async client(): Promise<AxiosInstance> {
    const conn = await this.connection();
    if (this.http?.conn === conn) return this.http.axios;
    const { default: axios } = await import("axios");
    const instance = axios.create({
      baseURL: this.server,
      httpsAgent: conn.agent,
      headers: conn.headers,
      validateStatus: () => true,
      timeout: 30_000,
    });
    this.http = { conn, axios: instance };
    return instance;
  }

  /**
   * A GET whose body is read as a stream, on node:https: the operator's first lists go out
   * before axios (and the rest of the operator) has loaded.
   */
  private async getStream(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
    onSent?: () => void,
  ): Promise<IncomingMessage> {
    const { agent, headers } = await this.connection();
    const url = new URL(this.server.replace(/\/+$/, "") + path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const plain = url.protocol === "http:"; // a local API server without TLS
    return new Promise((resolve, reject) => {
      const req = (plain ? http : https).request(url, {
        method: "GET",
        ...(plain ? {} : { agent }),
        headers: { ...headers, Accept: "application/json", "Accept-Encoding": "identity" },
        signal,
      });
      if (onSent) req.on("finish", onSent);
      req.on("response", resolve);
      req.on("error", reject);
      req.end();
    });
  }

  /** A counted streaming GET; a refusal becomes a KubeError with the Status's reason and message. */
  private async openStream(
    verb: "GET" | "WATCH",
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
    onSent?: () => void,
  ): Promise<{ status: number; data: IncomingMessage }> {
    const res = await this.counted(verb, path, async () => {
      const data = await this.getStream(path, query, signal, onSent);
      return { status: data.statusCode ?? 0, data };
    });
    if (res.status >= 400) {
      const s = await readStatus(res.data);
      const fallback = verb === "WATCH" ? "watch refused" : "";
      throw new KubeError(res.status, s.reason ?? "", s.message ?? fallback, verb, path);
    }
    return res;
  }

  /** `send`, reporting the outcome to onRequest. */
  private async counted<R extends { status: number }>(
    method: string,
    path: string,
    call: () => Promise<R>,
  ): Promise<R> {
    let res: R;
    try {
      res = await send(method, path, call);
    } catch (err) {
      this.tell(method, path, "error");
      throw err;
    }
    this.tell(method, path, String(res.status));
    return res;
  }

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    config: AxiosRequestConfig = {},
  ): Promise<T> {
    const client = await this.client();
    const res = await this.counted(method, path, () =>
      client.request({ method, url: path, data: body, signal: currentSignal(), ...config }),
    );
    if (res.status >= 400) {
      const s = (res.data ?? {}) as { reason?: string; message?: string };
      throw new KubeError(res.status, s.reason ?? "", s.message ?? String(res.data), method, path);
    }
    return res.data as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }
  create<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }
  replace<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", path, body);
  }
  mergePatch<T>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, {
      headers: { "Content-Type": "application/merge-patch+json" },
    });
  }
  delete<T>(path: string): Promise<T> {
    return this.request<T>("DELETE", path);
  }

  /**
   * Streams watch events until the server closes the stream, `signal` aborts or an error occurs.
   * Resolves when the stream ends; the caller decides whether to re-watch or relist.
   */
  async watch<T>(
    path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent<T>) => void,
    signal: AbortSignal,
    /** No byte for this long (not even a bookmark) means a dead connection: end the watch. */
    idleMs = 90_000,
    /** Called once the request is on the wire. */
    onSent?: () => void,
  ): Promise<void> {
    // Our own deadline: a peer that accepts the connection and then says nothing (a stopped
    // API server, a dropped NAT entry) would otherwise hold the watch, and the cache, forever.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal.addEventListener("abort", onAbort);
    let idle = setTimeout(() => stop.abort(), Math.min(idleMs, 30_000));
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => stop.abort(), idleMs);
    };
    try {
      const res = await this.openStream(
        "WATCH",
        path,
        { ...query, watch: "true" },
        stop.signal,
        onSent,
      );
      touch();
      stop.signal.addEventListener("abort", () => res.data.destroy());
      await this.readWatch(res.data, path, onEvent, touch).catch((err: unknown) => {
        // Our abort (the caller's signal, the idle deadline) just ends this watch; the
        // informer re-watches from its resourceVersion.
        if (!stop.signal.aborted) throw err;
      });
    } finally {
      clearTimeout(idle);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * A LIST read as it arrives: each item goes to `onItem` (list-stream.ts), never the whole body
   * at once; resolves with the list's metadata. Asked uncompressed: over loopback or a cluster
   * network, gzip costs the API server more time than it saves on the wire.
   */
  async list<T>(
    path: string,
    query: Record<string, string>,
    onItem: (item: T) => void,
    signal?: AbortSignal,
    /** No byte for this long ends the list with KubeUnreachable. */
    idleMs = 30_000,
    /** Called once the request is on the wire. */
    onSent?: () => void,
  ): Promise<{ resourceVersion?: string }> {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal?.addEventListener("abort", onAbort);
    let idle = setTimeout(() => stop.abort(), idleMs);
    try {
      const res = await this.openStream("GET", path, query, stop.signal, onSent);
      const splitter = new ListSplitter<T>(onItem);
      await new Promise<void>((resolve, reject) => {
        stop.signal.addEventListener("abort", () => {
          res.data.destroy();
          reject(new KubeUnreachable("GET", path, signal?.aborted ? "aborted" : "idle timeout"));
        });
        res.data.on("data", (chunk: Buffer) => {
          clearTimeout(idle);
          idle = setTimeout(() => stop.abort(), idleMs);
          try {
            splitter.write(chunk);
          } catch (err) {
            res.data.destroy();
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
        res.data.on("end", resolve);
        res.data.on("error", (err: NodeJS.ErrnoException) =>
          reject(new KubeUnreachable("GET", path, err.code ?? "stream error")),
        );
      });
      return splitter.end<{ metadata?: { resourceVersion?: string } }>().metadata ?? {};
    } finally {
      clearTimeout(idle);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Parses a watch stream line by line until it ends; bounded per line. Lines are cut from the
   * bytes as they come, so that each event's managedFields are skipped before decoding.
   */
  private readWatch<T>(
    stream: Readable,
    path: string,
    onEvent: (e: WatchEvent<T>) => void,
    touch: () => void,
  ): Promise<void> {
    // The start of a line that goes on in a later chunk.
    let partial: Buffer[] = [];
    let partialBytes = 0;
    return new Promise<void>((resolve, reject) => {
      const fail = (err: unknown) => {
        stream.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      stream.on("data", (chunk: Buffer) => {
        touch();
        let from = 0;
        try {
          for (let nl = chunk.indexOf(NEWLINE); nl >= 0; nl = chunk.indexOf(NEWLINE, from)) {
            let text: string;
            if (partialBytes) {
              const line = Buffer.concat([...partial, chunk.subarray(0, nl)]);
              partial = [];
              partialBytes = 0;
              text = decodeWithoutManagedFields(line);
            } else text = decodeWithoutManagedFields(chunk, from, nl);
            from = nl + 1;
            if (text.trim()) onEvent(JSON.parse(text) as WatchEvent<T>);
          }
        } catch (err) {
          fail(err);
          return;
        }
        if (from === chunk.length) return;
        partialBytes += chunk.length - from;
        if (partialBytes > MAX_WATCH_LINE) {
          fail(
            new KubeError(0, "WatchLineTooLong", "watch event over the size limit", "WATCH", path),
          );
          return;
        }
        partial.push(chunk.subarray(from));
      });
      stream.on("end", resolve);
      stream.on("close", resolve);
      stream.on("error", (err: NodeJS.ErrnoException) =>
        reject(new KubeUnreachable("WATCH", path, err.code ?? "stream error")),
      );
    });
  }
}

/** The Status of a refused request, read from its (small, bounded) body. */
async function readStatus(stream: Readable): Promise<{ reason?: string; message?: string }> {
  let text = "";
  for await (const chunk of stream) {
    text += String(chunk);
    if (text.length > 64 * 1024) break;
  }
  stream.destroy();
  try {
    return JSON.parse(text) as { reason?: string; message?: string };
  } catch {
    return { message: text.slice(0, 500) };
  }
}
