// The provisioning HTTP endpoint wired to install tokens: /ks/<token> renders the server's
// kickstart from its current status and class (the first fetch is recorded, the installer's first
// sign of life); /bootstrap/<token> hands out its keys once, with a new identity key whose public
// half is recorded first (key-handout.ts, which also serves the same installer's retry after a
// lost answer); /built/<token> spends the token and wakes the server's reconcile. Any replica can
// answer: state lives in the token Secrets.
import type { Server } from "node:http";
import type { Logger } from "pino";
import type { VirtualServer, VirtualServerClass } from "../../api/types.js";
import {
  ProvisioningServer,
  type AutosignOptions,
  type TokenState,
} from "../../provision/server.js";
import { effectiveClass } from "../../api/effective-class.js";
import { parseHostname } from "../../naming/hostname.js";
import { decideAutosign, type AutosignCandidate } from "../../puppet/autosign.js";
import { trustedFacts } from "../../puppet/trusted-facts.js";
import { tokenLogId } from "../../provision/tokens.js";
import { bootstrapFor, kickstartFor } from "./install-config.js";
import { handOutKeys } from "./key-handout.js";
import { installURLs } from "./install-data.js";
import type { InstallToken, InstallTokens } from "../clients/install-tokens.js";
import type { ConfigReader } from "../clients/secrets.js";
import { isKubeOutage } from "../../controller/kube.js";

export interface ProvisioningDeps {
  tokens: InstallTokens;
  config: ConfigReader;
  logger: Logger;
  provisioningURL: string;
  server: (namespace: string, name: string) => VirtualServer | undefined;
  cls: (name: string) => VirtualServerClass | undefined;
  /** Called after a /built callback, with the server's namespace and name. */
  built: (namespace: string, name: string) => void;
  /**
   * Called when the installer showed its first sign of life (kickstart or keys fetched and
   * recorded in the install record), so the reconcile copies it into status soon.
   */
  progressed?: (namespace: string, name: string) => void;
  /** The Puppet master's autosign questions (POST /autosign/<certname>); off when absent. */
  autosign?: {
    /** The secret the master's autosign command presents. */
    secret: string;
    /** Every VirtualServer in the cache, to find the certname's. */
    servers: () => readonly VirtualServer[];
    /** Called once per answer: signed, or refused and why (metrics). */
    decided?: (signed: boolean, reason: string) => void;
  };
}

export async function startProvisioningServer(
  bind: { host?: string; port: number },
  deps: ProvisioningDeps,
): Promise<Server> {
  const server = new ProvisioningServer({
    log: deps.logger.child({ component: "provisioning" }),
    async lookup(token): Promise<TokenState> {
      const t = await deps.tokens.find(token);
      if (!t) return undefined;
      if (t.state === "built") return { kind: "used" };
      const vs = deps.server(t.owner.namespace, t.owner.name);
      const cls = vs && deps.cls(vs.spec.className);
      if (!vs || vs.metadata.uid !== t.owner.uid || !cls) return undefined;
      // The kickstart is rendered from recorded status; it is complete once the VM was powered on.
      if (!vs.status?.install?.startedAt) return { kind: "notReady" };
      const virtualserver = `${t.owner.namespace}/${t.owner.name}`;
      return {
        kind: "active",
        async kickstart() {
          const body = await kickstartFor(
            vs,
            cls,
            deps.config,
            installURLs(deps.provisioningURL, token),
          );
          // The first fetch is the installer's first sign of life: record it in the install
          // record for the reconcile to show. The installer gets its kickstart either way.
          if (!t.kickstartFetchedAt) {
            try {
              if (await deps.tokens.markKickstartFetched(t)) {
                deps.logger.info({ virtualserver }, "installer fetched its kickstart");
                deps.progressed?.(t.owner.namespace, t.owner.name);
              }
            } catch (err) {
              deps.logger.warn({ virtualserver, err }, "could not record the kickstart fetch");
            }
          }
          return body;
        },
        async bootstrap(nonce) {
          const issued = await handOutKeys(deps.tokens, t, nonce, (secrets) =>
            bootstrapFor(vs, cls, deps.config, secrets),
          );
          if (!issued) return undefined;
          deps.logger.info(
            { virtualserver, tokenId: tokenLogId(token) },
            issued.again
              ? "install keys handed out again, to the installer's retry after a lost answer"
              : "install keys handed out; identity key recorded",
          );
          deps.progressed?.(t.owner.namespace, t.owner.name);
          return issued.value;
        },
      };
    },
    async onBuilt(token) {
      const t = await deps.tokens.find(token);
      if (!t || t.state === "built") return;
      await deps.tokens.markBuilt(t);
      deps.logger.info(
        { virtualserver: `${t.owner.namespace}/${t.owner.name}` },
        "installer reported built",
      );
      deps.built(t.owner.namespace, t.owner.name);
    },
    ...(deps.autosign ? { autosign: autosignAnswer(deps, deps.autosign) } : {}),
    // The token Secrets live in the API server: while it is away, installers are told to retry.
    unavailable: isKubeOutage,
  });
  await server.listen(bind.host ?? "0.0.0.0", bind.port);
  return server.httpServer;
}

