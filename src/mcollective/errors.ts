// Typed MCollective errors. The reconcile steps map them to condition reasons.
import { isCertVerifyCode } from "../tls.js";

/** The broker could not be reached, refused us, or the connection dropped mid-request. */
export class McoConnectionError extends Error {
  override name = "McoConnectionError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Nobody (of those asked) answered before the request's timeout. */
export class McoTimeout extends Error {
  override name = "McoTimeout";
  constructor(
    readonly agent: string,
    readonly action: string,
    readonly requestId: string,
    readonly timeoutMs: number,
    /** Identities that were asked and did not answer (empty for a broadcast). */
    readonly missing: string[],
  ) {
    super(
      `${agent}#${action} (request ${requestId}): no reply within ${timeoutMs}ms` +
        (missing.length ? ` from ${missing.join(", ")}` : ""),
    );
  }
}

/** A message that is not what the MCollective wire format says it should be. */
export class McoProtocolError extends Error {
  override name = "McoProtocolError";
}

/** The agent answered with a non-zero statuscode (1 aborted, 2 unknown action, 3 missing data, 4 invalid data, 5 other). */
export class McoRpcError extends Error {
  override name = "McoRpcError";
  constructor(
    readonly identity: string,
    readonly agent: string,
    readonly action: string,
    readonly statuscode: number,
    readonly statusmsg: string,
  ) {
    super(`${agent}#${action} on ${identity} failed (statuscode ${statuscode}): ${statusmsg}`);
  }
}

/**
 * The broker's TLS certificate did not verify against the CA vsop trusts for it
 * (spec.mcollective.caBundle, else the system roots): wrong CA, expired, or a name mismatch.
 * It does not clear by itself, so the reconnect loop gives up on it instead of retrying.
 */
export class McoTLSError extends McoConnectionError {
  override name = "McoTLSError";
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The certificate-verification code of err (or of its cause), when it is one. */
export function tlsVerifyCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 3; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && isCertVerifyCode(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}
