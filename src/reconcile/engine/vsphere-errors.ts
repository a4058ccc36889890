// vSphere failures as condition reasons a person can act on.
import { KubeUnreachable } from "../../controller/kube.js";
import { DuplicateOwnerMarker } from "../../vsphere/vcenter.js";
import { StepError, type StepErrorOptions } from "../../errors.js";
import {
  VSphereFault,
  VSphereTaskError,
  VSphereTLSError,
  VSphereUnreachable,
  faultName,
} from "../../vsphere/errors.js";
import {
  DatastoreUploadFailed,
  PlacementNotFound,
  PortGroupNotFound,
  NoStorageDrsRecommendation,
  StoragePolicyIncompatible,
  StoragePolicyNotFound,
  TemplateHasNoSnapshot,
} from "../../vsphere/vcenter.js";

const PLACEMENT_REASON = {
  datacenter: "DatacenterNotFound",
  cluster: "ClusterNotFound",
  resourcePool: "ResourcePoolNotFound",
  datastore: "DatastoreNotFound",
  datastoreCluster: "DatastoreClusterNotFound",
  folder: "FolderNotFound",
  template: "TemplateNotFound",
} as const;

/** Faults that say the datastore has no room. */
const STORAGE_FULL = new Set(["NoDiskSpace", "InsufficientStorageSpace"]);

/**
 * Faults that say the cluster, host or pool lacks CPU, memory or capacity. vCenter reports the
 * concrete subclass (InsufficientMemoryResourcesFault, InsufficientHostCapacityFault, …) of
 * InsufficientResourcesFault, so the base name alone would miss them.
 */
function isResourceShortage(fault: string): boolean {
  return (
    /^Insufficient[A-Za-z]*(Resources?|Capacity)(Fault)?$/.test(fault) ||
    fault === "NotEnoughCpus" ||
    fault === "NotEnoughResources"
  );
}

/** A message without its final period, to go inside a sentence. */
const sentenceBody = (m: string) => m.replace(/[.\s]+$/, "");

export function vsphereStepError(err: unknown, opts: StepErrorOptions = {}): StepError {
  if (err instanceof StepError) return err;
  const o = { ...opts, cause: err };
  if (err instanceof DuplicateOwnerMarker)
    return new StepError(
      "DuplicateOwnerMarker",
      `${err.message}: one was cloned in vCenter. The one whose instanceUUID is in ` +
        "status.vm.instanceUUID is the one vsop created; vsop changes and deletes neither until " +
        "the copy is deleted or its extraConfig vsop.owner-uid is cleared.",
      opts,
    );
  if (err instanceof KubeUnreachable)
    return new StepError(
      "APIServerUnavailable",
      `The Kubernetes API server did not answer (${err.code}); vsop retries with backoff.`,
      { ...o, status: "Unknown" },
    );
  if (err instanceof VSphereTLSError)
    return new StepError(
      "VCenterTLSError",
      `vCenter's certificate did not verify against the class's caBundle (${err.code}); nothing was sent. ` +
        "Put the CA that signed it in spec.vcenter.caBundle.",
      o,
    );
  if (err instanceof VSphereUnreachable)
    return new StepError(
      "VCenterUnreachable",
      `vCenter ${err.url} cannot be reached (${err.code}); vsop retries with backoff.`,
      { ...o, status: "Unknown" },
    );
  if (err instanceof PlacementNotFound)
    return new StepError(
      PLACEMENT_REASON[err.what],
      `The class's ${err.what} "${err.objectName}" does not exist in vCenter` +
        (err.what === "datacenter" ? "" : ` (datacenter ${err.datacenter})`) +
        "; fix spec.placement or create it.",
      o,
    );
  if (err instanceof NoStorageDrsRecommendation)
    return new StepError(
      "DatastoreClusterNoRecommendation",
      `Storage DRS recommended no datastore in datastore cluster ${err.pod} (is Storage DRS ` +
        "enabled and does it hold a datastore with room?); nothing was created. vsop asks again.",
      o,
    );
  if (err instanceof StoragePolicyNotFound)
    return new StepError(
      "StoragePolicyNotFound",
      `The class's placement.storagePolicy "${err.policy}" is not a storage policy in vCenter` +
        (err.known.length ? ` (it has: ${err.known.join(", ")})` : "") +
        "; nothing was created. Fix placement.storagePolicy or create the policy.",
      o,
    );
  if (err instanceof StoragePolicyIncompatible)
    return new StepError(
      "StoragePolicyIncompatible",
      `Datastore ${err.datastore} does not satisfy the class's placement.storagePolicy ` +
        `"${err.policy}"; nothing was created. Choose a datastore the policy allows.`,
      o,
    );
  if (err instanceof TemplateHasNoSnapshot)
    return new StepError(
      "TemplateHasNoSnapshot",
      `Template ${err.template} has no current snapshot, and Linked clones are made from it ` +
        "(hardware.cloneMode Linked); nothing was created. Take a snapshot of the template, or set " +
        "hardware.cloneMode to Full.",
      o,
    );
  if (err instanceof DatastoreUploadFailed)
    return new StepError(
      "DatastoreUploadFailed",
      `Uploading to the datastore failed (${err.message}); vsop retries.`,
      o,
    );
  const fault = faultName(err);
  if (err instanceof VSphereFault && fault === "InvalidLogin")
    return new StepError(
      "VCenterAuthFailed",
      "vCenter refused the user name or password in the class's credentials Secret; fix the Secret.",
      o,
    );
  if (fault && (STORAGE_FULL.has(fault) || isResourceShortage(fault)))
    return new StepError(
      STORAGE_FULL.has(fault) ? "DatastoreFull" : "InsufficientResources",
      `vCenter could not place or start the VM: ${sentenceBody((err as Error).message)}. ` +
        "Free capacity or choose another datastore/cluster.",
      o,
    );
  if (err instanceof VSphereFault || err instanceof VSphereTaskError)
    return new StepError("VSphereError", `vCenter said: ${(err as Error).message}.`, o);
  return new StepError("VSphereError", `vSphere operation failed: ${(err as Error).message}.`, o);
}

export function portGroupError(
  err: unknown,
  boot: boolean,
  name: string,
  vlan?: number,
  /** Whose VLAN it is, e.g. "extra network db-prod-1-bk.example.com", when not the server's. */
  whose?: string,
): StepError {
  if (!(err instanceof PortGroupNotFound)) return vsphereStepError(err, { condition: "VMCreated" });
  return boot
    ? new StepError(
        "BootPortGroupMissing",
        `The Boot-VLAN port group "${name}" does not exist in vCenter; create it or fix spec.network.bootPortGroup.`,
        { condition: "VMCreated" },
      )
    : new StepError(
        "VLANPortGroupMissing",
        `No port group "${name}" for VLAN ${vlan}${whose ? ` (${whose})` : ""} exists in vCenter; ` +
          "create it or fix spec.network.portGroupTemplate.",
        { condition: "VMCreated" },
      );
}
