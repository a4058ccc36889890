// An in-memory vCenter behind the steps' VSpherePort: started tasks stay running until the test
// ends them (finish / fail), and only then change the VMs, as vCenter would.
import type { CreateVMSpec, DiskChanges, VMRecord } from "../../src/vsphere/vcenter.js";
import { DISK_MARKER_PREFIX, diskMarkers, gibToKiB } from "../../src/vsphere/vms.js";
import { DatastoreFileNotFound, DuplicateOwnerMarker } from "../../src/vsphere/vcenter.js";
import { VSphereFault } from "../../src/vsphere/errors.js";
import type { TaskState } from "../../src/vsphere/task-state.js";
import type { InFlightTask } from "../../src/vsphere/vcenter.js";
import type { VSpherePort } from "../../src/reconcile/engine/ports.js";

interface FakeTask {
  method: string;
  state: TaskState;
  apply: () => void;
}

export class FakeVSphere implements VSpherePort {
  readonly vms = new Map<string, VMRecord>();
  readonly tasks = new Map<string, FakeTask>();
  /** Every task started, as "Method target". */
  readonly started: string[] = [];
  private readonly inflight = new Map<string, InFlightTask>();
  private n = 0;

  synced = () => true;
  lastError = () => undefined;
  get = (ref: string) => this.vms.get(ref);
  findByName = (name: string) => [...this.vms.values()].filter((v) => v.name === name);
  findByOwnerUID(uid: string) {
    const owned = [...this.vms.values()].filter((v) => v.ownerUID === uid);
    if (owned.length > 1) throw new DuplicateOwnerMarker(owned);
    return owned[0];
  }
  checkPlacement = async () => undefined;
  /** Storage DRS's answer for any datastore cluster (recommendDatastore). */
  recommended = "PodDS_1";
  recommendDatastore = async (_p: unknown, _pod: string, _spec?: CreateVMSpec) => this.recommended;
  checkPortGroup = async () => undefined;

  /** Adds a VM as vCenter holds it (defaults: 2 CPUs, 2048 MiB, hot add on, powered off, no Tools). */
  addVM(vm: Partial<VMRecord> & { name: string }): VMRecord {
    const rec: VMRecord = {
      moRef: `vm-${++this.n}`,
      powerState: "poweredOff",
      toolsRunning: false,
      template: false,
      cpus: 2,
      memoryMiB: 2048,
      cpuHotAddEnabled: true,
      memoryHotAddEnabled: true,
      nics: [],
      cdroms: [],
      disks: [],
      extraConfig: {},
      bootOrder: ["set"],
      ...vm,
    };
    this.vms.set(rec.moRef, rec);
    return rec;
  }

  /** Ends a running task: success applies its change; a fault leaves the VMs as they were. */
  end(task: string, fault?: string): void {
    const t = this.tasks.get(task);
    if (!t || t.state.state !== "running") throw new Error(`${task} is not running`);
    if (fault) t.state = { state: "error", fault, message: `${fault} (fake)` };
    else {
      t.apply();
      t.state = { state: "success" };
    }
  }

  /** Ends every running task successfully. */
  endAll(): void {
    for (const [ref, t] of this.tasks) if (t.state.state === "running") this.end(ref);
  }

  private start(method: string, target: string, apply: () => void): Promise<string> {
    const ref = `task-${++this.n}`;
    this.tasks.set(ref, { method, state: { state: "running" }, apply });
    this.started.push(`${method} ${target}`);
    return Promise.resolve(ref);
  }

  private vm(ref: string): VMRecord {
    const vm = this.vms.get(ref);
    if (!vm) throw new Error(`no VM ${ref}`);
    return vm;
  }

  private change(ref: string, patch: Partial<VMRecord>): void {
    this.vms.set(ref, { ...this.vm(ref), ...patch });
  }

