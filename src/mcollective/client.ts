// MCollective RPC client over AMQP (RabbitMQ). Requests go to <collective>_broadcast (routing key
// = agent) or <collective>_directed (routing key = identity) with replyTo = this connection's
// exclusive, server-named queue; replies are matched by request id and kept only when the
// servers' key signed them. Anything on the reply queue is hostile until proven otherwise: it is
// size-capped before decoding, decoded within Marshal limits, and its body decoded only once it
// answers a request in flight and its signature verifies. A lost connection fails the requests
// in flight and is re-opened in the background with exponential backoff.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { KeyObject } from "node:crypto";
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from "amqplib";
import type { Logger } from "../observability/logger.js";
import {
  McoConnectionError,
  McoProtocolError,
  McoTimeout,
  McoTLSError,
  tlsVerifyCode,
} from "./errors.js";
import {
  decodeReplyBody,
  decodeReplyEnvelope,
  encodeRequest,
  encodeSecureBody,
  type ReplyEnvelope,
  type RubyValue,
} from "./marshal.js";
import { DEFAULT_MARSHAL_LIMITS, type MarshalLimits } from "./marshal-limits.js";
import { privateKey, publicKey, signBody, verifyBody } from "./security.js";

export type McoOutcome = "ok" | "partial" | "timeout" | "error";

/** Why a message on the reply queue was thrown away; a small fixed set, fit for a metric label. */
export type McoDropReason =
  | "oversized"
  | "malformed"
  | "unknown_request"
  | "unexpected_sender"
  | "bad_signature"
  | "duplicate";

/** What the drop log line says per reason; never anything of the message itself. */
const DROP_TEXT: Record<McoDropReason, string> = {
  oversized: "larger than the reply size limit",
  malformed: "not a well-formed MCollective reply",
  unknown_request: "reply to a request no longer waited for",
  unexpected_sender: "reply from a server the request was not sent to",
  bad_signature: "reply signature does not verify with the server public key",
  duplicate: "a second reply from the same sender to the same request",
};

export const DEFAULT_MAX_REPLY_BYTES = 256 * 1024;

export interface McoClientOptions {
  /** amqp:// or amqps:// URL of the broker. */
  url: string;
  /** Override the URL's credentials (e.g. from a Secret). */
  username?: string;
  password?: string;
  /** PEM CA bundle for amqps:// */
  caBundle?: string;
  /** Default "mcollective". */
  collective?: string;
  clientPrivateKeyPem: string;
  /** Servers verify requests with <ssl_client_cert_dir>/<clientCertName>.pem (callerid cert=<name>). */
  clientCertName: string;
  /** The key pair all servers share; replies not signed by it are dropped. */
  serverPublicKeyPem: string;
  logger: Logger;
  /** Called once per request, e.g. to count requests by outcome. */
  onRequest?: (agent: string, action: string, outcome: McoOutcome) => void;
  /** Called once per message dropped from the reply queue, e.g. to count drops by reason. */
  onDrop?: (reason: McoDropReason) => void;
  /** Larger messages on the reply queue are dropped undecoded (default 256 KiB). */
  maxReplyBytes?: number;
  /** :senderid of requests (default: this host's name). */
  senderId?: string;
  /** How long servers accept a request after it was sent (default 60s). */
  ttlSeconds?: number;
  /** How the broker lists this connection (default "vsop-mcollective"). */
  connectionName?: string;
  /** Backoff between reconnect attempts (default 500ms doubling up to 30s). */
  reconnectInitialDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** A broker that says nothing for this long while connecting is given up on (default 10s). */
  connectTimeoutMs?: number;
}

export interface McoRequest {
  agent: string;
  action: string;
  data?: Record<string, RubyValue>;
  /** Ask these nodes directly; without it the request is a broadcast to every node with the agent. */
  identity?: string | string[];
  timeoutMs: number;
  /** For a broadcast: stop waiting once this many replies came. */
  expectedReplies?: number;
}

export interface McoReply {
  sender: string;
  agent: string;
  msgtime: number;
  statuscode: number;
  statusmsg: string;
  data: Record<string, unknown>;
}

export interface McoResult {
  requestId: string;
  replies: McoReply[];
  /** Identities asked directly that did not answer in time. */
  missing: string[];
  /** Some, not all, of the expected replies came. */
  partial: boolean;
}

interface Session {
  conn: ChannelModel;
  channel: Channel;
  replyQueue: string;
}

interface Pending {
  agent: string;
  expected: Set<string> | undefined;
  expectedCount: number | undefined;
  replies: Map<string, McoReply>;
  finish: () => void;
  fail: (err: Error) => void;
}

