// Steps 3-5: hand the VM to its installer (network: a kickstart token; iso: a per-server NoCloud
// ISO on a CD-ROM; guestinfo: cloud-init data in extraConfig) and power it on; wait until it is
// installed; then take the install path away (boot NIC disconnected, ISO detached and deleted,
// guestinfo cleared). Waiting is a requeue, never a blocked worker.
import { bootMethod, effectiveNetwork, vmName } from "../api/defaults.js";
import { parseDuration } from "../cli/run-flags.js";
import { StepError } from "../errors.js";
import { GUESTINFO_KEYS, guestinfoExtraConfig } from "../provision/guestinfo.js";
import { buildIso } from "../provision/iso.js";
import { datastorePath, type VCenter, type VMRecord } from "../vsphere/vcenter.js";
import { condition, DONE, wait, type ReconcileContext, type Step } from "./context.js";
import { noCloudFiles, type CloudInitFiles } from "../provision/render.js";
import { bootstrapFor, cloudInitFor, kickstartFor, type InstallURLs } from "./install-config.js";
import type { InstallToken, InstallTokens } from "./install-tokens.js";
import type { ConfigReader } from "./secrets.js";
import type { VCenterPool } from "./vcenters.js";
import { connectedVCenter, ownedVM, recordVM } from "./vm-step.js";
import { vsphereStepError } from "./vsphere-errors.js";
import { startTask, taskInFlight, type Operation } from "./vsphere-task.js";

export interface InstallDeps {
  pool: VCenterPool;
  tokens: InstallTokens;
  config: ConfigReader;
  /** Base URL installers reach the provisioning server at. */
  provisioningURL: string;
  tmpDir?: string;
  /** Answers whether the server's mcollectived is up (any boot method's "installed" signal). */
  discover?: (ctx: ReconcileContext) => Promise<boolean>;
  /** Called once when Installed turns True, with power-on to installed in seconds (metrics). */
  onInstalled?: (method: string, seconds: number) => void;
}

const isoFile = (ctx: ReconcileContext) =>
  `vsop/${vmName(ctx.vs, ctx.cls.spec)}-${ctx.vs.metadata.uid!.slice(0, 8)}.iso`;

/** Where a server's installer finds its kickstart, its one-time keys and its callback. */
export const installURLs = (base: string, token: string): InstallURLs => ({
  kickstartURL: `${base}/ks/${token}`,
  bootstrapURL: `${base}/bootstrap/${token}`,
  builtURL: `${base}/built/${token}`,
});

async function vmOf(
  deps: InstallDeps,
  ctx: ReconcileContext,
): Promise<{ vc: VCenter; vm: VMRecord } | undefined> {
  const vc = await connectedVCenter(deps.pool, ctx);
  const vm = vc && ownedVM(vc, ctx);
  return vc && vm ? { vc, vm } : undefined;
}

const installed = (ctx: ReconcileContext) => !!ctx.status.install?.completedAt;

/** A placeholder identity key: only to prove the bundle renders; never leaves this process. */
const CHECK_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

async function checkInstallFiles(
  deps: InstallDeps,
  vs: ReconcileContext["vs"],
  ctx: ReconcileContext,
  token: string,
): Promise<void> {
  const urls = installURLs(deps.provisioningURL, token);
  if (bootMethod(ctx.cls.spec) === "network") await kickstartFor(vs, ctx.cls, deps.config, urls);
  await bootstrapFor(vs, ctx.cls, deps.config, CHECK_KEY);
}

/** The server's cloud-init files with its token's URLs, after checking its bundle renders. */
async function tokenedCloudInit(
  deps: InstallDeps,
  vs: ReconcileContext["vs"],
  ctx: ReconcileContext,
): Promise<CloudInitFiles> {
  const token = await deps.tokens.ensure(ctx.vs);
  await checkInstallFiles(deps, vs, ctx, token.token);
  return cloudInitFor(vs, ctx.cls, deps.config, installURLs(deps.provisioningURL, token.token));
}

