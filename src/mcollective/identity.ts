// Per-server reply authentication. MCollective's ssl plugin signs every reply with the one key
// pair all servers share, so it cannot tell servers apart. vsop's node-side agent
// (mcollective/agent/puppet.rb) therefore also signs, with the server's own identity key, a JSON
// statement of what it answers: request id, identity, agent, action, status code and message, and data. vsop
// believes "installed" and Puppet results only from a statement that verifies with the public
// key it recorded for that server and names this request and this server.
import { createPublicKey, verify } from "node:crypto";
import type { McoReply } from "./client.js";

/** The statement must fit this; anything larger is refused unparsed. */
const MAX_STATEMENT_BYTES = 64 * 1024;

export class McoIdentityError extends Error {
  override name = "McoIdentityError";
  constructor(
    readonly identity: string,
    readonly why: string,
  ) {
    super(`the reply claiming to be from ${identity} ${why}`);
  }
}

export interface Expected {
  requestId: string;
  identity: string;
  agent: string;
  action: string;
}

interface Statement {
  requestid: unknown;
  identity: unknown;
  agent: unknown;
  action: unknown;
  statuscode: unknown;
  statusmsg: unknown;
  data: unknown;
}

/**
 * The reply's data as the server signed it, or McoIdentityError when the statement is missing,
 * oversized, unsigned by the server's key, or about another request, server or action.
 */
export function verifiedReplyData(
  reply: McoReply,
  expected: Expected,
  publicKeyPem: string,
): Record<string, unknown> {
  const fail = (why: string) => new McoIdentityError(expected.identity, why);
  const statement = reply.data.vsop_signed;
  const signature = reply.data.vsop_signature;
  if (typeof statement !== "string" || typeof signature !== "string")
    throw fail("carries no signature of the server's own identity key");
  if (Buffer.byteLength(statement) > MAX_STATEMENT_BYTES || signature.length > 1024)
    throw fail("carries an oversized signed statement");
  let ok = false;
  try {
    ok = verify(
      "sha256",
      Buffer.from(statement, "utf8"),
      createPublicKey(publicKeyPem),
      Buffer.from(signature, "base64"),
    );
  } catch {
    ok = false;
  }
  if (!ok) throw fail("is not signed by the server's own identity key");
  let s: Statement;
  try {
    s = JSON.parse(statement) as Statement;
  } catch {
    throw fail("carries a signed statement that is not JSON");
  }
  if (
    s.requestid !== expected.requestId ||
    s.identity !== expected.identity ||
    s.agent !== expected.agent ||
    s.action !== expected.action
  )
    throw fail("was signed for another request, server or action");
  if (s.statuscode !== reply.statuscode || s.statusmsg !== reply.statusmsg)
    throw fail("differs from what the server signed");
  if (s.data === null || typeof s.data !== "object" || Array.isArray(s.data))
    throw fail("carries a signed statement without data");
  return s.data as Record<string, unknown>;
}
