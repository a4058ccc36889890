// The vSphere operations the reconciler calls. Reads come from a cache that an update loop keeps
// current, so a reconcile costs no SOAP request to observe; every change is a task awaited by
// property updates, after which the VM is read back into the cache.
import type { Logger } from "pino";
import { VSphereSession } from "./session.js";
import { MoRef, type Node } from "./xml.js";
import { moRef } from "./nodes.js";
import { VSphereFault, VSphereTaskError, faultName } from "./errors.js";
import { retrieve, propertySpec } from "./properties.js";
import { TaskWaiter } from "./tasks.js";
import { VMCache } from "./cache.js";
import { UpdateLoop } from "./watch.js";
import { Inventory, PlacementNotFound } from "./inventory.js";
import * as datastore from "./datastore.js";
import {
  deviceChange,
  deviceList,
  editDevice,
  emptyCdromBacking,
  findDevice,
  freeIdeSlot,
  isoBacking,
  newCdrom,
} from "./devices.js";
import {
  DeviceNotFound,
  OWNER_UID_KEY,
  VMNotFound,
  VM_PROPERTIES,
  VSphereVerifyError,
  bootOptionsFor,
  bootOrderSignature,
  cloneSpec,
  createConfigSpec,
  extraConfigDelta,
  extraConfigOf,
  optionValues,
  validateCreateSpec,
  type CreateVMSpec,
  type Placement,
  type SpecObject,
  type VMRecord,
} from "./vms.js";

export type { CreateVMSpec, NicSpec, Placement, VMRecord } from "./vms.js";
export type { NicRecord, CdromRecord, DiskRecord, ScsiKind } from "./devices.js";
export { InvalidVMSpec, VMNotFound, DeviceNotFound, VSphereVerifyError } from "./vms.js";
export { PlacementNotFound, PortGroupNotFound } from "./inventory.js";
export { DatastoreUploadFailed, datastorePath } from "./datastore.js";

export interface VCenterOptions {
  /** SDK URL, e.g. https://vcenter.example.com/sdk */
  url: string;
  caBundle?: string;
  insecureSkipVerify?: boolean;
  username: string;
  password: string;
  logger: Logger;
  /** Called once per request (SOAP method name, or DatastoreFileUpload), for metrics. */
  onCall?: (method: string) => void;
  /** How long a task may run before VSphereTaskError "TaskTimeout" (default 15 min). */
  taskTimeoutMs?: number;
  /** Longest server-side wait of one WaitForUpdatesEx (default 20 s). */
  maxWaitSeconds?: number;
  /** How long a found placement object or port group is remembered (default 60 s). */
  inventoryTtlMs?: number;
  /** How long an operation waits for the first sync of the cache (default 30 s). */
  syncTimeoutMs?: number;
  /** Update loop retry delays after failures (default 500 ms doubling to 30 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

const VM_TYPE = "VirtualMachine";

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

export class VCenter {
  readonly session: VSphereSession;
  private readonly log: Logger;
  private readonly cache = new VMCache();
  private readonly inventory: Inventory;
  private readonly tasks: TaskWaiter;
  private readonly loop: UpdateLoop;
  private readonly counts = new Map<string, number>();
  private readonly syncTimeoutMs: number;
  private started = false;

  constructor(private readonly opts: VCenterOptions) {
    const maxWaitSeconds = opts.maxWaitSeconds ?? 20;
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
        timeoutMs: Math.max(60_000, (maxWaitSeconds + 30) * 1000),
        onCall: (method) => this.count(method),
      },
      { username: opts.username, password: opts.password },
    );
    this.inventory = new Inventory(this.session, opts.inventoryTtlMs ?? 60_000);
    this.tasks = new TaskWaiter(this.session, this.log, opts.taskTimeoutMs ?? 15 * 60_000);
    this.loop = new UpdateLoop(
      this.session,
      this.cache,
      this.log,
      {
        maxWaitSeconds,
        backoffBaseMs: opts.backoffBaseMs ?? 500,
        backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      },
      () => {
        this.tasks.reset();
        this.inventory.invalidate();
      },
    );
    this.syncTimeoutMs = opts.syncTimeoutMs ?? 30_000;
  }

  private count(method: string): void {
    this.counts.set(method, (this.counts.get(method) ?? 0) + 1);
    this.opts.onCall?.(method);
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
    await this.loop.stop();
    await this.session.logout();
    this.tasks.reset();
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
    const owned = this.cache.all().filter((vm) => vm.ownerUID === uid);
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

  /** Starts a task on a VM and waits for it; a VM that is gone becomes VMNotFound. */
  private async vmTask(
    method: string,
    ref: string,
    args: SpecObject = {},
  ): Promise<Node | undefined> {
    try {
      const task = moRef(await this.session.invoke(method, new MoRef(VM_TYPE, ref), args));
      if (!task) throw new Error(`${method} returned no task`);
      return await this.tasks.wait(task, { method, entity: ref });
    } catch (err) {
      if (faultName(err) === "ManagedObjectNotFound") {
        this.cache.removeVM(ref);
        throw new VMNotFound(ref);
      }
      throw err;
    }
  }