  startCreateVM(spec: CreateVMSpec) {
    return this.start("CreateVM", spec.name, () =>
      this.addVM({
        name: spec.name,
        cpus: spec.cpus,
        memoryMiB: spec.memoryMiB,
        ownerUID: spec.extraConfig["vsop.owner-uid"],
        owner: spec.extraConfig["vsop.owner"],
        extraConfig: { ...spec.extraConfig },
        nics: spec.nics.map((n, i) => ({
          key: 4000 + i,
          label: `Network adapter ${i + 1}`,
          portGroup: n.portGroup,
          connected: false,
          startConnected: true,
        })),
        bootOrder: [],
      }),
    );
  }

  async startFinishVM(ref: string) {
    if (this.vm(ref).bootOrder.length) return undefined;
    return this.start("FinishVM", ref, () => this.change(ref, { bootOrder: ["set"] }));
  }

  async startPower(ref: string, on: boolean) {
    const vm = this.vm(ref);
    const want = on ? "poweredOn" : "poweredOff";
    if (vm.powerState === want) return undefined;
    return this.start(on ? "PowerOn" : "PowerOff", ref, () =>
      this.change(ref, {
        powerState: want,
        nics: this.vm(ref).nics.map((n) => ({ ...n, connected: on && n.startConnected })),
      }),
    );
  }

  /**
   * Guest operations are no tasks: they return at once, recorded in `started`; like vCenter they
   * need VMware Tools (ToolsUnavailable). The guest acts when the test says (`guestPower`).
   */
  private guestOp(method: string, ref: string): boolean {
    const vm = this.vm(ref);
    if (vm.powerState !== "poweredOn") return false;
    if (!vm.toolsRunning) throw new VSphereFault("ToolsUnavailable", method, "(fake)");
    this.started.push(`${method} ${ref}`);
    return true;
  }
  async startShutdownGuest(ref: string) {
    return this.guestOp("ShutdownGuest", ref);
  }
  async startRebootGuest(ref: string) {
    return this.guestOp("RebootGuest", ref);
  }
  /** What the guest does after ShutdownGuest: its VM's power state changes, no task. */
  guestPower(ref: string, powerState: string): void {
    this.change(ref, { powerState });
  }

  async startReset(ref: string) {
    if (this.vm(ref).powerState !== "poweredOn") return undefined;
    return this.start("Reset", ref, () => undefined);
  }

  async startDestroy(ref: string) {
    if (!this.vms.has(ref)) return undefined;
    return this.start("Destroy", ref, () => this.vms.delete(ref));
  }

  async startResize(ref: string, size: { cpus?: number; memoryMiB?: number }) {
    const vm = this.vm(ref);
    if (vm.cpus === size.cpus && vm.memoryMiB === size.memoryMiB) return undefined;
    return this.start("Resize", ref, () =>
      this.change(ref, { cpus: size.cpus ?? vm.cpus, memoryMiB: size.memoryMiB ?? vm.memoryMiB }),
    );
  }

  /** As vCenter: adds (at the next free scsi0 unit, marker set), grows, removes; never shrinks. */
  async startConfigureDisks(ref: string, _dc: string, c: DiskChanges) {
    const vm = this.vm(ref);
    const markers = diskMarkers(vm);
    const has = (name: string) => vm.disks.some((d) => d.slot === markers.get(name));
    const add = c.add.filter((a) => !has(a.name));
    const grow = c.grow.filter(
      (g) => gibToKiB(g.sizeGiB) > (vm.disks.find((d) => d.key === g.key)?.capacityKiB ?? Infinity),
    );
    const remove = c.remove.filter((n) => markers.has(n));
    if (add.length + grow.length + remove.length === 0) return undefined;
    return this.start("ConfigureDisks", ref, () => {
      const now = this.vm(ref);
      let disks = now.disks.map((d) => {
        const g = grow.find((x) => x.key === d.key);
        return g ? { ...d, capacityKiB: gibToKiB(g.sizeGiB) } : d;
      });
      const extraConfig = { ...now.extraConfig };
      for (const name of remove) {
        disks = disks.filter((d) => d.slot !== extraConfig[DISK_MARKER_PREFIX + name]);
        delete extraConfig[DISK_MARKER_PREFIX + name];
      }
      for (const a of add) {
        const used = new Set(disks.map((d) => d.slot));
        const unit = [...Array(16).keys()].find((u) => u !== 7 && !used.has(`scsi0:${u}`))!;
        disks = [
          ...disks,
          {
            key: 2000 + unit,
            capacityKiB: gibToKiB(a.sizeGiB),
            fileName: `[${a.datastore}] ${now.name}/${now.name}_${unit}.vmdk`,
            slot: `scsi0:${unit}`,
          },
        ];
        extraConfig[DISK_MARKER_PREFIX + a.name] = `scsi0:${unit}`;
      }
      this.change(ref, { disks, extraConfig });
    });
  }