/** Prepares the install path for the boot method, then powers the VM on once. */
export function prepareStep(deps: InstallDeps): Step {
  return {
    name: "prepare",
    async run(ctx) {
      if (installed(ctx)) return DONE;
      const found = await vmOf(deps, ctx);
      if (!found) return wait(2, "Creating", "Creating", "Waiting for vCenter to report the VM.");
      const { vc, vm } = found;
      const method = bootMethod(ctx.cls.spec);
      const p = ctx.cls.spec.placement;
      // Render from the status this reconcile computed (address, VLAN, services, NIC MACs): on
      // a server's first reconcile the stored status is still empty.
      const vs = { ...ctx.vs, status: ctx.status };
      try {
        if (!ctx.status.install?.startedAt) {
          // A fresh install (also of a VM recreated after the old one vanished) needs an unused
          // token: a token spent on the previous VM would answer 410 to the new installer, and
          // one whose kickstart or keys were fetched would carry the old installer's record.
          const previous = await deps.tokens.get(ctx.vs.metadata.uid!);
          if (
            previous?.state === "built" ||
            previous?.kickstartFetchedAt ||
            previous?.keysFetchedAt
          )
            await deps.tokens.delete(ctx.vs.metadata.uid!);
        }
        if (ctx.cls.spec.boot?.assumeInstalled) {
          // An image that needs no install: nothing to hand over, just start it.
        } else if (method === "network") {
          const token = await deps.tokens.ensure(ctx.vs);
          // The kickstart and key bundle are rendered when the installer asks for them; render
          // them once before power-on too, so a broken template or a missing key Secret is an
          // error here, not a failing install.
          if (!ctx.status.install?.startedAt) await checkInstallFiles(deps, vs, ctx, token.token);
        } else if (method === "iso") {
          const path = datastorePath(p.datastore, isoFile(ctx));
          if (!vm.cdroms.some((c) => c.isoPath === path)) {
            if (ctx.status.install?.iso !== path) {
              // Recorded before the upload, so a delete after any crash knows there is a file.
              ctx.status.install = { ...ctx.status.install, iso: path };
              return wait(0, "Creating", "PoweringOn", "Preparing the boot ISO.");
            }
            const files = await tokenedCloudInit(deps, vs, ctx);
            const iso = await buildIso({
              volumeId: "cidata",
              files: noCloudFiles(files),
              tmpDir: deps.tmpDir,
            });
            await vc.uploadFile(p.datacenter, p.datastore, isoFile(ctx), iso);
            ctx.log.info({ iso: path, bytes: iso.length }, "boot ISO uploaded");
            const attaching = await startTask(
              ctx,
              vc,
              "AttachISO",
              () => vc.startAttachIso(vm.moRef, path),
              `Attaching the boot ISO to VM ${vm.name}.`,
            );
            if (attaching) return attaching;
          }
        } else if (!vm.extraConfig["guestinfo.userdata"]) {
          const files = await tokenedCloudInit(deps, vs, ctx);
          const setting = await startTask(
            ctx,
            vc,
            "SetGuestinfo",
            () => vc.startSetExtraConfig(vm.moRef, guestinfoExtraConfig(files)),
            `Setting the cloud-init data of VM ${vm.name} in guestinfo.`,
          );
          if (setting) return setting;
        }
        // Powered on until it is installed (also again, after someone powered it off).
        if (vm.powerState !== "poweredOn" || !ctx.status.install?.startedAt) {
          const powering = await startTask(
            ctx,
            vc,
            "PowerOn",
            () => vc.startPower(vm.moRef, true),
            `Powering on VM ${vm.name} to install it.`,
          );
          if (!ctx.status.install?.startedAt) {
            ctx.status.install = {
              ...ctx.status.install,
              method,
              startedAt: new Date().toISOString(),
            };
            ctx.log.info({ method }, "VM powered on to install");
          }
          if (powering) return powering;
        }
      } catch (err) {
        throw vsphereStepError(err, { condition: "Installed" });
      }
      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      return DONE;
    },
    async finalize(ctx) {
      await deps.tokens.delete(ctx.vs.metadata.uid!);
      const retain = ctx.vs.spec.deletionPolicy === "Retain";
      const method = bootMethod(ctx.cls.spec);
      const iso = ctx.status.install?.iso;
      if (!iso && !(retain && method === "guestinfo")) return DONE;
      const vc = await connectedVCenter(deps.pool, ctx);
      if (!vc)
        return wait(2, "Deleting", "ConnectingToVCenter", "Connecting to vCenter to clean up.");
      const busy = await taskInFlight(ctx, vc, "Deleting");
      if (busy) return busy;
      const vm = ownedVM(vc, ctx);
      const cleanup = async (
        operation: Operation,
        start: () => Promise<string | undefined>,
        message: string,
      ) => startTask(ctx, vc, operation, start, message, "Deleting");
      // A retained VM keeps no install data: the guestinfo's URLs point at a deleted token,
      // but nobody needs to read them in vCenter's history either.
      if (retain && method === "guestinfo" && vm && GUESTINFO_KEYS.some((k) => vm.extraConfig[k])) {
        const clearing = await cleanup(
          "ClearGuestinfo",
          () =>
            vc.startSetExtraConfig(
              vm.moRef,
              Object.fromEntries(GUESTINFO_KEYS.map((k) => [k, ""])),
            ),
          `Clearing the install data in VM ${vm.name}'s guestinfo.`,
        );
        if (clearing) return clearing;
      }
      if (!iso) return DONE;
      if (ctx.finished === "DeleteISO") {
        ctx.status.install = { ...ctx.status.install, iso: undefined };
        ctx.log.info({ iso }, "boot ISO deleted");
        return DONE;
      }
      // vSphere will not delete an ISO that a VM still holds: take it out of the drive first
      // (powered off, unless the VM stays).
      if (vm?.cdroms.some((c) => c.isoPath === iso)) {
        const off =
          retain || vm.powerState === "poweredOff"
            ? undefined
            : await cleanup(
                "PowerOff",
                () => vc.startPower(vm.moRef, false),
                `Powering off VM ${vm.name} to delete it.`,
              );
        const step =
          off ??
          (await cleanup(
            "DetachISO",
            () => vc.startDetachIso(vm.moRef),
            `Detaching the boot ISO from VM ${vm.name}.`,
          ));
        if (step) return step;
      }
      const p = ctx.cls.spec.placement;
      return (await cleanup(
        "DeleteISO",
        () => vc.startDeleteFile(p.datacenter, p.datastore, isoFile(ctx)),
        `Deleting the boot ISO ${iso}.`,
      ))!;
    },
  };
}

