// spec.extraNetworks on the VM (called by the vm step): which NIC is which, and the NICs still
// missing added by one reconfiguration. vsop tells NICs apart by port group and device order: the
// boot NIC is on the Boot-VLAN, the server's own NIC is the first on its VLAN's port group, and
// each extra network takes the next NIC on its port group, in spec order. A NIC no longer listed
// is left on the VM (reported as service): removing a NIC under a running guest is the guest's
// owner's call.
import type { NicStatus } from "../../api/types.js";
import type { ExtraNetwork } from "../../naming/extra-networks.js";
import type { NicRecord, VMRecord } from "../../vsphere/vcenter.js";
import type { ReconcileContext, StepOutcome } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { portGroupError } from "../engine/vsphere-errors.js";
import { startTask } from "../engine/vsphere-task.js";

export interface NicRoles {
  /** Every NIC of the VM, in device order, with its role. */
  status: NicStatus[];
  /** Extra networks without a NIC yet, in spec order. */
  missing: ExtraNetwork[];
}

export function nicRoles(
  nics: NicRecord[],
  net: { servicePortGroup?: string; bootPortGroup: string },
  extras: ExtraNetwork[],
): NicRoles {
  const status: (NicStatus | undefined)[] = nics.map(() => undefined);
  const base = (n: NicRecord) => ({
    portGroup: n.portGroup,
    macAddress: n.macAddress,
    connected: n.connected,
  });
  const take = (portGroup: string | undefined) =>
    nics.findIndex((n, i) => !status[i] && n.portGroup === portGroup);
  nics.forEach((n, i) => {
    if (n.portGroup === net.bootPortGroup) status[i] = { role: "boot", ...base(n) };
  });
  const own = take(net.servicePortGroup);
  if (own >= 0) status[own] = { role: "service", ...base(nics[own]!) };
  const missing: ExtraNetwork[] = [];
  for (const e of extras) {
    const i = take(e.portGroup);
    if (i < 0) missing.push(e);
    else
      status[i] = {
        role: "extra",
        hostname: e.hostname,
        address: e.address,
        vlan: e.vlan,
        ...base(nics[i]!),
      };
  }
  return {
    status: status.map((s, i) => s ?? { role: "service", ...base(nics[i]!) }),
    missing,
  };
}

/**
 * Adds the extra networks' NICs the VM lacks (the started task's wait), after checking each one's
 * port group exists (VLANPortGroupMissing, nothing added). Not while an install runs: the
 * installer configures the NICs it found at boot.
 */
export async function reconcileExtraNics(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  bootPortGroup: string,
): Promise<StepOutcome | undefined> {
  const extras = ctx.extraNetworks ?? [];
  if (!extras.length) return undefined;
  const install = ctx.status.install;
  if (install?.startedAt && !install.completedAt) return undefined;
  const { missing } = nicRoles(
    vm.nics,
    { servicePortGroup: ctx.resolved?.portGroup, bootPortGroup },
    extras,
  );
  if (!missing.length) return undefined;
  const dc = ctx.cls.spec.placement.datacenter;
  await checkExtraPortGroups(vc, dc, missing);
  const names = missing.map((m) => `${m.hostname} (${m.portGroup})`).join(", ");
  if (ctx.finished !== "AddNICs")
    ctx.log.info({ vm: vm.name, extraNetworks: names }, "adding extra network NICs");
  return startTask(
    ctx,
    vc,
    "AddNICs",
    () =>
      vc.startAddNics(
        vm.moRef,
        dc,
        missing.map((m) => m.portGroup),
      ),
    `Adding NICs for the extra networks ${names} to VM ${vm.name}.`,
  );
}

/** Throws VLANPortGroupMissing naming the first extra network whose port group does not exist. */
export async function checkExtraPortGroups(
  vc: Pick<VSpherePort, "checkPortGroup">,
  datacenter: string,
  extras: ExtraNetwork[],
): Promise<void> {
  for (const e of extras)
    await vc.checkPortGroup(datacenter, e.portGroup).catch((err: unknown) => {
      throw portGroupError(err, false, e.portGroup, e.vlan, `extra network ${e.hostname}`);
    });
}
