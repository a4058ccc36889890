// The vSphere operations the reconciler calls. Reads come from a cache that an update loop keeps
// current, so a reconcile costs no SOAP request to observe; every change is a task awaited by
// property updates, after which the VM is read back into the cache.
import type { Logger } from "pino";
import { VSphereSession } from "./session.js";
import { MoRef, type Node } from "./xml.js";
import { get, items, moRef, str } from "./nodes.js";
import { VSphereFault, VSphereTaskError, faultName } from "./errors.js";
import { retrieve, retrieveOne, propertySpec } from "./properties.js";
import { TASK_PROPERTIES, taskStateOf, type TaskContext, type TaskState } from "./task-state.js";
import { VMCache } from "./cache.js";
import { TASK_POLL_MS, TaskWatch } from "./task-watch.js";
import { UpdateLoop, type Changes } from "./watch.js";
import { Inventory, PlacementNotFound } from "./inventory.js";
import * as datastore from "./datastore.js";
import * as customFields from "./custom-fields.js";
import { TaggingClient } from "./tagging.js";
import * as clusterRules from "./cluster-rules.js";
import {
  compatibleDatastores,
  profileSpec,
  storagePolicyByName,
  StoragePolicyIncompatible,
  withStoragePolicy,
  type StoragePolicy,
} from "./pbm.js";
import {
  deviceChange,
  deviceList,
  editDevice,
  emptyCdromBacking,
  findDevice,
  freeIdeSlot,
  freeScsiSlots,
  isoDriveChanges,
  newCdrom,
  newDisk,
  newNic,
  resizedDisk,
} from "./devices.js";
import type { NodeObject } from "./nodes.js";
import {
  DISK_MARKER_PREFIX,
  DeviceNotFound,
  OWNER_UID_KEY,
  TemplateHasNoSnapshot,
  VMNotFound,
  VM_PROPERTIES,
  VM_TYPE,
  VSphereVerifyError,
  bootOptionsFor,
  bootOrderSignature,
  cloneSpec,
  createConfigSpec,
  diskMarkers,
  extraConfigDelta,
  gibToKiB,
  systemDisk,
  extraConfigOf,
  optionValues,
  validateCreateSpec,
  type CreateVMSpec,
  type DiskChanges,
  type Placement,
  type SpecObject,
  type VMRecord,
} from "./vms.js";

export type { CreateVMSpec, DiskChanges, NicSpec, Placement, VMRecord } from "./vms.js";
export type { NicRecord, CdromRecord, DiskRecord, ScsiKind } from "./devices.js";
export {
  InvalidVMSpec,
  VMNotFound,
  DeviceNotFound,
  VSphereVerifyError,
  TemplateHasNoSnapshot,
} from "./vms.js";
export { PlacementNotFound, PortGroupNotFound } from "./inventory.js";
export {
  DatastoreFileNotFound,
  DatastoreReadFailed,
  DatastoreUploadFailed,
  datastorePath,
  parseDatastorePath,
} from "./datastore.js";
export { StoragePolicyIncompatible, StoragePolicyNotFound } from "./pbm.js";

/** Storage DRS gave no datastore for a new VM in the datastore cluster. */
export class NoStorageDrsRecommendation extends Error {
  override name = "NoStorageDrsRecommendation";
  constructor(readonly pod: string) {
    super(`Storage DRS recommended no datastore in datastore cluster ${pod}`);
  }
}

export interface VCenterOptions {
  /** SDK URL, e.g. https://vcenter.example.com/sdk */
  url: string;
  caBundle?: string;
  insecureSkipVerify?: boolean;
  username: string;
  password: string;
  logger: Logger;
  /** Called once per request (SOAP method name, DatastoreFileUpload or DatastoreFileRead), for metrics. */
  onCall?: (method: string) => void;
  /** How long waitTask waits before VSphereTaskError "TaskTimeout" (default 15 min). */
  taskTimeoutMs?: number;
  /**
   * Called with an owner key ("namespace/name" from a VM's vsop.owner) when a VM it owns changed
   * (as every task vsop starts on a VM changes it), so its reconcile runs again.
   */
  wake?: (key: string) => void;
  /** Longest server-side wait of one WaitForUpdatesEx (default 10 s). */
  maxWaitSeconds?: number;
  /** How long a found placement object or port group is remembered (default 60 s). */
  inventoryTtlMs?: number;
  /** How long an operation waits for the first sync of the cache (default 30 s). */
  syncTimeoutMs?: number;
  /** Update loop retry delays after failures (default 500 ms doubling to 30 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

/** A task started for an owner: what it does, its moRef, when it started. */
export interface InFlightTask {
  operation: string;
  moRef: string;
  startedAt: string;
}

/** The VM to be created exists already, with this owner's marker (now in the cache). */
export class VMAlreadyExists extends Error {
  override name = "VMAlreadyExists";
  constructor(readonly moRef: string) {
    super(`VM ${moRef} already exists with this owner's marker`);
  }
}

/** Several VMs carry one object's owner marker (vsop.owner-uid). */
export class DuplicateOwnerMarker extends Error {
  override name = "DuplicateOwnerMarker";
  constructor(readonly vms: Pick<VMRecord, "moRef" | "name" | "instanceUUID">[]) {
    super(
      `VMs ${vms.map((v) => `${v.moRef} (${v.name}, instanceUUID ${v.instanceUUID ?? "?"})`).join(" and ")} ` +
        "carry the same owner marker",
    );
  }
}

/** Tasks whose VM is remembered (a task never read to its end is forgotten after this many). */
const MAX_REMEMBERED_TASKS = 10_000;

export class VCenter {
  readonly session: VSphereSession;
  private readonly log: Logger;
  private readonly cache = new VMCache();
  private readonly inventory: Inventory;
  /** Each owner's task in flight, as track() was told. */
  private readonly inflight = new Map<string, InFlightTask>();
  /** The VM each task this process started works on (or, for a create, will carry the marker). */
  private readonly taskVMs = new Map<string, { vm?: string; ownerUID?: string }>();
  private readonly taskTimeoutMs: number;
  private readonly loop: UpdateLoop;
  private readonly tasks: TaskWatch;
  private readonly counts = new Map<string, number>();
  private readonly syncTimeoutMs: number;
  private started = false;
  private taggingClient: TaggingClient | undefined;