/**
 * Copies what the provisioning endpoint recorded in the install record into status, once each:
 * when the installing system fetched its keys, and its first sign of life (kickstartFetchedAt:
 * the kickstart for network installs; iso and guestinfo carry their install data with the VM, so
 * for them it is the key fetch). The reconciler announces the latter with one Normal Event.
 */
function copyInstallerProgress(ctx: ReconcileContext, token: InstallToken | undefined): void {
  const install = ctx.status.install;
  if (!token || !install?.startedAt) return;
  const first = [token.kickstartFetchedAt, token.keysFetchedAt]
    .filter((t): t is string => !!t)
    .sort()[0];
  if ((first && !install.kickstartFetchedAt) || (token.keysFetchedAt && !install.keysFetchedAt)) {
    ctx.status.install = {
      ...install,
      kickstartFetchedAt: install.kickstartFetchedAt ?? first,
      keysFetchedAt: install.keysFetchedAt ?? token.keysFetchedAt,
    };
  }
}

/** The Ready message while installing: since when, and whether the installer showed up yet. */
function installingMessage(ctx: ReconcileContext): string {
  const i = ctx.status.install ?? {};
  const host = ctx.vs.spec.hostname;
  const what = (i.method ?? bootMethod(ctx.cls.spec)) === "network" ? "kickstart" : "keys";
  if (i.kickstartFetchedAt)
    return `${host} is installing: powered on at ${i.startedAt}, the installer fetched its ${what} at ${i.kickstartFetchedAt}.`;
  return `${host} is installing: powered on at ${i.startedAt}, waiting for the installer to fetch its ${what}.`;
}

/** Installed when the completion callback came, mcollectived answers, or the class says so. */
export function installedStep(deps: InstallDeps): Step {
  return {
    name: "installed",
    async run(ctx) {
      if (!installed(ctx)) {
        let completedAt: string | undefined;
        if (ctx.cls.spec.boot?.assumeInstalled) completedAt = new Date().toISOString();
        else {
          const token = await deps.tokens.get(ctx.vs.metadata.uid!);
          copyInstallerProgress(ctx, token);
          const started = ctx.status.install?.startedAt ?? "";
          if (token?.state === "built" && (token.builtAt ?? "") >= started)
            completedAt = token.builtAt ?? new Date().toISOString();
          else if (await deps.discover?.(ctx).catch(() => false))
            completedAt = new Date().toISOString();
        }
        if (!completedAt) {
          const started = Date.parse(ctx.status.install?.startedAt ?? "") || Date.now();
          const timeout =
            parseDuration(ctx.cls.spec.boot?.installTimeout ?? "1h", "installTimeout") * 1000;
          if (Date.now() - started > timeout) {
            throw new StepError(
              "InstallTimedOut",
              `${ctx.vs.spec.hostname} has not reported an installed system within ` +
                `${ctx.cls.spec.boot?.installTimeout ?? "1h"} of power-on; check its console. vsop keeps watching.`,
              { condition: "Installed", retryAfterSeconds: 30 },
            );
          }
          condition(
            ctx,
            "Installed",
            "False",
            "WaitingForInstall",
            `Waiting for ${ctx.vs.spec.hostname} to finish installing.`,
          );
          return wait(5, "Installing", "Installing", installingMessage(ctx));
        }
        // The install is known: the token is spent however it became known, so /ks,
        // /bootstrap and /built answer 410 from now on.
        const token = await deps.tokens.get(ctx.vs.metadata.uid!);
        if (token?.state === "pending") await deps.tokens.markBuilt(token);
        ctx.status.install = { ...ctx.status.install, completedAt };
        ctx.log.info("server reports installed");
        const startedAt = Date.parse(ctx.status.install.startedAt ?? "");
        if (!Number.isNaN(startedAt))
          deps.onInstalled?.(
            bootMethod(ctx.cls.spec),
            Math.max(0, (Date.parse(completedAt) - startedAt) / 1000),
          );
      }
      condition(
        ctx,
        "Installed",
        "True",
        "Installed",
        `Installed at ${ctx.status.install!.completedAt}.`,
      );
      return DONE;
    },
  };
}

