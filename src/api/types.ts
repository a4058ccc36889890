// TypeScript shapes of the provisioning.vsop.dev/v1alpha1 CRDs (crds/*.yaml is the schema).

export const GROUP = "provisioning.vsop.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const VS_PLURAL = "virtualservers";
export const VSC_PLURAL = "virtualserverclasses";
export const FINALIZER = `${GROUP}/vm`;
/**
 * Annotation asking for one Puppet run (`kubectl vsop puppet run` sets it): an RFC 3339 time; a
 * value newer than the last run request is honoured once (status.puppet.requestedFor).
 */
export const PUPPET_RUN_REQUESTED_AT = `${GROUP}/puppet-run-requested-at`;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

export type DeletionPolicy = "Delete" | "Retain";
export type PowerState = "On" | "Off";
/** Soft: guest shutdown (VMware Tools); Hard: power off; TrySoft: soft, hard after a timeout. */
export type PowerOffMode = "Soft" | "Hard" | "TrySoft";

/** A data disk: added while the VM runs, grown when sizeGiB increases, never shrunk. */
export interface DiskSpec {
  /** Lowercase name, unique per server ("system" is the system disk's). */
  name: string;
  sizeGiB: number;
  /** Datastore for the disk's file when it is added (default: the class's placement.datastore). */
  datastore?: string;
}

/** The disk name status.vm.disks gives the system disk (spec.diskGiB). */
export const SYSTEM_DISK = "system";

export interface VirtualServerSpec {
  hostname: string;
  className: string;
  cpus?: number;
  memoryMiB?: number;
  /** System disk size; grown when it increases, a decrease is refused (DiskShrinkNotSupported). */
  diskGiB?: number;
  /** Data disks, merged by name over the class's hardware.disks. */
  disks?: DiskSpec[];
  puppet?: {
    environment?: string;
    tags?: string[];
    /** Runs report what they would change and change nothing (puppet --noop). */
    noop?: boolean;
  };
  deletionPolicy?: DeletionPolicy;
  /** Whether the installed server runs (default On); an install always runs to its end first. */
  powerState?: PowerState;
  /** How Off (and a restart) is done (default TrySoft). */
  powerOffMode?: PowerOffMode;
  /** An RFC 3339 time asking for one restart; each value is honoured once (status.power). */
  restartRequestedAt?: string;
  /**
   * An RFC 3339 time asking to reinstall the same VM once; each value is honoured once
   * (status.rebuild.requestedAt).
   */
  rebuildRequestedAt?: string;
  /** An existing VM to manage instead of creating one (read while the server has no VM). */
  adopt?: AdoptSpec;
  /** More service NICs, one per hostname, each on the port group of its address's VLAN. */
  extraNetworks?: ExtraNetworkSpec[];
}

/** One more network of a server: a hostname whose A record gives the NIC's address and VLAN. */
export interface ExtraNetworkSpec {
  hostname: string;
}

/** At most this many extra networks per server (the CRD's maxItems). */
export const MAX_EXTRA_NETWORKS = 4;

/** Which VM to adopt: by its moRef, or by its name (which must then be unique in vCenter). */
export interface AdoptSpec {
  moRef?: string;
  name?: string;
}

/**
 * Waiting: held up by something vsop retries on its own and expects to clear without anyone
 * changing the object (a name not yet in DNS, vCenter or the broker unreachable, ...).
 * Failed: stopped by something a person has to fix (vsop still retries, so fixing it is enough).
 * PoweredOff: installed and powered off because spec.powerState says Off (not a failure).
 */
export type Phase =
  | "Pending"
  | "Creating"
  | "Installing"
  | "Configuring"
  | "Ready"
  | "Waiting"
  | "Failed"
  | "Deleting"
  | "PoweredOff";

export type ConditionStatus = "True" | "False" | "Unknown";

/** metav1.Condition */
export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ServiceAddress {
  name: string;
  address?: string;
}