  constructor(private readonly opts: VCenterOptions) {
    // Short enough that a stalled long poll (vcsim hangs one under a burst of tasks) is noticed
    // within 20 s (watch.ts); an idle vCenter costs one call per 10 s.
    const maxWaitSeconds = opts.maxWaitSeconds ?? 10;
    this.log = opts.logger.child({ component: "vsphere", vcenter: new URL(opts.url).host });
    if (opts.insecureSkipVerify)
      this.log.warn(
        { url: opts.url },
        "TLS certificate verification of vCenter is disabled (insecureSkipVerify); set a CA bundle instead",
      );
    this.session = new VSphereSession(
      {
        url: opts.url,
        caBundle: opts.caBundle,
        insecureSkipVerify: opts.insecureSkipVerify,
        // The long poll must end (maxWaitSeconds) well before the request times out.
        timeoutMs: Math.max(30_000, (maxWaitSeconds + 10) * 1000),
        onCall: (method) => this.count(method),
      },
      { username: opts.username, password: opts.password },
    );
    this.inventory = new Inventory(this.session, opts.inventoryTtlMs ?? 60_000);
    this.taskTimeoutMs = opts.taskTimeoutMs ?? 15 * 60_000;
    this.loop = new UpdateLoop(
      this.session,
      this.cache,
      this.log,
      {
        maxWaitSeconds,
        backoffBaseMs: opts.backoffBaseMs ?? 500,
        backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      },
      () => this.inventory.invalidate(),
      (changes) => this.changed(changes),
    );
    this.syncTimeoutMs = opts.syncTimeoutMs ?? 30_000;
    this.tasks = new TaskWatch(
      this.session,
      () => this.inflight,
      (key) => this.opts.wake?.(key),
      this.log,
    );
  }

  private count(method: string): void {
    this.counts.set(method, (this.counts.get(method) ?? 0) + 1);
    this.opts.onCall?.(method);
  }

  /** The task watch's reads of task states so far (one per tick with tasks to read). */
  taskWatchReads(): number {
    return this.tasks.reads;
  }