  /** As vCenter: one NIC per port group after the VM's NICs, connected when the VM runs. */
  async startAddNics(ref: string, _dc: string, portGroups: string[]) {
    if (!portGroups.length) return undefined;
    return this.start("AddNics", ref, () => {
      const now = this.vm(ref);
      const on = now.powerState === "poweredOn";
      const last = Math.max(3999, ...now.nics.map((n) => n.key));
      const added = portGroups.map((portGroup, i) => ({
        key: last + 1 + i,
        label: `Network adapter ${now.nics.length + 1 + i}`,
        portGroup,
        connected: on,
        startConnected: true,
      }));
      this.change(ref, { nics: [...now.nics, ...added] });
    });
  }

  async startSetNicConnected(ref: string, key: number, connected: boolean) {
    const nic = this.vm(ref).nics.find((n) => n.key === key)!;
    if (nic.startConnected === connected && nic.connected === connected) return undefined;
    return this.start("SetNic", ref, () =>
      this.change(ref, {
        nics: this.vm(ref).nics.map((n) =>
          n.key === key ? { ...n, connected, startConnected: connected } : n,
        ),
      }),
    );
  }

  async startSetExtraConfig(ref: string, kv: Record<string, string>) {
    const now = this.vm(ref).extraConfig;
    if (Object.entries(kv).every(([k, v]) => (v === "" ? !(k in now) : now[k] === v)))
      return undefined;
    return this.start("SetExtraConfig", ref, () => {
      const next = { ...this.vm(ref).extraConfig };
      for (const [k, v] of Object.entries(kv))
        if (v === "") delete next[k];
        else next[k] = v;
      const owner = next["vsop.owner-uid"];
      this.change(ref, { extraConfig: next, ownerUID: owner, owner: next["vsop.owner"] });
    });
  }

  async startAttachIso(ref: string, paths: readonly string[]) {
    return this.start("AttachISO", ref, () =>
      this.change(ref, {
        cdroms: paths.map((isoPath, i) => ({
          key: 3000 + i,
          isoPath,
          connected: true,
          startConnected: true,
        })),
      }),
    );
  }

  async startDetachIso(ref: string) {
    if (!this.vm(ref).cdroms.some((c) => c.isoPath)) return undefined;
    return this.start("DetachISO", ref, () => this.change(ref, { cdroms: [] }));
  }

  readonly files = new Set<string>();
  startDeleteFile(_dc: string, _ds: string, path: string) {
    return this.start("DeleteFile", path, () => this.files.delete(path));
  }
  async uploadFile(_dc: string, _ds: string, path: string) {
    this.files.add(path);
  }
  /** Images readFileRange serves, by datastore path ("[ds] path"). */
  readonly images = new Map<string, Buffer>();
  /** Every readFileRange, as "[ds] path@offset+length". */
  readonly reads: string[] = [];
  async readFileRange(_dc: string, ds: string, path: string, offset: number, length: number) {
    this.reads.push(`[${ds}] ${path}@${offset}+${length}`);
    const image = this.images.get(`[${ds}] ${path}`);
    if (!image) throw new DatastoreFileNotFound(ds, path);
    return image.subarray(offset, offset + length);
  }

  async taskState(task: string): Promise<TaskState> {
    return this.tasks.get(task)?.state ?? { state: "gone" };
  }
  track(task: InFlightTask, key: string) {
    this.inflight.set(key, task);
  }
  inFlight = (key: string) => this.inflight.get(key);
  forget(key: string, task: string) {
    if (this.inflight.get(key)?.moRef === task) this.inflight.delete(key);
  }
}
