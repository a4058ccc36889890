// Long-lived clients (vCenter sessions, broker connections) shared by the classes that use the
// same connection settings. A class whose settings change (e.g. its Secret got a new password)
// moves to another client; a client no class uses any more is closed. Two classes that differ
// only in a password get a client each instead of replacing each other's on every reconcile.
import { createHash } from "node:crypto";

export class ClientPool<C> {
  /** Clients by settings fingerprint, with the classes that use each. */
  private readonly clients = new Map<string, { client: C; classes: Set<string> }>();
  /** Each class's current fingerprint. */
  private readonly classes = new Map<string, string>();

  constructor(private readonly close: (client: C) => Promise<void>) {}

  /** The client for these settings, made by `create` the first time they are seen. */
  get(className: string, settings: unknown, create: () => C): C {
    const fingerprint = createHash("sha256").update(JSON.stringify(settings)).digest("hex");
    const previous = this.classes.get(className);
    if (previous !== fingerprint) {
      this.classes.set(className, fingerprint);
      const old = previous === undefined ? undefined : this.clients.get(previous);
      old?.classes.delete(className);
      if (old && old.classes.size === 0) {
        this.clients.delete(previous!);
        void this.close(old.client).catch(() => undefined);
      }
    }
    const existing = this.clients.get(fingerprint);
    if (existing) {
      existing.classes.add(className);
      return existing.client;
    }
    const client = create();
    this.clients.set(fingerprint, { client, classes: new Set([className]) });
    return client;
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.clients.values()].map(({ client }) => this.close(client).catch(() => undefined)),
    );
    this.clients.clear();
    this.classes.clear();
  }
}