  /** Requests sent so far, per method. */
  requestCount(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  requestTotal(): number {
    let n = 0;
    for (const v of this.counts.values()) n += v;
    return n;
  }

  // --- the cache ---------------------------------------------------------------------------------

  /**
   * Starts the update loop and resolves once the cache holds every VM. Rejects with the first
   * failure (e.g. InvalidLogin); the loop keeps retrying with backoff until stop().
   */
  start(): Promise<void> {
    this.started = true;
    return this.loop.start();
  }

  /** Stops the update loop and logs out. */
  async stop(): Promise<void> {
    this.started = false;
    this.tasks.stop();
    await this.loop.stop();
    await this.taggingClient?.logout();
    await this.session.logout();
  }

  // --- inventory: tags and custom attributes (quick calls, no tasks) -----------------------------

  /** vCenter's tagging service, with its own REST session (same credentials and TLS settings). */
  get tagging(): TaggingClient {
    this.taggingClient ??= new TaggingClient({
      sdkUrl: this.opts.url,
      agent: this.session.soap.agent,
      username: this.opts.username,
      password: this.opts.password,
      onCall: (method) => this.count(method),
    });
    return this.taggingClient;
  }

  /** A cluster's DRS VM anti-affinity rules and its host count, read from vCenter. */
  async clusterRules(datacenter: string, cluster: string): Promise<clusterRules.ClusterRules> {
    return clusterRules.clusterRules(
      this.session,
      await this.inventory.cluster(datacenter, cluster),
    );
  }

  /**
   * Starts adding, changing (to exactly these VMs) or removing an anti-affinity rule of a cluster
   * (ReconfigureComputeResource_Task); returns the task.
   */
  async startAntiAffinityRule(
    datacenter: string,
    cluster: string,
    operation: "add" | "edit" | "remove",
    rule: { key?: number; name: string; vms: string[] },
  ): Promise<string> {
    const ref = await this.inventory.cluster(datacenter, cluster);
    this.log.info(
      { cluster, rule: rule.name, operation, vms: rule.vms },
      "changing anti-affinity rule",
    );
    return clusterRules.startRuleChange(
      this.session,
      ref,
      clusterRules.ruleChange(operation, rule),
    );
  }

  /** VM custom attribute keys by name. */
  customFieldKeys(): Promise<Map<string, number>> {
    return customFields.customFieldKeys(this.session);
  }

  /** Defines a VM custom attribute (AddCustomFieldDef); returns its key. */
  addCustomField(name: string): Promise<number> {
    this.log.info({ attribute: name }, "defining custom attribute");
    return customFields.addCustomField(this.session, name);
  }

  /** A VM's custom attribute values by key, read from vCenter. */
  customValues(ref: string): Promise<Map<number, string>> {
    return customFields.customValues(this.session, ref);
  }

  /** Sets one custom attribute of a VM (SetField; "" clears it). */
  setCustomField(ref: string, key: number, value: string): Promise<void> {
    return customFields.setCustomField(this.session, ref, key, value);
  }

  synced(): boolean {
    return this.loop.synced;
  }

  /** Why the cache is not synced, when it is not. */
  lastError(): Error | undefined {
    return this.loop.lastError;
  }

  /** Loop statistics for tests and metrics. */
  cacheStats(): { vms: number; batches: number; resyncs: number } {
    return { vms: this.cache.size, batches: this.loop.batches, resyncs: this.loop.resyncs };
  }

  vms(): VMRecord[] {
    return this.cache.all();
  }

  /**
   * The VM carrying this owner marker. A VM cloned in vCenter copies the marker; with more than
   * one, vsop cannot tell from the marker which is its own, so it throws DuplicateOwnerMarker
   * and every step stops before changing or deleting either.
   */
  findByOwnerUID(uid: string): VMRecord | undefined {
    const owned = this.cache.ownedBy(uid);
    if (owned.length > 1) throw new DuplicateOwnerMarker(owned);
    return owned[0];
  }

  findByName(name: string): VMRecord[] {
    return this.cache.all().filter((vm) => vm.name === name);
  }

  get(moRef: string): VMRecord | undefined {
    return this.cache.get(moRef);
  }

  /** The cache is current: operations fail fast while vCenter is away, so reconciles requeue. */
  private async ready(): Promise<void> {
    if (this.loop.synced) return;
    if (!this.started) return this.start();
    if (this.loop.lastError) throw this.loop.lastError;
    if (!(await this.loop.whenSynced(this.syncTimeoutMs)))
      throw this.loop.lastError ?? new Error("the vSphere VM cache is not synced");
  }

  /** Reads one VM into the cache; undefined (and dropped from the cache) when it is gone. */
  private async refresh(ref: string): Promise<VMRecord | undefined> {
    let props: Record<string, Node> | undefined;
    try {
      const [content] = await retrieve(this.session, {
        propSet: [propertySpec(VM_TYPE, VM_PROPERTIES)],
        objectSet: [{ obj: new MoRef(VM_TYPE, ref), skip: false }],
      });
      props = content?.props;
    } catch (err) {
      if (!(err instanceof VSphereFault && err.fault === "ManagedObjectNotFound")) throw err;
    }
    if (!props || Object.keys(props).length === 0) {
      this.cache.removeVM(ref);
      return undefined;
    }
    this.cache.upsertVM(ref, props);
    return this.cache.get(ref);
  }

  private async vm(ref: string): Promise<VMRecord> {
    await this.ready();
    const vm = this.cache.get(ref) ?? (await this.refresh(ref));
    if (!vm) throw new VMNotFound(ref);
    return vm;
  }

  /** Calls a method on a VM; a VM that is gone becomes VMNotFound. */
  private async invokeOnVM(method: string, ref: string, args: SpecObject = {}): Promise<Node> {
    try {
      return await this.session.invoke(method, new MoRef(VM_TYPE, ref), args);
    } catch (err) {
      if (faultName(err) === "ManagedObjectNotFound") {
        this.cache.removeVM(ref);
        throw new VMNotFound(ref);
      }
      throw err;
    }
  }

  /** Starts a task on a VM; a VM that is gone becomes VMNotFound. Returns the task. */
  private async startVmTask(method: string, ref: string, args: SpecObject = {}): Promise<string> {
    const task = moRef(await this.invokeOnVM(method, ref, args));
    if (!task) throw new Error(`${method} returned no task`);
    this.log.debug({ moRef: ref, method, task: task.value }, "task started");
    this.aboutTask(task.value, { vm: ref });
    return task.value;
  }

  /** Starts a task on a VM and waits for it (for callers that may wait; never a reconcile). */
  private async vmTask(
    method: string,
    ref: string,
    args: SpecObject = {},
  ): Promise<Node | undefined> {
    const task = await this.startVmTask(method, ref, args);
    try {
      return await this.waitTask(task, { method, entity: ref });
    } catch (err) {
      if (faultName(err) === "ManagedObjectNotFound") {
        this.cache.removeVM(ref);
        throw new VMNotFound(ref);
      }
      throw err;
    }
  }

  /** ReconfigVM_Task, waited for, then the VM read back into the cache. */
  private async reconfigure(ref: string, spec: SpecObject): Promise<VMRecord> {
    await this.vmTask("ReconfigVM_Task", ref, { spec });
    const vm = await this.refresh(ref);
    if (!vm) throw new VMNotFound(ref);
    return vm;
  }

  // --- tasks -------------------------------------------------------------------------------------
  // A task that an owner waits for (track) is read with the others in flight every half second
  // (task-watch.ts), and its end wakes the owner, which then reads the task once. Its change to
  // its VM, reported by the update loop, wakes the owner too, whichever comes first.

  /**
   * A task's state, read from vCenter ("gone" when it no longer has it). An ended task's VM (the
   * one it worked on, or made) is read too, so whoever acts on the end finds the VM as the task
   * left it, even while the update loop is behind (not a second CreateVM for a missing VM).
   */
  async taskState(task: string): Promise<TaskState> {
    // The task watch read it running a moment ago and wakes the owner when it ends: no call.
    if (this.tasks.runningAsOf(task, 2 * TASK_POLL_MS)) return { state: "running" };
    try {
      const { props, vm } = await this.readTask(task);
      const state = taskStateOf(props);
      if (state.state === "gone") {
        this.taskVMs.delete(task);
        return state;
      }
      if (state.state === "success" || state.state === "error") {
        this.taskVMs.delete(task);
        const entity = moRef(props["info.entity"]);
        const made = state.state === "success" ? moRef(state.result) : undefined;
        // Read a new VM even when the update loop already reported it: that first report can
        // come before its devices (seen on vcsim), and the next steps act on its NICs and disks.
        for (const ref of [entity, made]) {
          if (ref?.type !== VM_TYPE) continue;
          if (vm?.moRef === ref.value) this.cache.upsertVM(ref.value, vm.props);
          else await this.refresh(ref.value);
        }
      }
      return state;
    } catch (err) {
      if (faultName(err) === "ManagedObjectNotFound") return { state: "gone" };
      throw err;
    }
  }

  /**
   * A task's info, and in the same request the VM it works on when this process knows which
   * (it started the task; a create's VM once the update loop has reported it): one call where
   * the task's end would otherwise take two. The task comes first, so a VM read with an ended
   * task shows what the task did.
   */
  private async readTask(
    task: string,
  ): Promise<{ props: Record<string, Node>; vm?: { moRef: string; props: Record<string, Node> } }> {
    const about = this.taskVMs.get(task);
    const ref =
      about?.vm ?? (about?.ownerUID ? this.cache.ownedBy(about.ownerUID)[0]?.moRef : undefined);
    const taskRef = new MoRef("Task", task);
    if (ref) {
      try {
        const contents = await retrieve(this.session, {
          propSet: [propertySpec("Task", TASK_PROPERTIES), propertySpec(VM_TYPE, VM_PROPERTIES)],
          objectSet: [
            { obj: taskRef, skip: false },
            { obj: new MoRef(VM_TYPE, ref), skip: false },
          ],
        });
        const of = (type: string) => contents.find((c) => c.obj.type === type)?.props;
        const vm = of(VM_TYPE);
        return {
          props: of("Task") ?? {},
          ...(vm && Object.keys(vm).length ? { vm: { moRef: ref, props: vm } } : {}),
        };
      } catch (err) {
        // The VM (or the task) is gone: read the task alone, which tells which.
        if (faultName(err) !== "ManagedObjectNotFound") throw err;
      }
    }
    return { props: await retrieveOne(this.session, taskRef, TASK_PROPERTIES) };
  }

  /** Remembers a started task's VM for readTask; bounded, oldest first out. */
  private aboutTask(task: string, about: { vm?: string; ownerUID?: string }): void {
    this.taskVMs.set(task, about);
    if (this.taskVMs.size > MAX_REMEMBERED_TASKS)
      this.taskVMs.delete(this.taskVMs.keys().next().value!);
  }

  /**
   * Remembers that `key` (an owner, "namespace/name") waits for this task, so inFlight(key)
   * returns it until forget(), also when the caller's record of it was lost.
   */
  track(task: InFlightTask, key: string): void {
    this.inflight.set(key, task);
    this.tasks.watch(task.moRef);
  }

  /** The task this process started for `key` and has not seen end. */
  inFlight(key: string): InFlightTask | undefined {
    return this.inflight.get(key);
  }

  /** Drops what track() remembered once the owner has read the task's end. */
  forget(key: string, task: string): void {
    if (this.inflight.get(key)?.moRef === task) this.inflight.delete(key);
  }

  /** Waits until a task ends: its result, or VSphereTaskError. Not for reconciles. */
  async waitTask(task: string, ctx: TaskContext): Promise<Node | undefined> {
    const deadline = Date.now() + this.taskTimeoutMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 2000)) {
      const state = await this.taskState(task);
      if (state.state === "success") return state.result;
      if (state.state === "error")
        throw new VSphereTaskError(task, state.fault, state.message, { ...ctx });
      if (state.state === "gone")
        throw new VSphereTaskError(task, "TaskGone", "vCenter no longer knows the task", {
          ...ctx,
        });
      const left = deadline - Date.now();
      if (left <= 0)
        throw new VSphereTaskError(
          task,
          "TaskTimeout",
          `${ctx.method} did not finish within ${this.taskTimeoutMs} ms`,
          { ...ctx },
        );
      await new Promise((r) => setTimeout(r, Math.min(left, delay)));
    }
  }

