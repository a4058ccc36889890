// Secrets and ConfigMaps that classes name, read from the operator's namespace and remembered
// briefly so a burst of reconciles does not become a burst of GETs.
import { isNotFound, type Kube } from "../../controller/kube.js";
import { StepError } from "../../errors.js";

interface Entry {
  at: number;
  data: Record<string, string>;
}

export class ConfigReader {
  private readonly cache = new Map<string, Entry>();

  constructor(
    private readonly kube: Kube,
    readonly namespace: string,
    private readonly ttlMs = 10_000,
  ) {}

  /** A Secret's data, decoded. `purpose` names it in the error, e.g. "vCenter credentials". */
  secret(name: string, purpose: string, keys: string[] = []): Promise<Record<string, string>> {
    return this.read("secrets", name, purpose, keys, (obj) =>
      Object.fromEntries(
        Object.entries((obj.data ?? {}) as Record<string, string>).map(([k, v]) => [
          k,
          Buffer.from(v, "base64").toString("utf8"),
        ]),
      ),
    );
  }

  configMap(name: string, purpose: string): Promise<Record<string, string>> {
    return this.read(
      "configmaps",
      name,
      purpose,
      [],
      (obj) => (obj.data ?? {}) as Record<string, string>,
    );
  }

  private async read(
    kind: "secrets" | "configmaps",
    name: string,
    purpose: string,
    keys: string[],
    decode: (obj: { data?: unknown }) => Record<string, string>,
  ): Promise<Record<string, string>> {
    const id = `${kind}/${name}`;
    const hit = this.cache.get(id);
    let data = hit && Date.now() - hit.at < this.ttlMs ? hit.data : undefined;
    if (!data) {
      try {
        data = decode(await this.kube.get(`/api/v1/namespaces/${this.namespace}/${kind}/${name}`));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        throw new StepError(
          kind === "secrets" ? "SecretNotFound" : "ConfigMapNotFound",
          `The ${purpose} ${kind === "secrets" ? "Secret" : "ConfigMap"} ${this.namespace}/${name} ` +
            "does not exist; create it or fix the class.",
        );
      }
      this.cache.set(id, { at: Date.now(), data });
    }
    const missing = keys.filter((k) => !data![k]);
    if (missing.length) {
      throw new StepError(
        "SecretKeyMissing",
        `The ${purpose} Secret ${this.namespace}/${name} lacks ${missing.join(", ")}; add ${
          missing.length > 1 ? "them" : "it"
        }.`,
      );
    }
    return data;
  }
}
