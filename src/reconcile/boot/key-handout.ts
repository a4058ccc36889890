// The keys /bootstrap hands an installer: a new identity key and a Puppet CA challenge, whose
// public half and hash go into the install record first (conditionally: of two racing fetches one
// wins). The answer can be lost after that record landed: the operator killed mid-answer, or a
// write that timed out (503) and was applied by the API server later. Without more, the
// installer's retry would be refused (410) and the install could never finish. So an installer
// that sends a nonce (the shipped templates do, the same on every try) has its keys recorded
// sealed under that nonce too (provision/sealed-keys.ts), and its retry gets the same keys from
// any replica. Everyone else, and any caller without a nonce, gets nothing once keys are recorded.
import { hashChallenge, newChallenge } from "../../puppet/trusted-facts.js";
import { newIdentityKey, publicKeyPemOf } from "../../provision/identity-key.js";
import { seal, unseal, type BootstrapSecrets } from "../../provision/sealed-keys.js";
import type { InstallToken } from "../clients/install-tokens.js";

/** What the handout needs of the install records. */
export interface KeyRecords {
  /**
   * Records the keys' public parts (and `sealed`, when given) unless keys were recorded already;
   * true when this call did.
   */
  claimKeys(
    t: InstallToken,
    identityPublicKey: string,
    challengeHash: string,
    sealed?: string,
  ): Promise<boolean>;
  /** The record as the API server has it now. */
  get(uid: string): Promise<InstallToken | undefined>;
}

/**
 * What `render` makes of the keys for the installer of record `t`; undefined when keys were
 * recorded for another caller (or for one without a nonce). The keys are rendered before they are
 * recorded, so a render that fails (a Secret it reads cannot be read) records nothing. `again` is
 * true when this installer's keys had been recorded before (its earlier answer was lost).
 */
export async function handOutKeys<T>(
  records: KeyRecords,
  t: InstallToken,
  nonce: string | undefined,
  render: (secrets: BootstrapSecrets) => Promise<T>,
): Promise<{ value: T; again: boolean } | undefined> {
  if (t.keysFetchedAt) return handOutAgain(t, nonce, render);
  const identity = await newIdentityKey();
  const secrets = { identityPrivateKeyPem: identity.privateKeyPem, challenge: newChallenge() };
  const value = await render(secrets);
  const claimed = await records.claimKeys(
    t,
    identity.publicKeyPem,
    hashChallenge(secrets.challenge),
    nonce === undefined ? undefined : seal(secrets, nonce, t.owner.uid),
  );
  if (claimed) return { value, again: false };
  // Keys were recorded first: another caller's, or this installer's own from a try whose answer
  // it never got (a copy from the watch may not show them yet).
  return handOutAgain(await records.get(t.owner.uid), nonce, render);
}

/** The keys recorded for the installer that holds `nonce`, rendered again. */
async function handOutAgain<T>(
  t: InstallToken | undefined,
  nonce: string | undefined,
  render: (secrets: BootstrapSecrets) => Promise<T>,
): Promise<{ value: T; again: boolean } | undefined> {
  if (!t?.keysSealed || t.state !== "pending" || nonce === undefined) return undefined;
  const secrets = unseal(t.keysSealed, nonce, t.owner.uid);
  if (!secrets || publicKeyPemOf(secrets.identityPrivateKeyPem) !== t.identityPublicKey)
    return undefined;
  return { value: await render(secrets), again: true };
}