  /** After a batch of updates: the owners of the VMs it changed are woken. */
  private changed(changes: Changes): void {
    const keys = new Set<string>();
    for (const vm of changes.vms) for (const o of vm.owners) if (o) keys.add(o);
    for (const key of keys) this.opts.wake?.(key);
  }

  // --- placement ---------------------------------------------------------------------------------

  /** Throws PlacementNotFound naming the first missing part. */
  async checkPlacement(p: Placement): Promise<void> {
    const placed = await this.inventory.placement(p);
    if (p.storagePolicy) await this.storagePolicyFor(placed.datastore, p.storagePolicy);
  }

  /**
   * The datastore Storage DRS recommends for a new VM of this spec in the datastore cluster `pod`
   * (StorageResourceManager.RecommendDatastores, initial placement): the name of the first
   * recommendation's destination. The VM is then created there like on any datastore; the
   * recommendation itself is not applied (ApplyStorageDrsRecommendation_Task would create the VM
   * in the same call, outside vsop's one-task bookkeeping). Asks vCenter each time (no task).
   */
  async recommendDatastore(
    p: Omit<Placement, "datastore">,
    pod: string,
    spec: CreateVMSpec,
  ): Promise<string> {
    await this.ready();
    const compute = await this.inventory.compute(p);
    const podRef = await this.inventory.storagePod(p.datacenter, pod);
    const srm = (await this.session.serviceContent()).storageResourceManager;
    if (!srm) throw new NoStorageDrsRecommendation(pod);
    const res = await this.session.invoke("RecommendDatastores", srm, {
      storageSpec: {
        type: "create",
        podSelectionSpec: { initialVmConfig: [{ storagePod: podRef }], storagePod: podRef },
        configSpec: createConfigSpec({ ...spec, nics: [] }, "", []),
        resourcePool: compute.pool,
        folder: compute.folder,
      },
    });
    const destination = items(get(res, "recommendations"))
      .flatMap((r) => items(get(r, "action")))
      .map((a) => moRef(get(a, "destination")))
      .find((d) => d !== undefined);
    if (!destination) throw new NoStorageDrsRecommendation(pod);
    const name = str((await retrieveOne(this.session, destination, ["name"])).name);
    if (!name) throw new NoStorageDrsRecommendation(pod);
    this.log.info({ vm: spec.name, datastoreCluster: pod, datastore: name }, "Storage DRS chose");
    return name;
  }

  /**
   * The storage policy of that name, checked against the datastore: StoragePolicyNotFound or
   * StoragePolicyIncompatible (SPBM, pbm.ts).
   */
  private async storagePolicyFor(datastore: MoRef, name: string): Promise<StoragePolicy> {
    const policy = await storagePolicyByName(this.session, name);
    const ok = await compatibleDatastores(this.session, policy, [datastore.value]);
    if (!ok.length) throw new StoragePolicyIncompatible(name, datastore.value);
    return policy;
  }

  /** Throws PortGroupNotFound; distributed port groups and standard networks both count. */
  async checkPortGroup(datacenter: string, name: string): Promise<void> {
    await this.inventory.network(datacenter, name);
  }

  private async template(datacenter: string, name: string): Promise<MoRef> {
    const byPath = await this.inventory.vmByPath(datacenter, name);
    if (byPath) return byPath;
    if (!name.includes("/")) {
      const matches = this.findByName(name);
      const pick =
        matches.find((v) => v.template) ?? (matches.length === 1 ? matches[0] : undefined);
      if (pick) return new MoRef(VM_TYPE, pick.moRef);
    }
    throw new PlacementNotFound("template", name, datacenter);
  }

  // --- lifecycle ---------------------------------------------------------------------------------
  // Each change has a start* form that sends the task and returns it without waiting (what the
  // reconciler uses: the task's end wakes the owner through the shared task table), and a
  // waiting form for callers that may wait (tools, tests). A start* that finds nothing to do
  // returns undefined.