/**
 * Answers the master's autosign question from the informer caches: the VirtualServers with the
 * certname as hostname, their install records' challenge, and the trusted facts vsop gave them.
 * A signed answer first spends the challenge (conditionally: of two racing CSRs one wins).
 */
function autosignAnswer(
  deps: ProvisioningDeps,
  opts: NonNullable<ProvisioningDeps["autosign"]>,
): AutosignOptions {
  const log = deps.logger.child({ component: "autosign" });
  return {
    secret: opts.secret,
    async decide(certname, csrPem) {
      const candidates: AutosignCandidate<InstallToken | undefined>[] = [];
      for (const vs of opts.servers()) {
        if (vs.spec.hostname !== certname || vs.metadata.deletionTimestamp) continue;
        const cls = deps.cls(vs.spec.className);
        const uid = vs.metadata.uid!;
        // The watch's copy, unless it does not show a challenge yet (it may lag behind).
        let record = deps.tokens.cached(uid);
        if (!record?.challengeHash) record = await deps.tokens.get(uid);
        const virtualserver = `${vs.metadata.namespace}/${vs.metadata.name}`;
        if (!cls || !record || record.owner.uid !== uid) {
          candidates.push({ ref: undefined, virtualserver, facts: {} });
          continue;
        }
        let facts: Record<string, string>;
        try {
          facts = trustedFacts(
            parseHostname(vs.spec.hostname, cls.spec.naming?.pattern),
            effectiveClass(cls).puppet.extensionRequests,
          );
        } catch {
          facts = {}; // a name or class vsop cannot use: its challenge was never handed out
        }
        candidates.push({
          ref: record,
          virtualserver,
          challengeHash: record.challengeHash,
          challengeSpentAt: record.challengeSpentAt,
          facts,
        });
      }
      let verdict = decideAutosign(certname, csrPem, candidates);
      const ref = verdict.sign ? verdict.candidate.ref : undefined;
      if (verdict.sign && !(ref && (await deps.tokens.spendChallenge(ref))))
        verdict = {
          sign: false,
          reason: "ChallengeSpent",
          message: "the challenge was spent by another request a moment ago",
          virtualserver: verdict.candidate.virtualserver,
        };
      if (verdict.sign) {
        log.info(
          { certname, virtualserver: verdict.candidate.virtualserver },
          "Puppet CSR signed: the challenge vsop handed this server, spent now",
        );
        opts.decided?.(true, "Signed");
        return { sign: true, reason: "Signed" };
      }
      log.warn(
        { certname, virtualserver: verdict.virtualserver, reason: verdict.reason },
        `Puppet CSR left unsigned: ${verdict.message}`,
      );
      opts.decided?.(false, verdict.reason);
      return { sign: false, reason: verdict.reason };
    },
  };
}
