// One VCenter client (session + VM cache) per distinct vCenter connection that classes use.
// A class whose credentials change gets a new client; the old one logs out.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { VirtualServerClass } from "../api/types.js";
import { VCenter } from "../vsphere/vcenter.js";
import type { ConfigReader } from "./secrets.js";

export class VCenterPool {
  private readonly clients = new Map<string, { fingerprint: string; vc: VCenter }>();

  constructor(
    private readonly config: ConfigReader,
    private readonly logger: Logger,
    private readonly onCall?: (method: string) => void,
  ) {}

  async get(cls: VirtualServerClass): Promise<VCenter> {
    const v = cls.spec.vcenter;
    const creds = await this.config.secret(v.credentialsSecret, "vCenter credentials", [
      "username",
      "password",
    ]);
    const fingerprint = createHash("sha256")
      .update(
        JSON.stringify([
          v.url,
          v.caBundle ?? "",
          !!v.insecureSkipVerify,
          creds.username,
          creds.password,
        ]),
      )
      .digest("hex");
    const key = `${v.url}|${creds.username}`;
    const existing = this.clients.get(key);
    if (existing?.fingerprint === fingerprint) return existing.vc;
    if (existing) void existing.vc.stop();
    const vc = new VCenter({
      url: v.url,
      caBundle: v.caBundle,
      insecureSkipVerify: v.insecureSkipVerify,
      username: creds.username,
      password: creds.password,
      logger: this.logger,
      onCall: this.onCall,
    });
    this.clients.set(key, { fingerprint, vc });
    void vc.start().catch(() => undefined); // failures surface through the operations
    return vc;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.clients.values()].map(({ vc }) => vc.stop().catch(() => undefined)));
    this.clients.clear();
  }
}
