// The site's network rule, checked on every cloud-init network config before it leaves vsop:
// servers have no default route (no gateway, no 0.0.0.0/0 or ::/0 route, no DHCP that could
// install one). A class's custom template cannot get around it.
import { load } from "js-yaml";

export class NetworkConfigError extends Error {
  override name = "NetworkConfigError";
  constructor(readonly problems: string[]) {
    super(`network config is not allowed: ${problems.join("; ")}`);
  }
}

const V2_SECTIONS = ["ethernets", "bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs"];

type Dict = Record<string, unknown>;
const isDict = (v: unknown): v is Dict => v !== null && typeof v === "object" && !Array.isArray(v);

/** Throws NetworkConfigError listing every way the config would install a default route. */
export function assertNoDefaultRoute(networkConfigYaml: string): void {
  let doc: unknown;
  try {
    doc = load(networkConfigYaml);
  } catch (err) {
    throw new NetworkConfigError([`not valid YAML: ${(err as Error).message.split("\n")[0]}`]);
  }
  // Both the bare form and the `network:` wrapper are in use.
  if (isDict(doc) && isDict(doc.network) && !("version" in doc)) doc = doc.network;
  if (!isDict(doc)) throw new NetworkConfigError(["not a mapping"]);
  const problems: string[] = [];
  if (doc.version === 2) checkV2(doc, problems);
  else if (doc.version === 1) checkV1(doc, problems);
  else problems.push(`unsupported version ${JSON.stringify(doc.version)}`);
  if (problems.length) throw new NetworkConfigError(problems);
}

/** `default`, 0.0.0.0/0, ::/0, or a bare 0.0.0.0 / :: with no or a zero prefix or netmask. */
function isDefaultRoute(to: unknown, prefix?: unknown, netmask?: unknown): boolean {
  if (typeof to !== "string") return false;
  const t = to.trim().toLowerCase();
  if (t === "default" || t === "0.0.0.0/0" || t === "::/0") return true;
  if (t !== "0.0.0.0" && t !== "::") return false;
  if (prefix !== undefined) return Number(prefix) === 0;
  return netmask === undefined || netmask === "0.0.0.0";
}

function checkV2(doc: Dict, problems: string[]): void {
  if (doc.routes !== undefined) checkRoutesV2("routes", doc.routes, problems);
  for (const section of V2_SECTIONS) {
    const devices = doc[section];
    if (devices === undefined) continue;
    if (!isDict(devices)) {
      problems.push(`${section} is not a mapping`);
      continue;
    }
    for (const [id, dev] of Object.entries(devices)) {
      if (!isDict(dev)) continue;
      const at = `${section}.${id}`;
      for (const gw of ["gateway4", "gateway6"])
        if (dev[gw] !== undefined) problems.push(`${at} sets ${gw}`);
      if (dev.routes !== undefined) checkRoutesV2(`${at}.routes`, dev.routes, problems);
      for (const dhcp of ["dhcp4", "dhcp6"]) {
        if (!truthyYaml(dev[dhcp])) continue;
        const overrides = dev[`${dhcp}-overrides`];
        if (!(isDict(overrides) && overrides["use-routes"] === false))
          problems.push(`${at} enables ${dhcp} without ${dhcp}-overrides.use-routes: false`);
      }
    }
  }
}

function checkRoutesV2(at: string, routes: unknown, problems: string[]): void {
  if (!Array.isArray(routes)) {
    problems.push(`${at} is not a list`);
    return;
  }
  routes.forEach((r, i) => {
    if (isDict(r) && isDefaultRoute(r.to)) problems.push(`${at}[${i}] is a default route`);
  });
}

function checkV1(doc: Dict, problems: string[]): void {
  const config = doc.config;
  if (!Array.isArray(config)) {
    problems.push("config is not a list");
    return;
  }
  config.forEach((item, i) => {
    if (!isDict(item)) return;
    const at = `config[${i}]${typeof item.name === "string" ? ` (${item.name})` : ""}`;
    if (
      item.type === "route" &&
      isDefaultRoute(item.destination ?? item.network, item.prefix, item.netmask)
    )
      problems.push(`${at} is a default route`);
    const subnets = Array.isArray(item.subnets) ? item.subnets : [];
    subnets.forEach((s: unknown, j) => {
      if (!isDict(s)) return;
      if (s.gateway !== undefined) problems.push(`${at}.subnets[${j}] sets a gateway`);
      if (typeof s.type === "string" && s.type.startsWith("dhcp"))
        problems.push(`${at}.subnets[${j}] uses ${s.type}`);
      const routes = Array.isArray(s.routes) ? s.routes : [];
      routes.forEach((r: unknown, k) => {
        if (isDict(r) && isDefaultRoute(r.destination ?? r.network, r.prefix, r.netmask))
          problems.push(`${at}.subnets[${j}].routes[${k}] is a default route`);
      });
    });
  });
}

function truthyYaml(v: unknown): boolean {
  return v === true || v === "yes" || v === "true" || v === "on";
}
