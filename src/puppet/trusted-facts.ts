// Puppet trusted facts from the hostname: the server's CSR asks for them as extension requests
// (csr_attributes.yaml), the CA copies them into its certificate, and the master classifies by
// $trusted['extensions'] (roles and profiles, no external node classifier). vsop decides what a
// server may ask for, and its autosign answer refuses a CSR that asks for anything else.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Puppet's registered extension short names (puppet/ssl/oids.rb, ppRegCertExt). */
const REGISTERED = [
  "pp_uuid",
  "pp_instance_id",
  "pp_image_name",
  "pp_preshared_key",
  "pp_cost_center",
  "pp_product",
  "pp_project",
  "pp_application",
  "pp_service",
  "pp_employee",
  "pp_created_by",
  "pp_environment",
  "pp_role",
  "pp_software_version",
  "pp_department",
  "pp_cluster",
  "pp_provisioner",
  "pp_region",
  "pp_datacenter",
  "pp_zone",
  "pp_network",
  "pp_securitypolicy",
  "pp_cloudplatform",
  "pp_apptier",
  "pp_hostname",
  "pp_owner",
];
const REGISTERED_OIDS = new Map(REGISTERED.map((n, i) => [n, `1.3.6.1.4.1.34380.1.1.${i + 1}`]));

/** Puppet's arc for site-defined extensions (ppPrivCertExt). */
export const PRIVATE_ARC = "1.3.6.1.4.1.34380.1.2";
/**
 * Puppet registers no short name for an instance number; vsop puts it in the private arc and the
 * master maps it to `pp_instance` (custom_trusted_oid_mapping.yaml, see hack/puppet/).
 */
export const PP_INSTANCE_OID = `${PRIVATE_ARC}.1.1`;

/** The trusted facts vsop takes from the hostname; a class cannot set these. */
export const NAME_FACTS = ["pp_role", "pp_environment", "pp_instance"] as const;

const PRIVATE_OID = /^1\.3\.6\.1\.4\.1\.34380\.1\.2(\.\d{1,9}){1,6}$/;
const VALUE = /^[\x20-\x7e]{1,128}$/;

/** The OID of a trusted fact name as the class or vsop writes it; undefined when not allowed. */
export function factOid(name: string): string | undefined {
  if (name === "pp_instance") return PP_INSTANCE_OID;
  if (REGISTERED_OIDS.has(name)) return REGISTERED_OIDS.get(name);
  return PRIVATE_OID.test(name) ? name : undefined;
}

/** Why a class's extra trusted fact cannot be used, or undefined when it can. */
export function checkExtraFact(name: string, value: string): string | undefined {
  if ((NAME_FACTS as readonly string[]).includes(name))
    return `is taken from the hostname and cannot be set by the class`;
  if (!factOid(name))
    return `is neither a Puppet registered extension name (pp_role, pp_datacenter, ...) nor an OID under ${PRIVATE_ARC}`;
  if (!VALUE.test(value)) return `must be 1 to 128 printable ASCII characters`;
  return undefined;
}

/** The trusted facts a server asks for: its name's parts, plus the class's extras. */
export function trustedFacts(
  parts: { apptype: string; environment: string; instance: string },
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    pp_role: parts.apptype,
    pp_environment: parts.environment,
    pp_instance: parts.instance,
    ...extra,
  };
}

/** The same facts by OID, as a CSR carries them. */
export function factsByOid(facts: Record<string, string>): Map<string, string> {
  return new Map(Object.entries(facts).map(([name, value]) => [factOid(name) ?? name, value]));
}

/**
 * csr_attributes.yaml: the one-time challenge as the challengePassword attribute and the trusted
 * facts as extension requests (registered names as Puppet knows them, the others by OID, so the
 * agent needs no mapping file). Values are double-quoted; they are checked printable ASCII.
 */
export function csrAttributesYaml(challenge: string, facts: Record<string, string>): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [
    "---",
    "# Written by vsop: a one-time challenge for the Puppet CA's autosign, and trusted facts.",
    "custom_attributes:",
    `  "1.2.840.113549.1.9.7": ${q(challenge)}`,
    "extension_requests:",
    ...Object.entries(facts).map(([name, value]) => {
      const key = REGISTERED_OIDS.has(name) ? name : (factOid(name) ?? name);
      return `  ${q(key)}: ${q(value)}`;
    }),
  ];
  return `${lines.join("\n")}\n`;
}

/** A one-time challenge: 256 random bits as hex (a CSR carries it as a PrintableString). */
export function newChallenge(): string {
  return randomBytes(32).toString("hex");
}

/** What vsop keeps of a challenge: its SHA-256, hex. */
export function hashChallenge(challenge: string): string {
  return createHash("sha256").update(challenge, "utf8").digest("hex");
}

/** Whether `challenge` is the one whose hash is `hash` (constant time). */
export function challengeMatches(challenge: string, hash: string): boolean {
  const a = Buffer.from(hashChallenge(challenge), "hex");
  const b = Buffer.from(hash, "hex");
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}
