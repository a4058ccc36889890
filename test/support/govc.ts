// govc, to check every vSphere outcome independently of vsop's own client.
import { execFileSync } from "node:child_process";
import { stackEnv } from "./env.js";
import { sleepSync } from "./harness.js";

/** `timeoutMs`: the call is killed after that long (a stopped vCenter never answers). */
export function govc(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
): string {
  return execFileSync(stackEnv("VSOP_GOVC"), args, {
    encoding: "utf8",
    // LocalDS_0 unless the stack says otherwise: placement-networks.test.ts adds a datastore
    // (in a datastore cluster) that vcsim cannot remove, and govc's default must stay one.
    env: { GOVC_DATASTORE: "LocalDS_0", ...process.env, ...env },
    timeout: timeoutMs,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

export interface GovcDevice {
  key: number;
  deviceInfo?: { label: string; summary: string };
  macAddress?: string;
  connectable?: { connected: boolean; startConnected: boolean };
  backing?: { fileName?: string; port?: { portgroupKey: string } };
}

export interface GovcVM {
  self: { value: string };
  name: string;
  config: {
    instanceUuid: string;
    hardware: { numCPU: number; memoryMB: number; device: GovcDevice[] };
    extraConfig?: { key: string; value: string }[];
  };
  runtime: { powerState: string };
}

/** vCenter's ManagedObjectNotFound, as govc prints it. */
const OBJECT_GONE = /has already been deleted or has not been completely created/;

/**
 * The VMs with this name, anywhere in the inventory (of another vCenter with `env`'s GOVC_*).
 * The search walks every folder, and another test file running beside this one may delete a
 * folder mid-walk (vsphere.test.ts does): that walk is tried again, a few times.
 */
export function findVMs(name: string, env: Record<string, string> = {}): GovcVM[] {
  let out = "";
  for (let attempt = 1; ; attempt++) {
    try {
      out = govc(["vm.info", "-json", "-e", "-r", name], env);
      break;
    } catch (err) {
      const stdout = (err as { stdout?: string }).stdout ?? "";
      if (attempt >= 5 || !OBJECT_GONE.test(`${stdout}${(err as Error).message}`)) throw err;
      sleepSync(200 * attempt);
    }
  }
  const parsed = JSON.parse(out) as { virtualMachines?: GovcVM[] | null };
  return (parsed.virtualMachines ?? []).filter((v) => v.name === name);
}

/** Powers off and destroys every VM of these names: what an interrupted run left behind. */
export function destroyVMs(names: Iterable<string>, env: Record<string, string> = {}): void {
  for (const name of names)
    for (const vm of findVMs(name, env)) {
      if (vm.runtime.powerState !== "poweredOff") govc(["vm.power", "-off", "-force", name], env);
      govc(["vm.destroy", name], env);
    }
}

export function extraConfig(vm: GovcVM): Record<string, string> {
  return Object.fromEntries((vm.config.extraConfig ?? []).map((o) => [o.key, o.value]));
}

export function nics(vm: GovcVM): GovcDevice[] {
  return vm.config.hardware.device.filter((d) => d.macAddress !== undefined);
}

/** Port group names by their keys (dvportgroup-N → VLAN-30). */
export function portGroupNames(): Record<string, string> {
  const out = govc(["ls", "-json", "-l", "/DC0/network"]);
  const parsed = JSON.parse(out) as {
    elements?: { Path: string; Object: { self: { value: string } } }[];
  };
  return Object.fromEntries(
    (parsed.elements ?? []).map((e) => [e.Object.self.value, e.Path.split("/").pop()!]),
  );
}
