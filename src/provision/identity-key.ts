// Each server's own identity key: made when the server fetches its one-time key bundle, the
// private half handed to the server only, the public half kept by vsop to check that a reply
// claiming to come from the server really does (mcollective/identity.ts).
import { createPrivateKey, createPublicKey, generateKeyPair } from "node:crypto";
import { promisify } from "node:util";

const generate = promisify(generateKeyPair);

export interface IdentityKey {
  privateKeyPem: string;
  publicKeyPem: string;
}

/** An ECDSA P-256 key pair in PEM (PKCS#8 / SPKI), which Ruby's OpenSSL::PKey.read loads. */
export async function newIdentityKey(): Promise<IdentityKey> {
  const { privateKey, publicKey } = await generate("ec", {
    namedCurve: "prime256v1",
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return { privateKeyPem: privateKey, publicKeyPem: publicKey };
}

/** The public half, in SPKI PEM, of a private key in PEM (a key handed out before, read back). */
export function publicKeyPemOf(privateKeyPem: string): string {
  return createPublicKey(createPrivateKey(privateKeyPem))
    .export({ type: "spki", format: "pem" })
    .toString();
}
