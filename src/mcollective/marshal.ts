// Ruby Marshal for the message shapes of MCollective's ssl security plugin (DESIGN.md, wire
// notes): requests carry symbol-keyed hashes and a binary :body; replies are decoded back into
// plain JavaScript values.
import { dump, load } from "@hyrious/marshal";
import { McoProtocolError } from "./errors.js";
import { checkMarshal, DEFAULT_MARSHAL_LIMITS, type MarshalLimits } from "./marshal-limits.js";

/** What dumpRuby can write. Maps keep key order and allow Ruby symbols as keys. */
export type RubyValue =
  | null
  | boolean
  | number
  | string
  | symbol
  | Uint8Array
  | RubyValue[]
  | Map<RubyValue, RubyValue>
  | { [key: string]: RubyValue };

/** A Ruby symbol, e.g. sym("agent") is :agent. */
export const sym = (name: string): symbol => Symbol.for(name);

/** A Ruby Hash with symbol keys, in the given order: symbolHash({ a: 1 }) is {:a => 1}. */
export function symbolHash(fields: Record<string, RubyValue>): Map<symbol, RubyValue> {
  return new Map(Object.entries(fields).map(([k, v]) => [sym(k), v]));
}

/** JavaScript strings become UTF-8 Ruby Strings, Uint8Arrays binary (ASCII-8BIT) ones. */
export function dumpRuby(value: RubyValue): Buffer {
  const bytes = dump(value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Symbol keys become string keys; Strings without an encoding (binary) stay Uint8Array. The bytes
 * are checked against the limits first (MarshalLimitError), so load() only sees bounded input.
 */
export function loadRuby(
  bytes: Uint8Array,
  limits: MarshalLimits = DEFAULT_MARSHAL_LIMITS,
): unknown {
  checkMarshal(bytes, limits);
  try {
    return load(bytes, { hashSymbolKeysToString: true });
  } catch {
    // The loader's own message may quote the message (an encoding name): keep it out of logs.
    throw new McoProtocolError("not a Ruby Marshal message");
  }
}

/** Loaded Ruby data as JSON-friendly values: binary strings decoded as UTF-8, symbols by name. */
export function toPlain(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("utf8");
  if (typeof value === "symbol") return Symbol.keyFor(value) ?? value.description ?? "";
  if (Array.isArray(value)) return value.map(toPlain);
  if (value instanceof Map)
    return Object.fromEntries([...value].map(([k, v]) => [String(toPlain(k)), toPlain(v)]));
  if (value !== null && typeof value === "object") {
    if (Object.getPrototypeOf(value) !== Object.prototype) return String(value);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toPlain(v)]));
  }
  return value;
}

// --- requests -------------------------------------------------------------------------------

/** The identity/agent filter a server checks before it handles a request (string keys). */
export interface McoFilter {
  agent: string[];
  identity: string[];
}

export interface RpcRequest {
  agent: string;
  action: string;
  /** The caller id, e.g. "cert=vsop". */
  caller: string;
  data: Record<string, RubyValue>;
}

export interface RequestEnvelope {
  /** Marshal of the secure body (encodeSecureBody); what :hash signs. */
  body: Uint8Array;
  senderid: string;
  requestid: string;
  filter: McoFilter;
  collective: string;
  agent: string;
  callerid: string;
  ttl: number;
  msgtime: number;
  /** encode64 of the RSA-SHA1 signature of body. */
  hash: string;
}

/**
 * {:ssl_msg => {:agent, :action, :caller, :data}, :ssl_ttl, :ssl_msgtime}: the signed part of a
 * request, so a relay cannot stretch its TTL or replay it later under a new time.
 */
export function encodeSecureBody(rpc: RpcRequest, ttl: number, msgtime: number): Buffer {
  const data = symbolHash({ process_results: true, ...rpc.data });
  const msg = symbolHash({ agent: rpc.agent, action: rpc.action, caller: rpc.caller, data });
  return dumpRuby(symbolHash({ ssl_msg: msg, ssl_ttl: ttl, ssl_msgtime: msgtime }));
}

export function encodeRequest(req: RequestEnvelope): Buffer {
  const filter = {
    fact: [],
    cf_class: [],
    agent: req.filter.agent,
    identity: req.filter.identity,
    compound: [],
  };
  return dumpRuby(
    symbolHash({
      body: req.body,
      senderid: req.senderid,
      requestid: req.requestid,
      filter,
      collective: req.collective,
      agent: req.agent,
      callerid: req.callerid,
      ttl: req.ttl,
      msgtime: req.msgtime,
      hash: req.hash,
    }),
  );
}

// --- replies --------------------------------------------------------------------------------

export interface ReplyEnvelope {
  senderid: string;
  requestid: string;
  senderagent: string;
  msgtime: number;
  /** Marshal of {:statuscode, :statusmsg, :data}; what :hash signs. */
  body: Uint8Array;
  hash: string;
}

export interface RpcReplyBody {
  statuscode: number;
  statusmsg: string;
  data: Record<string, unknown>;
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new McoProtocolError(`${what} is not a Hash`);
  return value as Record<string, unknown>;
}

function str(fields: Record<string, unknown>, key: string, what: string): string {
  const v = fields[key];
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return Buffer.from(v).toString("utf8");
  throw new McoProtocolError(`${what} has no :${key} string`);
}

export function decodeReplyEnvelope(bytes: Uint8Array, limits?: MarshalLimits): ReplyEnvelope {
  const m = record(loadRuby(bytes, limits), "reply");
  const body = m.body;
  if (!(body instanceof Uint8Array)) throw new McoProtocolError("reply has no binary :body");
  return {
    senderid: str(m, "senderid", "reply"),
    requestid: str(m, "requestid", "reply"),
    senderagent: typeof m.senderagent === "string" ? m.senderagent : "",
    msgtime: typeof m.msgtime === "number" ? m.msgtime : 0,
    body,
    hash: str(m, "hash", "reply"),
  };
}

export function decodeReplyBody(bytes: Uint8Array, limits?: MarshalLimits): RpcReplyBody {
  const m = record(loadRuby(bytes, limits), "reply body");
  if (typeof m.statuscode !== "number") throw new McoProtocolError("reply body has no :statuscode");
  const data = m.data === null || m.data === undefined ? {} : m.data;
  return {
    statuscode: m.statuscode,
    statusmsg: typeof m.statusmsg === "string" ? m.statusmsg : String(toPlain(m.statusmsg) ?? ""),
    data: record(toPlain(data), "reply :data"),
  };
}

// A server's side of a reply, as mcollectived builds it; the tests use these to play a server.

export function encodeReplyBody(body: RpcReplyBody): Buffer {
  const data = symbolHash(body.data as Record<string, RubyValue>);
  return dumpRuby(symbolHash({ statuscode: body.statuscode, statusmsg: body.statusmsg, data }));
}

export function encodeReplyEnvelope(reply: ReplyEnvelope): Buffer {
  return dumpRuby(
    symbolHash({
      senderid: reply.senderid,
      requestid: reply.requestid,
      senderagent: reply.senderagent,
      msgtime: reply.msgtime,
      body: reply.body,
      hash: reply.hash,
    }),
  );
}