/** Takes the install path away: boot NIC off (and kept off), ISO gone, guestinfo cleared. */
export function handoffStep(
  deps: InstallDeps,
  record: (ctx: ReconcileContext, reason: string, message: string) => Promise<void>,
): Step {
  return {
    name: "handoff",
    async run(ctx) {
      const found = await vmOf(deps, ctx);
      if (!found) return wait(2, "Configuring", "ConnectingToVCenter", "Connecting to vCenter.");
      const { vc, vm } = found;
      const method = bootMethod(ctx.cls.spec);
      const p = ctx.cls.spec.placement;
      if (method === "network") {
        const bootPG = effectiveNetwork(ctx.cls.spec).bootPortGroup;
        const nic = vm.nics.find((n) => n.portGroup === bootPG);
        if (nic && (nic.connected || nic.startConnected)) {
          const was =
            ctx.status.conditions?.find((c) => c.type === "BootNICDisconnected")?.status === "True";
          const disconnecting = await startTask(
            ctx,
            vc,
            "DisconnectBootNIC",
            () => vc.startSetNicConnected(vm.moRef, nic.key, false),
            `Disconnecting the boot NIC of VM ${vm.name}.`,
          );
          if (disconnecting) {
            if (was)
              await record(
                ctx,
                "BootNICReconnected",
                `The boot NIC ${nic.macAddress ?? nic.label} was connected again; vsop disconnects it.`,
              );
            ctx.log.info({ nic: nic.macAddress, drift: was }, "disconnecting boot NIC");
            return disconnecting;
          }
        }
        if (ctx.finished === "DisconnectBootNIC") ctx.log.info("boot NIC disconnected");
        condition(
          ctx,
          "BootNICDisconnected",
          "True",
          "Disconnected",
          `The boot NIC on ${bootPG} is disconnected.`,
        );
      } else if (method === "iso" && ctx.status.install?.iso) {
        if (ctx.finished === "DeleteISO") {
          ctx.log.info({ iso: ctx.status.install.iso }, "boot ISO detached and deleted");
          ctx.status.install = { ...ctx.status.install, iso: undefined };
        } else {
          const step =
            (await startTask(
              ctx,
              vc,
              "DetachISO",
              () => vc.startDetachIso(vm.moRef),
              `Detaching the boot ISO from VM ${vm.name}.`,
            )) ??
            (await startTask(
              ctx,
              vc,
              "DeleteISO",
              () => vc.startDeleteFile(p.datacenter, p.datastore, isoFile(ctx)),
              `Deleting the boot ISO ${ctx.status.install.iso}.`,
            ));
          return step!;
        }
      } else if (method === "guestinfo" && GUESTINFO_KEYS.some((k) => vm.extraConfig[k])) {
        // The data carries broker credentials and keys; nobody needs it after the install.
        const clearing = await startTask(
          ctx,
          vc,
          "ClearGuestinfo",
          () =>
            vc.startSetExtraConfig(
              vm.moRef,
              Object.fromEntries(GUESTINFO_KEYS.map((k) => [k, ""])),
            ),
          `Clearing the install data in VM ${vm.name}'s guestinfo.`,
        );
        if (clearing) return clearing;
      }
      if (ctx.finished === "ClearGuestinfo") ctx.log.info("guestinfo install data cleared");
      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      return DONE;
    },
  };
}