export interface NicStatus {
  /** extra: one of spec.extraNetworks (hostname and address say which). */
  role: "service" | "boot" | "extra";
  hostname?: string;
  address?: string;
  vlan?: number;
  portGroup: string;
  macAddress?: string;
  connected: boolean;
}

/** A vSphere tag: its category's name and its own. */
export interface TagRef {
  category: string;
  name: string;
}

export interface DiskStatus {
  /** The disk's name in spec.disks (or the class's hardware.disks); "system" for the system disk. */
  name: string;
  sizeGiB: number;
  /** The backing file, e.g. "[LocalDS_0] web-prod-1/web-prod-1_1.vmdk". */
  file?: string;
  /** Where the guest sees it: controller and unit as the VM's configuration names them, e.g. scsi0:1. */
  device?: string;
  /** No longer listed, and kept because the class's hardware.removeDisks is false. */
  retained?: boolean;
}

export interface VMTask {
  /** What the task does, e.g. CreateVM, PowerOn, DisconnectBootNIC. */
  operation: string;
  /** The task's managed object reference, e.g. task-123. */
  moRef: string;
  startedAt: string;
}

export interface VirtualServerStatus {
  observedGeneration?: number;
  phase?: Phase;
  address?: string;
  /** When DNS gave status.address (vlan, portGroup); kept while vsop stands in for DNS in an outage. */
  resolvedAt?: string;
  vlan?: number;
  portGroup?: string;
  services?: { dns?: ServiceAddress; ntp?: ServiceAddress; proxy?: ServiceAddress };
  vm?: {
    moRef?: string;
    name?: string;
    instanceUUID?: string;
    powerState?: string;
    nics?: NicStatus[];
    /** The vSphere task vsop started for this server and has not seen end (one at a time). */
    task?: VMTask;
    /** vsop powered the VM off to resize it and powers it on again once resized. */
    powerCycle?: boolean;
    /** The tags vsop attached (the class's inventory.tags and the hostname's apptype/environment). */
    tags?: TagRef[];
    /** The custom attributes vsop set (the class's inventory.attributes). */
    attributes?: Record<string, string>;
    /** The DRS anti-affinity rule the VM is in (placement.antiAffinity), e.g. vsop-web-prod. */
    antiAffinityRule?: string;
    /** The datastore of the VM's system disk, e.g. LocalDS_0 (the one placement chose). */
    datastore?: string;
    /** The system disk and the data disks vsop added, as last observed. */
    disks?: DiskStatus[];
  };
  power?: {
    /** When vsop asked the guest to shut down (ShutdownGuest); cleared once it is off or On again. */
    shutdownRequestedAt?: string;
    /** The spec.restartRequestedAt value vsop honoured: the same value asks for nothing more. */
    restartedFor?: string;
    /** When vsop restarted the server for it (unset when the request needed no restart). */
    restartedAt?: string;
  };
  /** The last rebuild (spec.rebuildRequestedAt) vsop honoured, and how far it got. */
  rebuild?: RebuildStatus;
  /** The VM spec.adopt named, once vsop chose it; completedAt once it carries vsop's marker. */
  adoption?: { moRef: string; name: string; startedAt: string; completedAt?: string };
  install?: {
    /** network, iso or guestinfo; "adopted" for a VM vsop adopted and did not install. */
    method?: string;
    startedAt?: string;
    /**
     * When the installer first asked for its install data: the kickstart (network), or for iso
     * and guestinfo, whose install data travels with the VM, its one-time key bundle.
     */
    kickstartFetchedAt?: string;
    /** When the installing system fetched its one-time key bundle (/bootstrap). */
    keysFetchedAt?: string;
    completedAt?: string;
    /** Datastore path of the per-server boot ISO while it is attached (vsop deletes it). */
    iso?: string;
    /** Datastore path of the class's installer image while it is attached (never deleted). */
    installerISO?: string;
  };
  puppet?: {
    /**
     * A run vsop decided to ask for, written before the runonce is sent: a process killed after
     * sending finds it on restart and asks the node whether the run happened instead of sending
     * again. Cleared when the request is recorded in requestedAt.
     */
    pendingRun?: PuppetRunIntent;
    /** When the last run was requested (the node's clock when it said). */
    requestedAt?: string;
    /**
     * The puppet-run-requested-at annotation's value when that run was requested: honoured, so
     * the same value never asks for another run.
     */
    requestedFor?: string;
    /**
     * The requestedAt whose run has finished (and is in lastRunAt, changed, failed, total).
     * Whole seconds cannot order a run requested in the second the previous one finished.
     */
    finishedFor?: string;
    /** Environment, tags and noop that run was requested with. */
    environment?: string;
    tags?: string;
    noop?: boolean;
    lastRunAt?: string;
    changed?: number;
    failed?: number;
    /** Resources not in their desired state (a noop run: what it would have changed). */
    outOfSync?: number;
    total?: number;
    configVersion?: string;
    /** The server's Puppet certificate, as the CA reports it once vsop's autosign signed it. */
    certificate?: { serial?: string; notAfter?: string };
    /** Failed resources of the last run (first ones, as Type[title]), from the node's report. */
    failedResources?: string[];
    /** When the failed run's report was made (its time on the node). */
    reportTime?: string;
  };
  conditions?: Condition[];
}

