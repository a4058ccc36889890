// Test objects: a VirtualServerClass pointing at the stack's vcsim, DNS and broker, and servers.
import { readFileSync } from "node:fs";
import { stackEnv } from "./env.js";
import { apply, OPERATOR_NS } from "./harness.js";

export const VC_SECRET = "vcsim-credentials";

export const MCO_KEYS_SECRET = "mco-keys";
export const MCO_BROKER_SECRET = "mco-broker";

/** The stack's MCollective key pairs and broker login, as a datacenter team would store them. */
export function mcollectiveSecrets() {
  const dir = stackEnv("VSOP_MCO_DIR");
  const read = (f: string) => readFileSync(`${dir}/${f}`, "utf8");
  const url = new URL(stackEnv("VSOP_AMQP_URL"));
  return [
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: MCO_KEYS_SECRET, namespace: OPERATOR_NS },
      stringData: {
        "server-private.pem": read("server-private.pem"),
        "server-public.pem": read("server-public.pem"),
        "client-private.pem": read("vsop-private.pem"),
        "client-public.pem": read("clients/vsop.pem"),
      },
    },
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: MCO_BROKER_SECRET, namespace: OPERATOR_NS },
      stringData: {
        username: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
      },
    },
  ];
}

/** The vCenter credentials Secret; another name (and password) for a class of its own. */
export function vcenterSecret(password = stackEnv("GOVC_PASSWORD"), name = VC_SECRET) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: OPERATOR_NS },
    stringData: { username: stackEnv("GOVC_USERNAME"), password },
  };
}

export function classSpec(overrides: Record<string, unknown> = {}) {
  const base: Record<string, Record<string, unknown>> = {
    vcenter: {
      url: stackEnv("GOVC_URL"),
      credentialsSecret: VC_SECRET,
      caBundle: readFileSync(stackEnv("GOVC_TLS_CA_CERTS"), "utf8"),
    },
    placement: { datacenter: "DC0", cluster: "DC0_C0", datastore: "LocalDS_0" },
    naming: { dnsServers: [stackEnv("VSOP_DNS_SERVER")] },
    boot: { method: "network", installTimeout: "10m" },
    // The broker over TLS (hack/broker-tls.sh), verified against the stack's broker CA.
    mcollective: {
      brokerURL: `amqps://${new URL(stackEnv("VSOP_AMQPS_URL")).host}/`,
      caBundle: readFileSync(stackEnv("VSOP_BROKER_CA"), "utf8"),
      credentialsSecret: MCO_BROKER_SECRET,
      keysSecret: MCO_KEYS_SECRET,
      stompPort: Number(stackEnv("VSOP_STOMP_TLS_PORT")),
    },
  };
  for (const [k, v] of Object.entries(overrides))
    base[k] = { ...(base[k] ?? {}), ...(v as object) };
  return base;
}

export function virtualServerClass(name: string, overrides: Record<string, unknown> = {}) {
  return {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServerClass",
    metadata: { name },
    spec: classSpec(overrides),
  };
}

export function virtualServer(
  ns: string,
  name: string,
  hostname: string,
  className: string,
  labels: Record<string, string> = {},
  spec: Record<string, unknown> = {},
) {
  return {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: { name, namespace: ns, labels },
    spec: { hostname, className, ...spec },
  };
}

export function applyClass(name: string, overrides: Record<string, unknown> = {}): void {
  apply(vcenterSecret(), ...mcollectiveSecrets(), virtualServerClass(name, overrides));
}
