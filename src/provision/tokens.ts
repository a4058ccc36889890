// One-time provisioning tokens: they sit in the kickstart and callback URLs of one server.
import { createHash, randomBytes } from "node:crypto";

/** 256 random bits, URL-safe base64 without padding (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What is stored instead of the token itself. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** A short, non-reversible name for log lines: the first 12 hex digits of the hash. */
export function tokenLogId(token: string): string {
  return hashToken(token).slice(0, 12);
}

/** Tokens from newToken() have this shape; anything else in a URL is refused unseen. */
export function isWellFormedToken(token: string): boolean {
  return /^[A-Za-z0-9_-]{22,128}$/.test(token);
}
