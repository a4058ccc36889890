// Typed vSphere errors. The reconcile steps map them to condition reasons.
import { isCertVerifyCode } from "../tls.js";

/** A vim25 SOAP fault, e.g. InvalidLogin, NotAuthenticated, DuplicateName, NoDiskSpace. */
export class VSphereFault extends Error {
  override name = "VSphereFault";
  constructor(
    readonly fault: string,
    readonly method: string,
    message: string,
  ) {
    super(`${method}: ${fault}${message ? `: ${message}` : ""}`);
  }
}

/** The server's certificate failed verification against the configured CA bundle. */
export class VSphereTLSError extends Error {
  override name = "VSphereTLSError";
  constructor(
    readonly url: string,
    readonly code: string,
  ) {
    super(`TLS verification of ${url} failed (${code}); check the class's CA bundle`);
  }
}

/** vCenter could not be reached (refused, reset, timed out). */
export class VSphereUnreachable extends Error {
  override name = "VSphereUnreachable";
  constructor(
    readonly url: string,
    readonly code: string,
  ) {
    super(`vCenter at ${url} is unreachable (${code})`);
  }
}

/** A vSphere task ended in error or did not end in time. */
export class VSphereTaskError extends Error {
  override name = "VSphereTaskError";
  /** The method that started the task and the object it worked on, when known. */
  readonly method?: string;
  readonly entity?: string;
  constructor(
    readonly task: string,
    readonly fault: string,
    message: string,
    context: { method?: string; entity?: string; cause?: unknown } = {},
  ) {
    const what = context.method
      ? `${context.method}${context.entity ? ` on ${context.entity}` : ""} (task ${task})`
      : `task ${task}`;
    super(`${what} failed: ${fault}${message ? `: ${message}` : ""}`, { cause: context.cause });
    this.method = context.method;
    this.entity = context.entity;
  }
}

/** A certificate that did not verify, or a TLS handshake that failed (EPROTO). */
export function isTLSErrorCode(code: string | undefined): boolean {
  return code === "EPROTO" || isCertVerifyCode(code);
}

export function faultName(err: unknown): string | undefined {
  if (err instanceof VSphereFault) return err.fault;
  if (err instanceof VSphereTaskError) return err.fault;
  return undefined;
}