  /** ReconfigVM_Task, then the VM read back into the cache. */
  private async reconfigure(ref: string, spec: SpecObject): Promise<VMRecord> {
    await this.vmTask("ReconfigVM_Task", ref, { spec });
    const vm = await this.refresh(ref);
    if (!vm) throw new VMNotFound(ref);
    return vm;
  }

  // --- placement ---------------------------------------------------------------------------------

  /** Throws PlacementNotFound naming the first missing part. */
  async checkPlacement(p: Placement): Promise<void> {
    await this.inventory.placement(p);
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

  /**
   * Creates (or clones) a VM with its NICs, disk, extraConfig and boot order; power is left off.
   * A VM that could not be finished (boot order) is destroyed again, so a retry starts clean.
   */
  async createVM(spec: CreateVMSpec): Promise<string> {
    validateCreateSpec(spec);
    await this.ready();
    try {
      return await this.create(spec);
    } catch (err) {
      // A remembered placement object or port group may be what went away.
      this.inventory.invalidate();
      throw err;
    }
  }

  private async create(spec: CreateVMSpec): Promise<string> {
    const { datacenter } = spec.placement;
    const placement = await this.inventory.placement(spec.placement);
    const networks = [];
    for (const nic of spec.nics)
      networks.push(await this.inventory.network(datacenter, nic.portGroup));
    const method = spec.template ? "CloneVM_Task" : "CreateVM_Task";

    // vCenter refuses a second VM of one name in a folder; vcsim does not, so check here too.
    const dup = this.cache
      .all()
      .find((v) => v.name === spec.name && v.folder === placement.folder.value);
    if (dup)
      throw new VSphereTaskError("", "DuplicateName", `${dup.moRef} already has this name`, {
        method,
        entity: spec.name,
      });

    let task: MoRef | undefined;
    if (spec.template) {
      const template = await this.template(datacenter, spec.template);
      if (!this.cache.vmProps(template.value)) await this.refresh(template.value);
      const devices = deviceList(this.cache.vmProps(template.value)?.["config.hardware.device"]);
      const body = cloneSpec(spec, devices, placement, networks);
      task = moRef(
        await this.session.invoke(method, template, {
          folder: placement.folder,
          name: spec.name,
          spec: body,
        }),
      );
    } else {
      const config = createConfigSpec(spec, placement.datastoreName, networks);
      task = moRef(
        await this.session.invoke(method, placement.folder, { config, pool: placement.pool }),
      );
    }
    if (!task) throw new Error(`${method} returned no task`);
    this.log.info({ vm: spec.name, task: task.value, method }, "creating VM");
    const created = moRef(await this.tasks.wait(task, { method, entity: spec.name }));
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
   * Finishes a VM that CreateVM_Task (or CloneVM_Task) made but that was never finished, e.g.
   * because the operator was killed in between: CD-ROM, boot order, extraConfig. Reads the
   * cache; sends a ReconfigVM_Task only when something is missing. Size is left to resize().
   * Returns whether it changed the VM.
   */
  async finishVM(ref: string, spec: CreateVMSpec): Promise<boolean> {
    const vm = await this.vm(ref);
    const finish = this.finishSpec(spec, vm, false);
    if (!finish) return false;
    this.log.info({ moRef: ref, vm: vm.name, finish: Object.keys(finish) }, "finishing VM");
    const after = await this.reconfigure(ref, finish);
    if (this.finishSpec(spec, after, false))
      throw new VSphereVerifyError(ref, `finished (${Object.keys(finish).join(", ")})`);
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

  async powerOn(ref: string): Promise<void> {
    await this.setPower(ref, "poweredOn", "PowerOnVM_Task");
  }

  /** A hard power-off; a VM that is already off is left alone. */
  async powerOff(ref: string): Promise<void> {
    await this.setPower(ref, "poweredOff", "PowerOffVM_Task");
  }

  private async setPower(ref: string, want: string, method: string): Promise<void> {
    const vm = await this.vm(ref);
    if (vm.powerState === want) return;
    this.log.info({ moRef: ref, vm: vm.name, method }, "changing power state");
    try {
      await this.vmTask(method, ref);
    } catch (err) {
      // Someone else got there first.
      if (faultName(err) !== "InvalidPowerState" || (await this.refresh(ref))?.powerState !== want)
        throw err;
      return;
    }
    await this.refresh(ref);
  }

  /** Powers off and destroys the VM; a VM that is already gone is fine. */
  async destroy(ref: string): Promise<void> {
    await this.ready();
    const vm = this.cache.get(ref) ?? (await this.refresh(ref));
    if (!vm) return;
    try {
      if (vm.powerState !== "poweredOff") await this.powerOff(ref);
      this.log.info({ moRef: ref, vm: vm.name }, "destroying VM");
      await this.vmTask("Destroy_Task", ref);
    } catch (err) {
      if (!(err instanceof VMNotFound)) throw err;
    }
    this.cache.removeVM(ref);
  }

  // --- reconfiguration ---------------------------------------------------------------------------

  /** Sets a NIC's connected and startConnected flags and checks the result by reading it back. */
  async setNicConnected(ref: string, nicKey: number, connected: boolean): Promise<void> {
    const vm = await this.vm(ref);
    const ok = (r: VMRecord | undefined) => {
      const nic = r?.nics.find((n) => n.key === nicKey);
      // A powered-off VM has nothing connected; startConnected is what counts then.
      return (
        !!nic &&
        nic.startConnected === connected &&
        (r!.powerState !== "poweredOn" || nic.connected === connected)
      );
    };
    if (!vm.nics.some((n) => n.key === nicKey)) throw new DeviceNotFound(ref, `NIC ${nicKey}`);
    if (ok(vm)) return;
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
    const after = await this.reconfigure(ref, { deviceChange: [deviceChange("edit", edited)] });
    if (!ok(after)) throw new VSphereVerifyError(ref, `NIC ${nicKey} connected=${connected}`);
  }

  /** Sets extraConfig keys; a "" value removes the key. Unchanged keys send nothing. */
  async setExtraConfig(ref: string, kv: Record<string, string>): Promise<void> {
    await this.vm(ref);
    const delta = extraConfigDelta(extraConfigOf(this.cache.vmProps(ref)), kv);
    if (Object.keys(delta).length === 0) return;
    const after = await this.reconfigure(ref, { extraConfig: optionValues(delta) });
    const now = extraConfigOf(this.cache.vmProps(after.moRef));
    for (const [k, v] of Object.entries(delta))
      if (v === "" ? k in now : now[k] !== v)
        throw new VSphereVerifyError(
          ref,
          v === "" ? `extraConfig ${k} removed` : `extraConfig ${k}`,
        );
  }

  /** Changes CPU count and/or memory; powered-on VMs need hot add enabled. */
  async resize(ref: string, size: { cpus?: number; memoryMiB?: number }): Promise<void> {
    const vm = await this.vm(ref);
    const spec: SpecObject = {};
    if (size.cpus !== undefined && size.cpus !== vm.cpus) spec.numCPUs = String(size.cpus);
    if (size.memoryMiB !== undefined && size.memoryMiB !== vm.memoryMiB)
      spec.memoryMB = String(size.memoryMiB);
    if (Object.keys(spec).length === 0) return;
    this.log.info({ moRef: ref, vm: vm.name, ...size }, "resizing VM");
    await this.reconfigure(ref, spec);
  }

  // --- ISO and datastore files ---------------------------------------------------------------------

  /** Inserts an ISO ("[ds] path") into the VM's CD-ROM, adding a drive when it has none. */
  async attachIso(ref: string, isoPath: string): Promise<void> {
    const vm = await this.vm(ref);
    const on = vm.powerState === "poweredOn";
    const current = vm.cdroms.find((c) => c.isoPath === isoPath);
    if (current?.startConnected && (!on || current.connected)) return;
    const devices = deviceList(this.cache.vmProps(ref)?.["config.hardware.device"]);
    const cd = current ?? vm.cdroms[0];
    let change;
    if (cd) {
      const device = findDevice(devices, cd.key)!;
      const edited = editDevice(device, {
        startConnected: true,
        connected: on,
        backing: isoBacking(isoPath),
      });
      change = deviceChange("edit", edited);
    } else {
      const slot = freeIdeSlot(devices);
      if (!slot) throw new DeviceNotFound(ref, "a free IDE slot for a CD-ROM");
      const drive = editDevice(newCdrom(-1, slot.controllerKey, slot.unitNumber), {
        startConnected: true,
        connected: on,
        backing: isoBacking(isoPath),
      });
      change = deviceChange("add", drive);
    }
    this.log.info({ moRef: ref, vm: vm.name, iso: isoPath }, "attaching ISO");
    const after = await this.reconfigure(ref, { deviceChange: [change] });
    if (!after.cdroms.some((c) => c.isoPath === isoPath))
      throw new VSphereVerifyError(ref, `ISO ${isoPath} attached`);
  }

  /** Removes every ISO from the VM's CD-ROM drives and disconnects them. */
  async detachIso(ref: string): Promise<void> {
    const vm = await this.vm(ref);
    const withIso = vm.cdroms.filter((c) => c.isoPath !== undefined);
    if (withIso.length === 0) return;
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
    const after = await this.reconfigure(ref, { deviceChange: changes });
    if (after.cdroms.some((c) => c.isoPath !== undefined))
      throw new VSphereVerifyError(ref, "no ISO attached");
  }

  /** Writes a file to a datastore (HTTP PUT /folder with the session cookie). */
  async uploadFile(datacenter: string, ds: string, path: string, data: Buffer): Promise<void> {
    await datastore.uploadFile(this.session, { datacenter, datastore: ds, path }, data, (m) =>
      this.count(m),
    );
    this.log.info({ datastore: ds, path, bytes: data.length }, "uploaded datastore file");
  }

  /** Deletes a datastore file or directory; a missing file is fine. */
  async deleteFile(datacenter: string, ds: string, path: string): Promise<void> {
    const dc = await this.inventory.datacenter(datacenter);
    await datastore.deleteFile(this.session, this.tasks, dc, ds, path);
    this.log.info({ datastore: ds, path }, "deleted datastore file");
  }
}
