// A server's one-time keys, sealed for its own installer only: /bootstrap keeps them in the install
// record so that the installer whose answer was lost (the operator killed mid-answer, a recording
// that timed out but was applied) gets the same keys on its retry. The seal's key comes from the
// installer's nonce, which the installer sends with every try of its fetch and vsop never
// stores: whoever reads the record, or knows only the token, cannot open it.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/** The installer's nonce header: 128 random bits or more, the same on every try of one install. */
export const NONCE_HEADER = "x-vsop-installer-nonce";

/** Nonces the shipped templates make (32 hex digits) and anything of similar strength. */
export function isWellFormedNonce(nonce: string): boolean {
  return /^[A-Za-z0-9_-]{32,128}$/.test(nonce);
}

/** What a server's key bundle carries of its own: its identity key and its Puppet CA challenge. */
export interface BootstrapSecrets {
  identityPrivateKeyPem: string;
  challenge: string;
}

const INFO = "vsop bootstrap keys v1";
/** A sealed bundle holds a P-256 key in PEM and a challenge: a few hundred bytes. */
const MAX_SEALED = 4096;

/** The record's `salt` (its server's uid) binds a seal to that record. */
function sealKey(nonce: string, salt: string): Buffer {
  return Buffer.from(hkdfSync("sha256", nonce, salt, INFO, 32));
}

/** AES-256-GCM, base64 of iv (12) | tag (16) | ciphertext. */
export function seal(secrets: BootstrapSecrets, nonce: string, salt: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", sealKey(nonce, salt), iv);
  const body = Buffer.concat([cipher.update(JSON.stringify(secrets), "utf8"), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64");
}

/** The secrets, or undefined when `nonce` is not the one they were sealed with (or bad data). */
export function unseal(sealed: string, nonce: string, salt: string): BootstrapSecrets | undefined {
  if (sealed.length > MAX_SEALED) return undefined;
  const raw = Buffer.from(sealed, "base64");
  if (raw.length < 29) return undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", sealKey(nonce, salt), raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    const text = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]);
    const v = JSON.parse(text.toString("utf8")) as Partial<BootstrapSecrets>;
    if (typeof v.identityPrivateKeyPem !== "string" || typeof v.challenge !== "string")
      return undefined;
    return { identityPrivateKeyPem: v.identityPrivateKeyPem, challenge: v.challenge };
  } catch {
    return undefined; // another nonce: the tag does not verify
  }
}