/** The URL without its password, for logs and errors. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparsable URL>";
  }
}

export class McoClient {
  readonly collective: string;
  private readonly log: Logger;
  private readonly clientKey: KeyObject;
  private readonly serverKey: KeyObject;
  private readonly callerId: string;
  private readonly senderId: string;
  private readonly ttl: number;
  private readonly maxReplyBytes: number;
  private readonly marshalLimits: MarshalLimits;
  private session: Session | undefined;
  private reconnecting: Promise<Session> | undefined;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  /** Cancels a reconnect backoff sleep on close(). */
  private readonly closing = new AbortController();
  private dropped = 0;

  constructor(private readonly options: McoClientOptions) {
    this.collective = options.collective ?? "mcollective";
    this.log = options.logger.child({ component: "mcollective" });
    this.clientKey = privateKey(options.clientPrivateKeyPem);
    this.serverKey = publicKey(options.serverPublicKeyPem);
    if (!/^[\w.-]+$/.test(options.clientCertName))
      throw new Error(`client cert name "${options.clientCertName}" must match [\\w.-]+`);
    this.callerId = `cert=${options.clientCertName}`;
    this.senderId = options.senderId ?? hostname();
    this.ttl = options.ttlSeconds ?? 60;
    this.maxReplyBytes = options.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
    if (!Number.isInteger(this.maxReplyBytes) || this.maxReplyBytes < 1)
      throw new Error(`maxReplyBytes must be a positive whole number`);
    // No String can be longer than the message that carries it.
    this.marshalLimits = { ...DEFAULT_MARSHAL_LIMITS, maxStringBytes: this.maxReplyBytes };
  }

  /** Messages dropped from the reply queue, for any McoDropReason. */
  get droppedReplies(): number {
    return this.dropped;
  }

  get connected(): boolean {
    return this.session !== undefined;
  }

  /** Opens the connection now (one attempt); later losses are re-opened in the background. */
  async connect(): Promise<void> {
    if (this.closed) throw new McoConnectionError("the MCollective client is closed");
    if (this.session) return;
    // Share the attempt with requests that arrive meanwhile, so there is one session only.
    this.reconnecting ??= this.openSession()
      .then((session) => this.adopt(session))
      .finally(() => {
        this.reconnecting = undefined;
      });
    await this.reconnecting;
  }

  /** The identities (of those given, or all with a broadcast) that answer rpcutil#ping. */
  async discover(identity?: string | string[], timeoutMs = 3000): Promise<string[]> {
    try {
      const r = await this.request({ agent: "rpcutil", action: "ping", identity, timeoutMs });
      return r.replies.map((reply) => reply.sender).sort();
    } catch (err) {
      if (err instanceof McoTimeout) return [];
      throw err;
    }
  }

  /**
   * Sends one RPC request and collects the replies until every identity asked has answered (or
   * expectedReplies came), or timeoutMs passed. Throws McoTimeout when nobody expected answered,
   * McoConnectionError when the broker is unreachable or the connection dropped meanwhile.
   */
  async request(req: McoRequest): Promise<McoResult> {
    const deadline = Date.now() + req.timeoutMs;
    const identities =
      req.identity === undefined ? [] : Array.isArray(req.identity) ? req.identity : [req.identity];
    const requestId = randomBytes(16).toString("hex");
    let outcome: McoOutcome = "error";
    try {
      const session = await this.ensureSession(deadline);
      const replies = await this.exchange(session, req, identities, requestId, deadline);
      const missing = identities.filter((id) => !replies.has(id));
      const expectedAny = identities.length > 0 || (req.expectedReplies ?? 0) > 0;
      if (replies.size === 0 && expectedAny) {
        outcome = "timeout";
        throw new McoTimeout(req.agent, req.action, requestId, req.timeoutMs, missing);
      }
      const partial =
        missing.length > 0 ||
        (req.expectedReplies !== undefined && replies.size < req.expectedReplies);
      outcome = partial ? "partial" : "ok";
      return { requestId, replies: [...replies.values()], missing, partial };
    } finally {
      this.options.onRequest?.(req.agent, req.action, outcome);
    }
  }

  /** Closes the connection; requests in flight fail with McoConnectionError. */
  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort();
    this.failPending(new McoConnectionError("the MCollective client was closed"));
    const session = this.session;
    this.session = undefined;
    if (session) await session.conn.close().catch(() => undefined);
  }

  private exchange(
    session: Session,
    req: McoRequest,
    identities: string[],
    requestId: string,
    deadline: number,
  ): Promise<Map<string, McoReply>> {
    const msgtime = Math.floor(Date.now() / 1000);
    const body = encodeSecureBody(
      { agent: req.agent, action: req.action, caller: this.callerId, data: req.data ?? {} },
      this.ttl,
      msgtime,
    );
    const payload = encodeRequest({
      body,
      senderid: this.senderId,
      requestid: requestId,
      filter: { agent: [req.agent], identity: identities },
      collective: this.collective,
      agent: req.agent,
      callerid: this.callerId,
      ttl: this.ttl,
      msgtime,
      hash: signBody(body, this.clientKey),
    });
    return new Promise((resolve, reject) => {
      const replies = new Map<string, McoReply>();
      const timer = setTimeout(() => done(), Math.max(0, deadline - Date.now()));
      const done = () => {
        clearTimeout(timer);
        this.pending.delete(requestId);
        resolve(replies);
      };
      this.pending.set(requestId, {
        agent: req.agent,
        expected: identities.length ? new Set(identities) : undefined,
        expectedCount: req.expectedReplies,
        replies,
        finish: done,
        fail: (err) => {
          clearTimeout(timer);
          this.pending.delete(requestId);
          reject(err);
        },
      });
      const publish = { replyTo: session.replyQueue, expiration: String((this.ttl + 10) * 1000) };
      try {
        if (identities.length === 0) {
          session.channel.publish(`${this.collective}_broadcast`, req.agent, payload, publish);
        } else {
          for (const id of identities)
            session.channel.publish(`${this.collective}_directed`, id, payload, publish);
        }
      } catch (err) {
        this.pending
          .get(requestId)
          ?.fail(
            new McoConnectionError(`could not publish ${req.agent}#${req.action}`, { cause: err }),
          );
        return;
      }
      this.log.debug(
        { requestId, agent: req.agent, action: req.action, identities },
        "request sent",
      );
    });
  }

  /**
   * Every message on the reply queue comes here. The order keeps the cost of a hostile message
   * low: size before any decoding, the bounded envelope, a request we wait for, a sender it was
   * sent to, the signature, and only then the body. Whatever fails is dropped through drop(), never thrown.
   */
  private onDelivery(msg: ConsumeMessage | null): void {
    if (!msg) return; // consumer cancelled by the broker; the channel close handler reconnects
    const bytes = msg.content.length;
    if (bytes > this.maxReplyBytes) return this.drop("oversized", { bytes });
    let envelope: ReplyEnvelope;
    try {
      envelope = decodeReplyEnvelope(msg.content, this.marshalLimits);
    } catch (err) {
      return this.drop("malformed", { bytes, detail: dropDetail(err) });
    }
    const from = {
      bytes,
      requestId: envelope.requestid.slice(0, 64),
      sender: envelope.senderid.slice(0, 255),
    };
    const pending = this.pending.get(envelope.requestid);
    if (!pending) return this.drop("unknown_request", from);
    // A directed request is answered by the servers it named. Any other sender speaks for a
    // server nobody asked, and keeping its replies would let one peer grow the request's map.
    if (pending.expected && !pending.expected.has(envelope.senderid))
      return this.drop("unexpected_sender", from);
    if (!verifyBody(envelope.body, envelope.hash, this.serverKey))
      return this.drop("bad_signature", from);
    if (pending.replies.has(envelope.senderid)) return this.drop("duplicate", from);
    let body;
    try {
      body = decodeReplyBody(envelope.body, this.marshalLimits);
    } catch (err) {
      return this.drop("malformed", { ...from, detail: dropDetail(err) });
    }
    pending.replies.set(envelope.senderid, {
      sender: envelope.senderid,
      agent: envelope.senderagent || pending.agent,
      msgtime: envelope.msgtime,
      ...body,
    });
    const all = pending.expected
      ? [...pending.expected].every((id) => pending.replies.has(id))
      : pending.expectedCount !== undefined && pending.replies.size >= pending.expectedCount;
    if (all) pending.finish();
  }

  /** The one way out for a reply: counted, and logged with its size and claimed origin only. */
  private drop(
    reason: McoDropReason,
    fields: { bytes: number; requestId?: string; sender?: string; detail?: string },
  ): void {
    this.dropped++;
    this.options.onDrop?.(reason);
    // Late replies to a finished request are routine; everything else deserves attention.
    const level = reason === "unknown_request" ? "debug" : "warn";
    this.log[level](
      { reason, ...fields, droppedReplies: this.dropped },
      `dropped a reply: ${DROP_TEXT[reason]}`,
    );
  }

  private async ensureSession(deadline: number): Promise<Session> {
    if (this.closed) throw new McoConnectionError("the MCollective client is closed");
    if (this.session) return this.session;
    this.reconnecting ??= this.reconnectLoop();
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new McoConnectionError(
              `not connected to the broker at ${redactUrl(this.options.url)} (still retrying)`,
            ),
          ),
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      return await Promise.race([this.reconnecting, giveUp]);
    } finally {
      clearTimeout(timer);
    }
  }

  private reconnectLoop(): Promise<Session> {
    const initial = this.options.reconnectInitialDelayMs ?? 500;
    const max = this.options.reconnectMaxDelayMs ?? 30_000;
    const loop = async (): Promise<Session> => {
      for (let attempt = 0; ; attempt++) {
        if (this.closed) throw new McoConnectionError("the MCollective client is closed");
        try {
          return await this.adopt(await this.openSession());
        } catch (err) {
          // A certificate that does not verify will not verify on the next try either.
          if (this.closed || err instanceof McoTLSError) throw err;
          const delay = Math.min(max, initial * 2 ** attempt) * (0.8 + Math.random() * 0.4);
          this.log.warn(
            { err, retryInMs: Math.round(delay) },
            "broker connection failed; retrying",
          );
          await sleep(delay, undefined, { signal: this.closing.signal }).catch(() => undefined);
        }
      }
    };
    const promise = loop().finally(() => {
      this.reconnecting = undefined;
    });
    promise.catch(() => undefined); // a failure reaches whoever awaits it; no unhandled rejection
    return promise;
  }

  /** Makes a freshly opened session the current one, unless close() came first. */
  private async adopt(session: Session): Promise<Session> {
    if (this.closed) {
      await session.conn.close().catch(() => undefined);
      throw new McoConnectionError("the MCollective client is closed");
    }
    this.session = session;
    return session;
  }

  private async openSession(): Promise<Session> {
    const { url, username, password, caBundle } = this.options;
    const where = redactUrl(url);
    let conn: ChannelModel;
    try {
      conn = await amqp.connect(url, {
        // Idle deadline until the AMQP handshake is done: a peer that accepts TCP and then
        // never speaks AMQP would otherwise leave the reconnect pending forever.
        timeout: this.options.connectTimeoutMs ?? 10_000,
        clientProperties: { connection_name: this.options.connectionName ?? "vsop-mcollective" },
        ...(caBundle ? { ca: [caBundle] } : {}),
        ...(username !== undefined && password !== undefined
          ? { credentials: amqp.credentials.plain(username, password) }
          : {}),
      });
    } catch (err) {
      const code = tlsVerifyCode(err);
      if (code)
        throw new McoTLSError(
          `the broker at ${where} presented a certificate that does not verify (${code}: ` +
            `${(err as Error).message}); spec.mcollective.caBundle must hold the CA that signed ` +
            `it${caBundle ? "" : " (none is set: the system roots were used)"}, and the URL's ` +
            `host must be a name in it`,
          code,
          { cause: err },
        );
      throw new McoConnectionError(`cannot connect to ${where}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // Listeners go on before anything else can fail: an 'error' nobody listens to would throw.
    let session: Session | undefined;
    conn.on("error", (err: Error) => this.log.warn({ err }, "broker error"));
    conn.on("close", () => session && this.lost(session, "connection closed"));
    try {
      const channel = await conn.createChannel();
      channel.on("error", (err: Error) => this.log.warn({ err }, "channel error"));
      channel.on("close", () => session && this.lost(session, "channel closed"));
      // Fail early and clearly when the exchanges mcollectived subscribes to are not declared.
      await channel.checkExchange(`${this.collective}_broadcast`);
      await channel.checkExchange(`${this.collective}_directed`);
      const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
      await channel.consume(queue, (msg) => this.onDelivery(msg), { noAck: true, exclusive: true });
      session = { conn, channel, replyQueue: queue };
      this.log.info({ broker: where, replyQueue: queue }, "connected to the broker");
      return session;
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw new McoConnectionError(
        `cannot set up a channel on ${where}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** The reply queue died with the session: fail what waits on it and open a new session. */
  private lost(session: Session, why: string): void {
    if (this.session !== session) return;
    this.session = undefined;
    session.conn.close().catch(() => undefined);
    this.failPending(new McoConnectionError(`lost the broker connection (${why})`));
    if (this.closed) return;
    this.log.warn({ reason: why }, "lost the broker connection; reconnecting");
    this.reconnecting ??= this.reconnectLoop();
  }

  private failPending(err: Error): void {
    for (const pending of [...this.pending.values()]) pending.fail(err);
  }
}

/** Our own decoding errors name a limit or a missing field; anything else is not quoted. */
function dropDetail(err: unknown): string {
  return err instanceof McoProtocolError ? err.message : "undecodable";
}
