// The provisioning HTTP endpoint wired to install tokens: /ks/<token> renders the server's
// kickstart from its current status and class (the first fetch is recorded, the installer's first
// sign of life); /bootstrap/<token> hands out its keys once, with a new identity key whose public
// half is recorded first; /built/<token> spends the token and wakes the server's reconcile. Any
// replica can answer: state lives in the token Secrets.
import type { Server } from "node:http";
import type { Logger } from "pino";
import type { VirtualServer, VirtualServerClass } from "../api/types.js";
import { ProvisioningServer, type TokenState } from "../provision/server.js";
import { newIdentityKey } from "../provision/identity-key.js";
import { tokenLogId } from "../provision/tokens.js";
import { bootstrapFor, kickstartFor } from "./install-config.js";
import { installURLs } from "./install-data.js";
import type { InstallTokens } from "./install-tokens.js";
import type { ConfigReader } from "./secrets.js";

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
        async bootstrap() {
          if (t.keysFetchedAt) return undefined;
          const key = await newIdentityKey();
          // Record the public half first, conditionally: of two racing fetches one wins.
          if (!(await deps.tokens.claimKeys(t, key.publicKeyPem))) return undefined;
          deps.logger.info(
            { virtualserver, tokenId: tokenLogId(token) },
            "install keys handed out; identity key recorded",
          );
          deps.progressed?.(t.owner.namespace, t.owner.name);
          return bootstrapFor(vs, cls, deps.config, key.privateKeyPem);
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
  });
  await server.listen(bind.host ?? "0.0.0.0", bind.port);
  return server.httpServer;
}
