// One VCenter client (session + VM cache) per distinct vCenter connection that classes use.
import type { Logger } from "pino";
import type { VirtualServerClass } from "../../api/types.js";
import { outsideReconcile } from "../../abort.js";
import { VCenter, type VCenterOptions } from "../../vsphere/vcenter.js";
import { ClientPool } from "./client-pool.js";
import type { ConfigReader } from "./secrets.js";

export class VCenterPool {
  private readonly pool = new ClientPool<VCenter>((vc) => vc.stop());

  constructor(
    private readonly config: ConfigReader,
    private readonly logger: Logger,
    private readonly onCall?: (method: string) => void,
    /** Wakes an owner key ("namespace/name") when its VM changed or its task ended. */
    private readonly wake?: (key: string) => void,
  ) {}

  async get(cls: VirtualServerClass): Promise<VCenter> {
    const v = cls.spec.vcenter;
    const creds = await this.config.secret(v.credentialsSecret, "vCenter credentials", [
      "username",
      "password",
    ]);
    const settings = {
      url: v.url,
      caBundle: v.caBundle,
      insecureSkipVerify: v.insecureSkipVerify,
      username: creds.username!,
      password: creds.password!,
    };
    // The client's update loop outlives the reconcile that first asks for it.
    return this.pool.get(cls.metadata.name, settings, () =>
      outsideReconcile(() => this.create(settings)),
    );
  }

  private create(settings: Omit<VCenterOptions, "logger">): VCenter {
    const vc = new VCenter({
      ...settings,
      logger: this.logger,
      onCall: this.onCall,
      wake: this.wake,
    });
    void vc.start().catch(() => undefined); // failures surface through the operations
    return vc;
  }

  stop(): Promise<void> {
    return this.pool.stop();
  }
}
