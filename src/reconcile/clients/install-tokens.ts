// Per-server install tokens, kept in Secrets in the operator's namespace (a namespaced owner
// reference cannot cross namespaces, and RBAC keeps vsop's Secret access to its own namespace).
// The Secret is labelled with the server it belongs to and deleted by the server's finalizer.
// A token is spent once the install is known (callback or discovery): its value is then removed
// and only its hash stays, so the record still answers 410. The server's identity public key,
// made when it fetched its keys, lives here too; the private half only sealed for the installer
// that fetched it (its retry after a lost answer), and only until the token is spent.
import { timingSafeEqual } from "node:crypto";
import { CacheIndex } from "../../controller/cache-index.js";
import type { Informer } from "../../controller/informer.js";
import { isConflict, isNotFound, type Kube } from "../../controller/kube.js";
import type { VirtualServer } from "../../api/types.js";
import { hashToken, newToken } from "../../provision/tokens.js";

const LABEL = "provisioning.vsop.dev";
const HASH_LABEL = `${LABEL}/install-token-hash`;

export interface InstallToken {
  /** Empty once spent. */
  token: string;
  tokenHash: string;
  state: "pending" | "built";
  builtAt?: string;
  /** When the installer first fetched its kickstart (GET /ks/<token>). */
  kickstartFetchedAt?: string;
  /** When the server fetched its one-time key bundle, and the public half of its identity key. */
  keysFetchedAt?: string;
  identityPublicKey?: string;
  /**
   * The handed-out private key and challenge, sealed for the installer that fetched them (its
   * nonce opens it; see provision/sealed-keys.ts), until the token is spent.
   */
  keysSealed?: string;
  /** SHA-256 of the server's one-time Puppet CA challenge (handed out with its keys). */
  challengeHash?: string;
  /** When vsop's autosign answer signed a CSR with that challenge: it is spent. */
  challengeSpentAt?: string;
  resourceVersion?: string;
  owner: { namespace: string; name: string; uid: string };
}

export interface SecretObject {
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
  };
  data?: Record<string, string>;
}

/** The label selector of install records, for a watch that keeps them (tokenIndex). */
export const INSTALL_RECORDS = HASH_LABEL;

const secretName = (uid: string) => `vsop-install-${uid}`;
const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");

function decode(s: SecretObject): InstallToken {
  const l = s.metadata.labels ?? {};
  const token = unb64(s.data?.token);
  return {
    token,
    tokenHash: unb64(s.data?.tokenHash) || (token ? hashToken(token) : ""),
    state: unb64(s.data?.state) === "built" ? "built" : "pending",
    builtAt: unb64(s.data?.builtAt) || undefined,
    kickstartFetchedAt: unb64(s.data?.kickstartFetchedAt) || undefined,
    keysFetchedAt: unb64(s.data?.keysFetchedAt) || undefined,
    identityPublicKey: unb64(s.data?.identityPublicKey) || undefined,
    keysSealed: unb64(s.data?.keysSealed) || undefined,
    challengeHash: unb64(s.data?.challengeHash) || undefined,
    challengeSpentAt: unb64(s.data?.challengeSpentAt) || undefined,
    resourceVersion: s.metadata.resourceVersion,
    owner: {
      namespace: l[`${LABEL}/owner-namespace`] ?? "",
      name: l[`${LABEL}/owner-name`] ?? "",
      uid: l[`${LABEL}/owner-uid`] ?? "",
    },
  };
}

export class InstallTokens {
  /**
   * @param records a synced watch of the install records: the provisioning endpoint then finds a
   *   token without listing Secrets on every request (an unknown token costs no API call).
   */
  constructor(
    private readonly kube: Kube,
    private readonly namespace: string,
    private readonly records?: Pick<Informer<SecretObject>, "on" | "synced" | "get">,
  ) {
    this.byHash = records && new CacheIndex(records, (s) => [s.metadata.labels?.[HASH_LABEL]]);
  }

  /** The watched records by token hash label: a request with any token reads one bucket. */
  private readonly byHash?: CacheIndex<SecretObject>;

  /** Identity keys of installed servers, by uid, with the install they belong to. */
  private readonly settledKeys = new Map<string, { installedAt: string; key?: string }>();

  private path(name = ""): string {
    return `/api/v1/namespaces/${this.namespace}/secrets${name ? `/${name}` : ""}`;
  }

