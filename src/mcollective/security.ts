// MCollective's "ssl" security plugin: a client signs each request body with its private key
// (RSA, SHA1), servers sign replies with the key pair they all share. Signatures travel as Ruby
// Base64.encode64 text.
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";

/** Ruby's Base64.encode64: standard alphabet, a newline after every 60 characters and at the end. */
export function encode64(bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes).toString("base64");
  let out = "";
  for (let i = 0; i < b64.length; i += 60) out += `${b64.slice(i, i + 60)}\n`;
  return out;
}

/** Ruby's Base64.decode64 as the plugin uses it: whitespace allowed, anything else refused. */
export function decode64(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/=\s]+$/.test(text)) return undefined;
  return Buffer.from(text.replace(/\s+/g, ""), "base64");
}

export const privateKey = (pem: string | KeyObject): KeyObject =>
  typeof pem === "string" ? createPrivateKey(pem) : pem;

export const publicKey = (pem: string | KeyObject): KeyObject =>
  typeof pem === "string" ? createPublicKey(pem) : pem;

/** The :hash of a request: encode64(RSA-SHA1 signature of the :body bytes). */
export function signBody(body: Uint8Array, key: string | KeyObject): string {
  return encode64(sign("sha1", body, privateKey(key)));
}

/** Whether :hash is a valid signature of :body by the key; never throws on bad input. */
export function verifyBody(body: Uint8Array, hash: string, key: string | KeyObject): boolean {
  const signature = decode64(hash);
  if (!signature || signature.length === 0) return false;
  try {
    return verify("sha1", body, publicKey(key), signature);
  } catch {
    return false;
  }
}