export interface RebuildStatus {
  /** The spec.rebuildRequestedAt value honoured: the same value asks for nothing more. */
  requestedAt?: string;
  /** When vsop began rebuilding for it (unset when the value needed no rebuild). */
  startedAt?: string;
  /** When the VM was off and the previous install state dropped: the install runs again. */
  reinstallStartedAt?: string;
  /** When the reinstalled server reported itself installed. */
  completedAt?: string;
}

export interface VirtualServer {
  apiVersion: string;
  kind: "VirtualServer";
  metadata: ObjectMeta;
  spec: VirtualServerSpec;
  status?: VirtualServerStatus;
}

export type BootMethod = "network" | "iso" | "guestinfo";

export interface VirtualServerClassSpec {
  vcenter: {
    url: string;
    /** Secret in the operator's namespace with keys `username` and `password`. */
    credentialsSecret: string;
    caBundle?: string;
    insecureSkipVerify?: boolean;
  };
  placement: {
    datacenter: string;
    cluster?: string;
    resourcePool?: string;
    /** Exactly one of datastore and datastoreCluster. */
    datastore?: string;
    /** A datastore cluster (StoragePod): Storage DRS recommends each new VM's datastore. */
    datastoreCluster?: string;
    /** SPBM storage policy (by name) new VMs get; the datastore must satisfy it. */
    storagePolicy?: string;
    folder?: string;
    /**
     * ByAppTypeAndEnvironment: servers sharing apptype and environment are kept on different
     * hosts by one DRS anti-affinity rule per group (needs `cluster`). Default None.
     */
    antiAffinity?: "ByAppTypeAndEnvironment" | "None";
  };
  /** How servers are found again in vCenter: tags and custom attributes on their VMs. */
  inventory?: {
    /** Attached to every VM; the category must exist, a missing tag is created. */
    tags?: TagRef[];
    /** Custom attributes set on every VM (defined when missing). */
    attributes?: Record<string, string>;
  };
  hardware?: {
    template?: string;
    guestId?: string;
    cpus?: number;
    memoryMiB?: number;
    diskGiB?: number;
    vmName?: "ShortName" | "FQDN";
    powerCyclePolicy?: "Never" | "IfNeeded";
    /** Whether edits of cpus/memory here reach existing VMs (Rolling) or only new ones (OnCreate). */
    updatePolicy?: "OnCreate" | "Rolling";
    /** How many of the class's servers may be powered off for a resize at once (default 1). */
    maxUnavailable?: number;
    /** How long a soft power-off waits for the guest (default 5m): TrySoft then powers off. */
    shutdownTimeout?: string;
    /** Linked: clone from the template's current snapshot (child disks); Full (default) copies. */
    cloneMode?: "Full" | "Linked";
    /** Firmware of new VMs (default: vSphere's, BIOS). */
    firmware?: "bios" | "efi";
    /** UEFI Secure Boot (needs firmware efi). */
    secureBoot?: boolean;
    /** Data disks every server of the class gets (a server's spec.disks adds or overrides by name). */
    disks?: DiskSpec[];
    /** Whether a data disk dropped from the lists is removed and its file deleted (default false). */
    removeDisks?: boolean;
  };
  naming?: {
    /** Regular expression with named groups apptype, environment, instance and domain. */
    pattern?: string;
    /** DNS servers as host or host:port; the system resolver when empty. */
    dnsServers?: string[];
  };
  network?: {
    portGroupTemplate?: string;
    bootPortGroup?: string;
    /** Which octet of the IPv4 address is the VLAN (1-4), unless cidrs match first. */
    vlanOctet?: number;
    vlanCIDRs?: { cidr: string; vlan: number }[];
    prefixLength?: number;
    services?: {
      dns?: string;
      ntp?: string;
      proxy?: string;
      /** Service kinds whose name may be missing from DNS. */
      optional?: ("dns" | "ntp" | "proxy")[];
    };
  };
  boot?: {
    method?: BootMethod;
    /** ConfigMap in the operator's namespace: keys kickstart, user-data, meta-data, network-config. */
    templatesConfigMap?: string;
    installTimeout?: string;
    /** Treat servers as installed as soon as their VM runs (for images that need no install). */
    assumeInstalled?: boolean;
    /**
     * iso: a vendor installer image, e.g. "[LocalDS_0] isos/alma9-boot.iso", booted from the first
     * CD-ROM with the server's kickstart on a second (an OEMDRV volume). Not vsop's: never deleted.
     */
    installerISO?: string;
  };
  puppet?: {
    environment?: string;
    interval?: string;
    runTimeout?: string;
    /** The Puppet master the servers' agents use (puppet.conf server), and its port. */
    server?: string;
    serverPort?: number;
    /** Trusted facts the servers' CSRs ask for beside pp_role, pp_environment, pp_instance. */
    extensionRequests?: Record<string, string>;
    /** The Puppet CA's URL, e.g. https://puppet.example.com:8140: certificates are cleaned there. */
    caURL?: string;
    /** Secret (operator namespace) with tls.crt, tls.key (vsop's CA client) and ca.crt. */
    caClientSecret?: string;
    /** Runs of the class's servers in flight at once, across the operator (default 10). */
    maxConcurrentRuns?: number;
    /** Periodic runs are spread over this duration after the interval (a per-server offset). */
    splay?: string;
  };
  mcollective: {
    brokerURL: string;
    /** Secret with keys `username` and `password` for the broker. */
    credentialsSecret?: string;
    caBundle?: string;
    collective?: string;
    /** STOMP port mcollectived on the servers connects to (default 61613). */
    stompPort?: number;
    /** Secret with client-private.pem, client-public.pem, server-public.pem, server-private.pem. */
    keysSecret: string;
    clientCertName?: string;
  };
}

/** A Puppet run vsop is about to ask for (status.puppet.pendingRun). */
export interface PuppetRunIntent {
  /** When vsop decided on the run (its own clock, milliseconds): identifies the intent. */
  startedAt: string;
  /** Why: first run, spec.puppet changed, requested, interval due. */
  reason: string;
  environment: string;
  tags: string;
  noop?: boolean;
  /** The puppet-run-requested-at value the run answers, when it was asked by it. */
  requestedFor?: string;
}

export interface VirtualServerClass {
  apiVersion: string;
  kind: "VirtualServerClass";
  metadata: ObjectMeta;
  spec: VirtualServerClassSpec;
}

export const CONDITION_TYPES = [
  "NameResolved",
  "VMCreated",
  "Installed",
  "BootNICDisconnected",
  "PuppetApplied",
  "Ready",
] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];