  /**
   * Starts creating (or cloning) a VM with its NICs, disk and extraConfig; power is left off.
   * The CD-ROM and boot order need the device keys vSphere assigns, so startFinishVM adds them
   * once the VM exists. Returns the task, whose result is the VM.
   */
  async startCreateVM(spec: CreateVMSpec): Promise<string> {
    validateCreateSpec(spec);
    await this.ready();
    try {
      return await this.sendCreate(spec);
    } catch (err) {
      // A remembered placement object or port group may be what went away.
      this.inventory.invalidate();
      throw err;
    }
  }

  private async sendCreate(spec: CreateVMSpec): Promise<string> {
    const { datacenter } = spec.placement;
    const placement = await this.inventory.placement(spec.placement);
    const policy = spec.placement.storagePolicy
      ? await this.storagePolicyFor(placement.datastore, spec.placement.storagePolicy)
      : undefined;
    const networks = [];
    for (const nic of spec.nics)
      networks.push(await this.inventory.network(datacenter, nic.portGroup));
    const method = spec.template ? "CloneVM_Task" : "CreateVM_Task";

    // vCenter refuses a second VM of one name in a folder; vcsim does not. Asked of vCenter, not
    // the cache: a cache behind by a stalled update loop must not lead to a second VM.
    const index = (await this.session.serviceContent()).searchIndex;
    const ref = index
      ? moRef(
          await this.session.invoke("FindChild", index, {
            entity: placement.folder,
            name: spec.name,
          }),
        )?.value
      : this.cache.all().find((v) => v.name === spec.name && v.folder === placement.folder.value)
          ?.moRef;
    if (ref) {
      const vm = await this.refresh(ref);
      if (vm && vm.ownerUID === spec.extraConfig[OWNER_UID_KEY]) throw new VMAlreadyExists(ref);
      throw new VSphereTaskError("", "DuplicateName", `${ref} already has this name`, {
        method,
        entity: spec.name,
      });
    }

    let task: MoRef | undefined;
    if (spec.template) {
      const template = await this.template(datacenter, spec.template);
      // Read from vCenter, not the cache: a cache entry taken while the template was still being
      // built (or changed since) would miss a NIC, and the clone would keep it beside ours.
      const props = await retrieveOne(this.session, template, [
        "config.hardware.device",
        "snapshot",
      ]);
      const devices = deviceList(props["config.hardware.device"]);
      let snapshot: MoRef | undefined;
      if (spec.linkedClone) {
        snapshot = moRef(get(props.snapshot, "currentSnapshot"));
        if (!snapshot) throw new TemplateHasNoSnapshot(spec.template);
      }
      const body = cloneSpec(spec, devices, placement, networks, snapshot);
      if (policy) (body.config as SpecObject).vmProfile = [profileSpec(policy)];
      task = moRef(
        await this.session.invoke(method, template, {
          folder: placement.folder,
          name: spec.name,
          spec: body,
        }),
      );
    } else {
      const config = createConfigSpec(spec, placement.datastoreName, networks);
      if (policy) withStoragePolicy(config, policy);
      task = moRef(
        await this.session.invoke(method, placement.folder, { config, pool: placement.pool }),
      );
    }
    if (!task) throw new Error(`${method} returned no task`);
    this.log.info({ vm: spec.name, task: task.value, method }, "creating VM");
    this.aboutTask(task.value, { ownerUID: spec.extraConfig[OWNER_UID_KEY] });
    return task.value;
  }

  /**
   * Creates a VM and waits until it is finished (CD-ROM, boot order, size). A VM that could not
   * be finished is destroyed again, so a retry starts clean.
   */
  async createVM(spec: CreateVMSpec): Promise<string> {
    const method = spec.template ? "CloneVM_Task" : "CreateVM_Task";
    const task = await this.startCreateVM(spec);
    const created = moRef(await this.waitTask(task, { method, entity: spec.name }));
    if (!created) throw new Error(`${method} returned no VM`);
    const ref = created.value;
    try {
      const vm = await this.refresh(ref);
      if (!vm) throw new VMNotFound(ref);
      const finish = this.finishSpec(spec, vm);
      const done = finish ? await this.reconfigure(ref, finish) : vm;
      if (done.ownerUID !== spec.extraConfig[OWNER_UID_KEY])
        throw new VSphereVerifyError(ref, `${OWNER_UID_KEY}=${spec.extraConfig[OWNER_UID_KEY]}`);
    } catch (err) {
      this.log.warn({ vm: spec.name, moRef: ref, err }, "removing unfinished VM");
      await this.destroy(ref).catch((e) =>
        this.log.error(
          { vm: spec.name, moRef: ref, err: String(e) },
          "could not remove unfinished VM",
        ),
      );
      throw err;
    }
    this.log.info({ vm: spec.name, moRef: ref }, "VM created");
    return ref;
  }

