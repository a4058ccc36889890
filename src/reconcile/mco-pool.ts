// One MCollective client per broker connection that classes use; a class whose broker settings or
// keys change gets a new client and the old one closes.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { VirtualServerClass } from "../api/types.js";
import { McoClient } from "../mcollective/client.js";
import { PuppetClient } from "../mcollective/puppet.js";
import type { ConfigReader } from "./secrets.js";

export interface McoHandle {
  mco: McoClient;
  puppet: PuppetClient;
}

export class McoPool {
  private readonly clients = new Map<string, { fingerprint: string; handle: McoHandle }>();

  constructor(
    private readonly config: ConfigReader,
    private readonly logger: Logger,
    private readonly onRequest?: (agent: string, action: string, outcome: string) => void,
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
    const fingerprint = createHash("sha256").update(JSON.stringify(settings)).digest("hex");
    const key = `${m.brokerURL}|${settings.collective}`;
    const existing = this.clients.get(key);
    if (existing?.fingerprint === fingerprint) return existing.handle;
    if (existing) void existing.handle.mco.close();
    const mco = new McoClient({ ...settings, logger: this.logger, onRequest: this.onRequest });
    const handle = { mco, puppet: new PuppetClient(mco, { timeoutMs: 10_000 }) };
    this.clients.set(key, { fingerprint, handle });
    return handle;
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.clients.values()].map(({ handle }) => handle.mco.close().catch(() => undefined)),
    );
    this.clients.clear();
  }
}
