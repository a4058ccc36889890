// The schema rows of the bad-input matrix (test/e2e/bad-input.test.ts): objects the API server
// must refuse on `kubectl apply --dry-run=server`, each with the refusal it must give. Every
// object is a good one with one thing wrong, so the row tests that one rule and nothing else.
import { virtualServer, virtualServerClass } from "./fixtures.js";

export interface SchemaRow {
  name: string;
  kind: "virtualserver" | "virtualserverclass";
  /** metadata.name of the object (in the test's namespace for a VirtualServer). */
  objectName: string;
  object: (ns: string) => object;
  refused: RegExp;
}

type Spec = Record<string, unknown>;
/** A valid object name from a row's name: "cpus above 128" → cpus-above-128. */
const slug = (name: string) =>
  name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");
const GOOD_HOST = "bdin-prod-1.example.test";

/** A good VirtualServer, then `edit` applied to its spec. */
function server(name: string, edit: (spec: Spec) => void, refused: RegExp): SchemaRow {
  const objectName = `schema-${slug(name)}`;
  return {
    name,
    kind: "virtualserver",
    objectName,
    object: (ns) => {
      const vs = virtualServer(ns, objectName, GOOD_HOST, "bad-input-net") as { spec: Spec };
      edit(vs.spec);
      return vs;
    },
    refused,
  };
}

/** A good VirtualServerClass (the tests' own), then `edit` applied to its spec. */
function klass(name: string, edit: (spec: Record<string, Spec>) => void, refused: RegExp) {
  const objectName = `bad-input-schema-${slug(name)}`;
  return {
    name: `class ${name}`,
    kind: "virtualserverclass" as const,
    objectName,
    object: () => {
      const cls = virtualServerClass(objectName) as { spec: Record<string, Spec> };
      edit(cls.spec);
      return cls;
    },
    refused,
  };
}

const FQDN = /spec\.hostname.*must be a lowercase fully qualified domain name/;

export const SCHEMA_ROWS: SchemaRow[] = [
  server("hostname of one label", (s) => (s.hostname = "bdin-prod-1"), FQDN),
  server("hostname with a trailing dot", (s) => (s.hostname = `${GOOD_HOST}.`), FQDN),
  server("hostname with a leading hyphen", (s) => (s.hostname = `-${GOOD_HOST}`), FQDN),
  server("hostname with a space", (s) => (s.hostname = "bdin prod-1.example.test"), FQDN),
  server("missing hostname", (s) => delete s.hostname, /spec\.hostname: Required value/),
  server("empty className", (s) => (s.className = ""), /spec\.className.*at least 1 chars/),
  server("cpus above 128", (s) => (s.cpus = 129), /spec\.cpus.*less than or equal to 128/),
  server(
    "cpus as a string",
    (s) => (s.cpus = "two"),
    /spec\.cpus.*must be of type integer|spec\.cpus: Invalid value: "string"/,
  ),
  server(
    "negative memoryMiB",
    (s) => (s.memoryMiB = -1024),
    /spec\.memoryMiB.*greater than or equal to 256/,
  ),
  server("negative diskGiB", (s) => (s.diskGiB = -20), /spec\.diskGiB.*greater than or equal to 1/),
  server("zero diskGiB", (s) => (s.diskGiB = 0), /spec\.diskGiB.*greater than or equal to 1/),
  server(
    "unknown powerState",
    (s) => (s.powerState = "Maybe"),
    /spec\.powerState.*Unsupported value: "Maybe"/,
  ),
  server(
    "unknown powerOffMode",
    (s) => (s.powerOffMode = "Gentle"),
    /spec\.powerOffMode.*Unsupported value: "Gentle"/,
  ),
  server(
    "restartRequestedAt not a time",
    (s) => (s.restartRequestedAt = "yesterday"),
    /spec\.restartRequestedAt.*date-time/,
  ),
  server(
    "puppet.tags not a list",
    (s) => (s.puppet = { tags: "ntp" }),
    /spec\.puppet\.tags.*must be of type array|spec\.puppet\.tags: Invalid value: "string"/,
  ),
  server(
    "puppet.environment the agent would refuse",
    (s) => (s.puppet = { environment: "Prod-EU" }),
    /spec\.puppet\.environment.*should match '\^\[a-z0-9_\]\+\$'/,
  ),
  server(
    "puppet tag with a shell character",
    (s) => (s.puppet = { tags: ["ntp", "ssh;reboot"] }),
    /spec\.puppet\.tags\[1\].*should match/,
  ),
  server(
    "puppet tags longer than runonce takes",
    (s) => (s.puppet = { tags: Array.from({ length: 20 }, (_, i) => `profile_${i}`) }),
    /spec\.puppet\.tags.*at most 120 characters/,
  ),
  server(
    "unknown field (a typo of cpus)",
    (s) => (s.cpu = 4),
    /unknown field "spec\.cpu"|spec\.cpu: field not declared in schema/,
  ),
  klass(
    "vcenter.url over http",
    (s) => (s.vcenter!.url = "http://vcenter.example.test/sdk"),
    /spec\.vcenter\.url.*should match '\^https:\/\/'/,
  ),
  klass(
    "brokerURL not AMQP",
    (s) => (s.mcollective!.brokerURL = "stomp://broker.example.test:61613"),
    /spec\.mcollective\.brokerURL.*should match/,
  ),
  klass(
    "installTimeout in words",
    (s) => (s.boot = { ...s.boot, installTimeout: "10 minutes" }),
    /spec\.boot\.installTimeout.*should match/,
  ),
  klass(
    "negative shutdownTimeout",
    (s) => (s.hardware = { shutdownTimeout: "-5m" }),
    /spec\.hardware\.shutdownTimeout.*should match/,
  ),
  klass(
    "puppet.interval in days",
    (s) => (s.puppet = { interval: "1d" }),
    /spec\.puppet\.interval.*should match/,
  ),
  klass(
    "puppet.environment with a hyphen",
    (s) => (s.puppet = { environment: "prod-eu" }),
    /spec\.puppet\.environment.*should match/,
  ),
  klass(
    "vlanOctet 5",
    (s) => (s.network = { vlanOctet: 5 }),
    /spec\.network\.vlanOctet.*less than or equal to 4/,
  ),
  klass(
    "vlanCIDRs VLAN 4095",
    (s) => (s.network = { vlanCIDRs: [{ cidr: "10.20.0.0/16", vlan: 4095 }] }),
    /spec\.network\.vlanCIDRs\[0\]\.vlan.*less than or equal to 4094/,
  ),
  klass(
    "vlanCIDRs prefix /33",
    (s) => (s.network = { vlanCIDRs: [{ cidr: "10.20.0.0/33", vlan: 200 }] }),
    /spec\.network\.vlanCIDRs\[0\]\.cidr.*should match/,
  ),
  klass(
    "unknown boot method",
    (s) => (s.boot = { method: "pxe" }),
    /spec\.boot\.method.*Unsupported value: "pxe"/,
  ),
  klass(
    "unknown optional service",
    (s) => (s.network = { services: { optional: ["smtp"] } }),
    /spec\.network\.services\.optional\[0\].*Unsupported value: "smtp"/,
  ),
  klass(
    "naming.pattern of 513 characters",
    (s) => (s.naming = { ...s.naming, pattern: `^${"a".repeat(511)}$` }),
    /spec\.naming\.pattern.*(Too long|may not be (more|longer) than 512)/,
  ),
  klass(
    "placement without a datastore",
    (s) => delete s.placement!.datastore,
    /spec\.placement: Invalid value: (?:"object": )?set exactly one of placement\.datastore and placement\.datastoreCluster/,
  ),
];