  /**
   * Starts finishing a VM that CreateVM_Task (or CloneVM_Task) made: CD-ROM, boot order,
   * extraConfig, and (with `size`) what a clone did not take over. Reads the cache; undefined
   * when nothing is missing.
   */
  async startFinishVM(ref: string, spec: CreateVMSpec, size = false): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const finish = this.finishSpec(spec, vm, size);
    if (!finish) return undefined;
    this.log.info({ moRef: ref, vm: vm.name, finish: Object.keys(finish) }, "finishing VM");
    return this.startVmTask("ReconfigVM_Task", ref, { spec: finish });
  }

  /** Whether the VM still lacks what startFinishVM adds. */
  needsFinish(ref: string, spec: CreateVMSpec): boolean {
    const vm = this.cache.get(ref);
    return !!vm && this.finishSpec(spec, vm, false) !== undefined;
  }

  /** Finishes a VM and waits (see startFinishVM); returns whether it changed the VM. */
  async finishVM(ref: string, spec: CreateVMSpec): Promise<boolean> {
    const task = await this.startFinishVM(ref, spec);
    if (!task) return false;
    await this.finished(task, "ReconfigVM_Task", ref);
    if (this.needsFinish(ref, spec)) throw new VSphereVerifyError(ref, "finished");
    return true;
  }

  /**
   * What the VM still lacks: the CD-ROM and boot order (they need the device keys vSphere
   * assigned), and whatever a clone did not take over (vcsim ignores a clone's size and
   * extraConfig).
   */
  private finishSpec(spec: CreateVMSpec, vm: VMRecord, size = true): SpecObject | undefined {
    const out: SpecObject = {};
    if (size && vm.cpus !== spec.cpus) out.numCPUs = String(spec.cpus);
    if (size && vm.memoryMiB !== spec.memoryMiB) out.memoryMB = String(spec.memoryMiB);
    if (spec.bootFromCdrom && vm.cdroms.length === 0) {
      const slot = freeIdeSlot(
        deviceList(this.cache.vmProps(vm.moRef)?.["config.hardware.device"]),
      );
      if (!slot) throw new DeviceNotFound(vm.moRef, "a free IDE slot for a CD-ROM");
      out.deviceChange = [deviceChange("add", newCdrom(-1, slot.controllerKey, slot.unitNumber))];
    }
    const extra = extraConfigDelta(extraConfigOf(this.cache.vmProps(vm.moRef)), spec.extraConfig);
    if (Object.keys(extra).length) out.extraConfig = optionValues(extra);
    const boot = bootOptionsFor(spec, vm);
    const want = boot && bootOrderSignature(boot.bootOrder as Node[]);
    if (boot && JSON.stringify(want) !== JSON.stringify(vm.bootOrder)) out.bootOptions = boot;
    return Object.keys(out).length ? out : undefined;
  }

  /** Starts powering the VM on or off (hard); undefined when it already is. */
  async startPower(ref: string, on: boolean): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const want = on ? "poweredOn" : "poweredOff";
    if (vm.powerState === want) return undefined;
    const method = on ? "PowerOnVM_Task" : "PowerOffVM_Task";
    this.log.info({ moRef: ref, vm: vm.name, method }, "changing power state");
    return this.startVmTask(method, ref);
  }

  async powerOn(ref: string): Promise<void> {
    await this.setPower(ref, true);
  }

  /** A hard power-off; a VM that is already off is left alone. */
  async powerOff(ref: string): Promise<void> {
    await this.setPower(ref, false);
  }

  private async setPower(ref: string, on: boolean): Promise<void> {
    const task = await this.startPower(ref, on);
    if (!task) return;
    try {
      await this.finished(task, on ? "PowerOnVM_Task" : "PowerOffVM_Task", ref);
    } catch (err) {
      // Someone else got there first.
      const want = on ? "poweredOn" : "poweredOff";
      if (faultName(err) !== "InvalidPowerState" || (await this.refresh(ref))?.powerState !== want)
        throw err;
    }
  }

  /**
   * Asks the guest OS to shut down (ShutdownGuest). Not a task: vCenter returns at once, and the
   * VM's power state changing to poweredOff (which wakes its owner) is the only sign it worked.
   * False when the VM is not powered on. Without VMware Tools running in the guest vCenter
   * refuses with the fault ToolsUnavailable (vcsim does not check, and powers off at once).
   */
  async startShutdownGuest(ref: string): Promise<boolean> {
    const vm = await this.vm(ref);
    if (vm.powerState !== "poweredOn") return false;
    this.log.info({ moRef: ref, vm: vm.name }, "asking the guest to shut down");
    await this.invokeOnVM("ShutdownGuest", ref);
    return true;
  }

  /**
   * Asks the guest OS to restart (RebootGuest): not a task, it returns at once and the VM stays
   * powered on. False when the VM is not powered on; ToolsUnavailable without VMware Tools.
   */
  async startRebootGuest(ref: string): Promise<boolean> {
    const vm = await this.vm(ref);
    if (vm.powerState !== "poweredOn") return false;
    this.log.info({ moRef: ref, vm: vm.name }, "asking the guest to restart");
    await this.invokeOnVM("RebootGuest", ref);
    return true;
  }

  /** Starts a hard reset (ResetVM_Task); undefined when the VM is not powered on. */
  async startReset(ref: string): Promise<string | undefined> {
    const vm = await this.vm(ref);
    if (vm.powerState !== "poweredOn") return undefined;
    this.log.info({ moRef: ref, vm: vm.name }, "resetting VM");
    return this.startVmTask("ResetVM_Task", ref);
  }

  /** Starts destroying a powered-off VM; undefined when it is gone already. */
  async startDestroy(ref: string): Promise<string | undefined> {
    await this.ready();
    const vm = this.cache.get(ref);
    if (!vm) return undefined;
    this.log.info({ moRef: ref, vm: vm.name }, "destroying VM");
    try {
      return await this.startVmTask("Destroy_Task", ref);
    } catch (err) {
      if (err instanceof VMNotFound) return undefined;
      throw err;
    }
  }

  /** Powers off and destroys the VM; a VM that is already gone is fine. */
  async destroy(ref: string): Promise<void> {
    await this.ready();
    const vm = this.cache.get(ref) ?? (await this.refresh(ref));
    if (!vm) return;
    try {
      if (vm.powerState !== "poweredOff") await this.powerOff(ref);
      const task = await this.startDestroy(ref);
      if (task) await this.finished(task, "Destroy_Task", ref);
    } catch (err) {
      if (!(err instanceof VMNotFound)) throw err;
    }
    this.cache.removeVM(ref);
  }

  /** Waits for a task on a VM, then reads the VM back; a VM gone meanwhile is VMNotFound. */
  private async finished(task: string, method: string, ref: string): Promise<VMRecord | undefined> {
    try {
      await this.waitTask(task, { method, entity: ref });
    } catch (err) {
      if (faultName(err) === "ManagedObjectNotFound") {
        this.cache.removeVM(ref);
        throw new VMNotFound(ref);
      }
      throw err;
    }
    return this.refresh(ref);
  }

  // --- reconfiguration ---------------------------------------------------------------------------

  /** Starts setting a NIC's connected and startConnected flags; undefined when they are set. */
  async startSetNicConnected(
    ref: string,
    nicKey: number,
    connected: boolean,
  ): Promise<string | undefined> {
    const vm = await this.vm(ref);
    if (!vm.nics.some((n) => n.key === nicKey)) throw new DeviceNotFound(ref, `NIC ${nicKey}`);
    if (nicConnectedAs(vm, nicKey, connected)) return undefined;
    const device = findDevice(
      deviceList(this.cache.vmProps(ref)?.["config.hardware.device"]),
      nicKey,
    );
    if (!device) throw new DeviceNotFound(ref, `NIC ${nicKey}`);
    const edited = editDevice(device, {
      startConnected: connected,
      connected: connected && vm.powerState === "poweredOn",
    });
    this.log.info({ moRef: ref, vm: vm.name, nic: nicKey, connected }, "setting NIC connection");
    return this.startVmTask("ReconfigVM_Task", ref, {
      spec: { deviceChange: [deviceChange("edit", edited)] },
    });
  }

  /**
   * Starts adding one vmxnet3 NIC per port group (in that order, after the VM's NICs), connected
   * when the VM runs; undefined when none is asked. The caller decides what is missing from the
   * VM's NICs as observed, so a repeated call after the task ended adds nothing.
   */
  async startAddNics(
    ref: string,
    datacenter: string,
    portGroups: string[],
  ): Promise<string | undefined> {
    if (!portGroups.length) return undefined;
    const vm = await this.vm(ref);
    const on = vm.powerState === "poweredOn";
    const changes: NodeObject[] = [];
    for (const [i, pg] of portGroups.entries()) {
      const nic = newNic(-400 - i, await this.inventory.network(datacenter, pg));
      nic.connectable = {
        startConnected: "true",
        allowGuestControl: "true",
        connected: String(on),
      };
      changes.push(deviceChange("add", nic));
    }
    this.log.info({ moRef: ref, vm: vm.name, portGroups }, "adding NICs");
    return this.startVmTask("ReconfigVM_Task", ref, { spec: { deviceChange: changes } });
  }

  /** Sets a NIC's connected and startConnected flags and checks the result by reading it back. */
  async setNicConnected(ref: string, nicKey: number, connected: boolean): Promise<void> {
    const task = await this.startSetNicConnected(ref, nicKey, connected);
    if (!task) return;
    const after = await this.finished(task, "ReconfigVM_Task", ref);
    if (!after || !nicConnectedAs(after, nicKey, connected))
      throw new VSphereVerifyError(ref, `NIC ${nicKey} connected=${connected}`);
  }

  /** Starts setting extraConfig keys ("" removes a key); undefined when all are as asked. */
  async startSetExtraConfig(ref: string, kv: Record<string, string>): Promise<string | undefined> {
    await this.vm(ref);
    const delta = extraConfigDelta(extraConfigOf(this.cache.vmProps(ref)), kv);
    if (Object.keys(delta).length === 0) return undefined;
    return this.startVmTask("ReconfigVM_Task", ref, {
      spec: { extraConfig: optionValues(delta) },
    });
  }

  /** Whether the VM's extraConfig holds these values ("" meaning absent). */
  hasExtraConfig(ref: string, kv: Record<string, string>): boolean {
    return Object.keys(extraConfigDelta(extraConfigOf(this.cache.vmProps(ref)), kv)).length === 0;
  }

  /** Sets extraConfig keys; a "" value removes the key. Unchanged keys send nothing. */
  async setExtraConfig(ref: string, kv: Record<string, string>): Promise<void> {
    const task = await this.startSetExtraConfig(ref, kv);
    if (!task) return;
    await this.finished(task, "ReconfigVM_Task", ref);
    for (const [k, v] of Object.entries(kv))
      if (!this.hasExtraConfig(ref, { [k]: v }))
        throw new VSphereVerifyError(
          ref,
          v === "" ? `extraConfig ${k} removed` : `extraConfig ${k}`,
        );
  }

  /** Starts changing CPU count and/or memory; undefined when the VM has that size. */
  async startResize(
    ref: string,
    size: { cpus?: number; memoryMiB?: number },
  ): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const spec: SpecObject = {};
    if (size.cpus !== undefined && size.cpus !== vm.cpus) spec.numCPUs = String(size.cpus);
    if (size.memoryMiB !== undefined && size.memoryMiB !== vm.memoryMiB)
      spec.memoryMB = String(size.memoryMiB);
    if (Object.keys(spec).length === 0) return undefined;
    this.log.info({ moRef: ref, vm: vm.name, ...size }, "resizing VM");
    return this.startVmTask("ReconfigVM_Task", ref, { spec });
  }

  /** Changes CPU count and/or memory; powered-on VMs need hot add enabled. */
  async resize(ref: string, size: { cpus?: number; memoryMiB?: number }): Promise<void> {
    const task = await this.startResize(ref, size);
    if (task) await this.finished(task, "ReconfigVM_Task", ref);
  }

  /**
   * Starts one reconfiguration of the VM's disks: grows disks (never shrinks one), removes data
   * disks vsop added (with their files), and adds thin disks on the system disk's SCSI controller,
   * each named in extraConfig (vsop.disk.<name> = its slot) by the same task, so a disk whose
   * marker names an existing slot is never added again. Undefined when nothing is left to do.
   */
  async startConfigureDisks(
    ref: string,
    datacenter: string,
    changes: DiskChanges,
  ): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const devices = deviceList(this.cache.vmProps(ref)?.["config.hardware.device"]);
    const markers = diskMarkers(vm);
    const bySlot = (slot: string | undefined) =>
      slot === undefined ? undefined : vm.disks.find((d) => d.slot === slot);
    const deviceChanges: NodeObject[] = [];
    const extra: Record<string, string> = {};
    for (const g of changes.grow) {
      const disk = vm.disks.find((d) => d.key === g.key);
      const device = findDevice(devices, g.key);
      if (!disk || !device) throw new DeviceNotFound(ref, `disk ${g.key}`);
      if (gibToKiB(g.sizeGiB) > disk.capacityKiB)
        deviceChanges.push(deviceChange("edit", resizedDisk(device, gibToKiB(g.sizeGiB))));
    }
    for (const name of changes.remove) {
      if (!markers.has(name)) continue; // never a disk vsop did not add
      const disk = bySlot(markers.get(name));
      const device = disk && findDevice(devices, disk.key);
      if (device) deviceChanges.push(deviceChange("remove", device, "destroy"));
      extra[DISK_MARKER_PREFIX + name] = "";
    }
    const adds = changes.add.filter((a) => !bySlot(markers.get(a.name)));
    if (adds.length) {
      const free = freeScsiSlots(devices, systemDisk(vm)?.key);
      if (!free) throw new DeviceNotFound(ref, "a SCSI controller for data disks");
      if (free.units.length < adds.length)
        throw new DeviceNotFound(
          ref,
          `${adds.length} free units on SCSI controller ${free.controllerKey}`,
        );
      for (const [i, a] of adds.entries()) {
        const unit = free.units[i]!;
        const ds = await this.inventory.datastoreIn(datacenter, a.datastore);
        const name = a.datastore.split("/").pop()!;
        const disk = newDisk(-300 - i, free.controllerKey, a.sizeGiB, name, unit, ds);
        deviceChanges.push(deviceChange("add", disk, "create"));
        extra[DISK_MARKER_PREFIX + a.name] = free.slot(unit);
      }
    }
    if (deviceChanges.length === 0 && Object.keys(extra).length === 0) return undefined;
    const spec: SpecObject = {};
    if (deviceChanges.length) spec.deviceChange = deviceChanges;
    if (Object.keys(extra).length) spec.extraConfig = optionValues(extra);
    this.log.debug(
      {
        moRef: ref,
        add: adds.map((a) => a.name),
        grow: changes.grow.map((g) => g.name),
        remove: changes.remove,
      },
      "configuring disks",
    );
    return this.startVmTask("ReconfigVM_Task", ref, { spec });
  }

  // --- ISO and datastore files ---------------------------------------------------------------------

  /**
   * Starts inserting ISOs ("[ds] path") into the VM's CD-ROM drives, the first into the first drive
   * (lowest IDE controller and unit: the one the firmware boots from first), adding drives where
   * the VM has too few. Undefined when every drive already carries its ISO, connected.
   */
  async startAttachIso(ref: string, paths: readonly string[]): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const devices = deviceList(this.cache.vmProps(ref)?.["config.hardware.device"]);
    const changes = isoDriveChanges(devices, paths, vm.powerState === "poweredOn");
    if (!changes) throw new DeviceNotFound(ref, "a free IDE slot for a CD-ROM");
    if (changes.length === 0) return undefined;
    this.log.info({ moRef: ref, vm: vm.name, iso: paths }, "attaching ISO");
    return this.startVmTask("ReconfigVM_Task", ref, { spec: { deviceChange: changes } });
  }

  async attachIso(ref: string, isoPath: string): Promise<void> {
    const task = await this.startAttachIso(ref, [isoPath]);
    if (!task) return;
    const after = await this.finished(task, "ReconfigVM_Task", ref);
    if (!after?.cdroms.some((c) => c.isoPath === isoPath))
      throw new VSphereVerifyError(ref, `ISO ${isoPath} attached`);
  }

  /** Starts removing every ISO from the VM's CD-ROM drives; undefined when none holds one. */
  async startDetachIso(ref: string): Promise<string | undefined> {
    const vm = await this.vm(ref);
    const withIso = vm.cdroms.filter((c) => c.isoPath !== undefined);
    if (withIso.length === 0) return undefined;
    const devices = deviceList(this.cache.vmProps(ref)?.["config.hardware.device"]);
    const changes = withIso.map((c) =>
      deviceChange(
        "edit",
        editDevice(findDevice(devices, c.key)!, {
          startConnected: false,
          connected: false,
          backing: emptyCdromBacking(),
        }),
      ),
    );
    this.log.info({ moRef: ref, vm: vm.name }, "detaching ISO");
    return this.startVmTask("ReconfigVM_Task", ref, { spec: { deviceChange: changes } });
  }

  async detachIso(ref: string): Promise<void> {
    const task = await this.startDetachIso(ref);
    if (!task) return;
    const after = await this.finished(task, "ReconfigVM_Task", ref);
    if (after?.cdroms.some((c) => c.isoPath !== undefined))
      throw new VSphereVerifyError(ref, "no ISO attached");
  }

  /** Writes a file to a datastore (HTTP PUT /folder with the session cookie). */
  async uploadFile(datacenter: string, ds: string, path: string, data: Buffer): Promise<void> {
    await datastore.uploadFile(this.session, { datacenter, datastore: ds, path }, data, (m) =>
      this.count(m),
    );
    this.log.info({ datastore: ds, path, bytes: data.length }, "uploaded datastore file");
  }

  /** Reads a few bytes of a datastore file (HTTP Range); DatastoreFileNotFound when missing. */
  async readFileRange(
    datacenter: string,
    ds: string,
    path: string,
    offset: number,
    length: number,
  ): Promise<Buffer> {
    return datastore.readFileRange(
      this.session,
      { datacenter, datastore: ds, path },
      offset,
      length,
      (m) => this.count(m),
    );
  }

  /** Starts deleting a datastore file or directory (a FileNotFound end means it was gone). */
  async startDeleteFile(datacenter: string, ds: string, path: string): Promise<string> {
    const dc = await this.inventory.datacenter(datacenter);
    const task = await datastore.startDeleteFile(this.session, dc, ds, path);
    this.log.info({ datastore: ds, path }, "deleting datastore file");
    return task;
  }

  /** Deletes a datastore file or directory; a missing file is fine. */
  async deleteFile(datacenter: string, ds: string, path: string): Promise<void> {
    const task = await this.startDeleteFile(datacenter, ds, path);
    try {
      await this.waitTask(task, { method: "DeleteDatastoreFile_Task", entity: path });
    } catch (err) {
      if (faultName(err) !== "FileNotFound") throw err;
    }
  }
}

/** Whether a NIC's flags say `connected` (a powered-off VM: only startConnected counts). */
export function nicConnectedAs(vm: VMRecord, nicKey: number, connected: boolean): boolean {
  const nic = vm.nics.find((n) => n.key === nicKey);
  return (
    !!nic &&
    nic.startConnected === connected &&
    (vm.powerState !== "poweredOn" || nic.connected === connected)
  );
}