  async get(uid: string): Promise<InstallToken | undefined> {
    try {
      return decode(await this.kube.get<SecretObject>(this.path(secretName(uid))));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The server's token, created on first use. */
  async ensure(vs: VirtualServer): Promise<InstallToken> {
    const existing = await this.get(vs.metadata.uid!);
    if (existing) return existing;
    const token = newToken();
    try {
      // The API server answers a create with the object as stored: no read after the write.
      return decode(
        await this.kube.create<SecretObject>(this.path(), {
          apiVersion: "v1",
          kind: "Secret",
          type: "Opaque",
          metadata: {
            name: secretName(vs.metadata.uid!),
            namespace: this.namespace,
            labels: {
              "app.kubernetes.io/managed-by": "vsop",
              [HASH_LABEL]: hashToken(token).slice(0, 40),
              [`${LABEL}/owner-namespace`]: vs.metadata.namespace!,
              [`${LABEL}/owner-name`]: vs.metadata.name,
              [`${LABEL}/owner-uid`]: vs.metadata.uid!,
            },
          },
          data: { token: b64(token), tokenHash: b64(hashToken(token)), state: b64("pending") },
        }),
      );
    } catch (err) {
      if (!isConflict(err)) throw err; // created meanwhile by another reconcile: read it
    }
    return (await this.get(vs.metadata.uid!))!;
  }

  /** Finds a token's record by its hash label, comparing the token itself in constant time. */
  async find(token: string): Promise<InstallToken | undefined> {
    const label = hashToken(token).slice(0, 40);
    const items = this.records?.synced
      ? this.byHash!.get(label)
      : (
          await this.kube.request<{ items: SecretObject[] }>("GET", this.path(), undefined, {
            params: { labelSelector: `${HASH_LABEL}=${label}` },
          })
        ).items;
    const want = Buffer.from(hashToken(token));
    for (const s of items) {
      const t = decode(s);
      const have = Buffer.from(t.tokenHash);
      if (have.length === want.length && timingSafeEqual(have, want)) return t;
    }
    return undefined;
  }

  /**
   * Spends the token: the install is known, so /ks, /bootstrap and /built answer 410 from now on
   * and the token's value and the sealed keys are dropped from the record (its hash stays).
   */
  async markBuilt(t: InstallToken): Promise<void> {
    await this.kube.mergePatch(this.path(secretName(t.owner.uid)), {
      data: {
        state: b64("built"),
        builtAt: b64(new Date().toISOString()),
        tokenHash: b64(t.tokenHash),
        token: null,
        keysSealed: null,
      },
    });
  }

  /**
   * Records that the server fetched its key bundle, with the public half of its new identity
   * key, the hash of its Puppet CA challenge and, when its installer sent a nonce, both sealed
   * for that installer's retry. Conditional on the record's resourceVersion, so
   * of two concurrent fetches (two replicas, a replayed request) exactly one wins; the other gets
   * false.
   */
  async claimKeys(
    t: InstallToken,
    identityPublicKey: string,
    challengeHash: string,
    sealed?: string,
  ): Promise<boolean> {
    return this.recordOnce(t, "keysFetchedAt", {
      keysFetchedAt: b64(new Date().toISOString()),
      identityPublicKey: b64(identityPublicKey),
      challengeHash: b64(challengeHash),
      ...(sealed ? { keysSealed: b64(sealed) } : {}),
    });
  }

  /**
   * The server's identity public key, to verify its MCollective replies with. While it installs
   * the record is read fresh: a key claimed through another replica may not be in the watch yet,
   * and a missing key means weaker checks. Once `installedAt` is recorded the key cannot change
   * (the token is spent, so claimKeys refuses, and no record is made before a rebuild starts a
   * new install): the answer of one read is kept for that install, so a fleet's Puppet
   * exchanges cost no reads.
   */
  async identityKey(uid: string, installedAt?: string): Promise<string | undefined> {
    const settled = this.settledKeys.get(uid);
    if (installedAt && settled?.installedAt === installedAt) return settled.key;
    const key = (await this.get(uid))?.identityPublicKey;
    if (installedAt) this.settledKeys.set(uid, { installedAt, key });
    return key;
  }

  /**
   * The record as the watch has it once synced (no API call), else as the API server has it:
   * for checks where a record only just written does not matter.
   */
  async known(uid: string): Promise<InstallToken | undefined> {
    return this.records?.synced ? this.cached(uid) : this.get(uid);
  }

  /** The record as the watch has it (no API call); undefined when unknown or not synced. */
  cached(uid: string): InstallToken | undefined {
    if (!this.records?.synced) return undefined;
    const s = this.records.get(`${this.namespace}/${secretName(uid)}`);
    return s ? decode(s) : undefined;
  }

  /**
   * Spends the server's Puppet CA challenge (its CSR is being signed). Conditional on the record's
   * resourceVersion, so of two racing CSRs exactly one is signed; true when this call spent it.
   * The record may come from the watch and lag behind: on a conflict it is read again once.
   */
  async spendChallenge(t: InstallToken): Promise<boolean> {
    for (let record: InstallToken | undefined = t, attempt = 0; attempt < 2; attempt++) {
      if (!record?.challengeHash || record.challengeSpentAt) return false;
      if (record.challengeHash !== t.challengeHash) return false;
      try {
        await this.kube.mergePatch(this.path(secretName(t.owner.uid)), {
          metadata: { resourceVersion: record.resourceVersion },
          data: { challengeSpentAt: b64(new Date().toISOString()) },
        });
        return true;
      } catch (err) {
        if (!isConflict(err)) throw err;
        record = await this.get(t.owner.uid);
      }
    }
    return false;
  }

  /**
   * Records the first kickstart fetch; later fetches (an installer retrying) change nothing.
   * Conditional on the record's resourceVersion, like claimKeys. True when this call recorded it.
   */
  async markKickstartFetched(t: InstallToken): Promise<boolean> {
    return this.recordOnce(t, "kickstartFetchedAt", {
      kickstartFetchedAt: b64(new Date().toISOString()),
    });
  }

  /**
   * Writes `data` unless `field` is already set or the token is spent, conditional on the
   * record's resourceVersion so of two racing writers exactly one wins. The record may come from
   * the watch and lag behind: on a conflict it is read again once.
   */
  private async recordOnce(
    t: InstallToken,
    field: "keysFetchedAt" | "kickstartFetchedAt",
    data: Record<string, string>,
  ): Promise<boolean> {
    for (let record: InstallToken | undefined = t, attempt = 0; attempt < 2; attempt++) {
      if (!record || record[field] || record.state !== "pending") return false;
      try {
        await this.kube.mergePatch(this.path(secretName(t.owner.uid)), {
          metadata: { resourceVersion: record.resourceVersion },
          data,
        });
        return true;
      } catch (err) {
        if (!isConflict(err)) throw err;
        record = await this.get(t.owner.uid);
      }
    }
    return false;
  }

  async delete(uid: string): Promise<void> {
    this.settledKeys.delete(uid);
    try {
      await this.kube.delete(this.path(secretName(uid)));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
