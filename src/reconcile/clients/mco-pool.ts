// One MCollective client per distinct broker connection and key set that classes use.
import type { Logger } from "pino";
import { outsideReconcile } from "../../abort.js";
import type { VirtualServerClass } from "../../api/types.js";
import { McoClient, type McoDropReason } from "../../mcollective/client.js";
import { PuppetClient } from "../../mcollective/puppet.js";
import { ClientPool } from "./client-pool.js";
import type { ConfigReader } from "./secrets.js";

export interface McoHandle {
  mco: McoClient;
  puppet: PuppetClient;
}

export interface McoPoolOptions {
  /** Called for every message dropped from a reply queue, e.g. to count it by reason. */
  onDrop?: (reason: McoDropReason) => void;
  /** Reply size cap for every client (McoClient's default when unset). */
  maxReplyBytes?: number;
}

export class McoPool {
  private readonly pool = new ClientPool<McoHandle>((h) => h.mco.close());

  constructor(
    private readonly config: ConfigReader,
    private readonly logger: Logger,
    private readonly onRequest?: (agent: string, action: string, outcome: string) => void,
    private readonly options: McoPoolOptions = {},
  ) {}

  async get(cls: VirtualServerClass): Promise<McoHandle> {
    const m = cls.spec.mcollective;
    const keys = await this.config.secret(m.keysSecret, "MCollective keys", [
      "client-private.pem",
      "server-public.pem",
    ]);
    const creds = m.credentialsSecret
      ? await this.config.secret(m.credentialsSecret, "MCollective broker credentials", [
          "username",
          "password",
        ])
      : undefined;
    const settings = {
      url: m.brokerURL,
      username: creds?.username,
      password: creds?.password,
      caBundle: m.caBundle,
      collective: m.collective ?? "mcollective",
      clientPrivateKeyPem: keys["client-private.pem"]!,
      clientCertName: m.clientCertName ?? "vsop",
      serverPublicKeyPem: keys["server-public.pem"]!,
    };
    // The broker connection outlives the reconcile that first asks for it.
    return this.pool.get(cls.metadata.name, settings, () =>
      outsideReconcile(() => {
        const mco = new McoClient({
          ...settings,
          logger: this.logger,
          onRequest: this.onRequest,
          onDrop: this.options.onDrop,
          maxReplyBytes: this.options.maxReplyBytes,
        });
        return { mco, puppet: new PuppetClient(mco, { timeoutMs: 10_000 }) };
      }),
    );
  }

  stop(): Promise<void> {
    return this.pool.stop();
  }
}
