// The floor of `make bench`: the work vsop does to create and power on N VMs, done as directly as
// vim25 and the API server allow, so vsop's time can be read as a ratio to it.
//   vim25: one session; the placement looked up once; every CreateVM_Task issued at once (the
//   config spec vsop sends, built by the same createConfigSpec); one PropertyCollector filter over
//   all N tasks, waited with WaitForUpdatesEx; then every PowerOnVM_Task at once, waited alike.
//   API server: per object one merge patch (the finalizer, sent from the start) and one status
//   write (once its VM is on), `workers` requests at a time, as vsop's workers could.
// vsop's SOAP session, encoding and spec builder are reused (same wire, same calls counted); its
// VCenter class, VM cache and task waiter are not.
import type { Kube } from "../src/controller/kube.js";
import { FINALIZER, type VirtualServer } from "../src/api/types.js";
import { parseUpdateSet } from "../src/vsphere/cache.js";
import { get, moRef, str, typeOf } from "../src/vsphere/nodes.js";
import { retrieveOne } from "../src/vsphere/properties.js";
import { VSphereSession } from "../src/vsphere/session.js";
import { createConfigSpec, OWNER_KEY, OWNER_UID_KEY } from "../src/vsphere/vms.js";
import type { MoRef, Node } from "../src/vsphere/xml.js";
import { limit, serversPath } from "./bench-kube.js";

export type Counts = Record<string, number>;

export interface FloorOptions {
  vcenter: { url: string; username: string; password: string; caBundle: string };
  /** The class's placement and the servers' port group, as vsop would resolve them. */
  placement: { datacenter: string; cluster: string; datastore: string; portGroup: string };
  /** Counted client as vsop's ServiceAccount. */
  kube: Kube;
  ns: string;
  /** The VirtualServers, already created (setup, not timed). */
  servers: VirtualServer[];
  workers: number;
  /** Per task; the floor gives up after it. */
  taskTimeoutMs: number;
}

export interface FloorResult {
  /** From the first SOAP call until every CreateVM_Task had succeeded. */
  createdMs: number;
  poweredOnMs: number;
  /** Until the last status write too. */
  totalMs: number;
  soap: Counts;
  kube: Counts;
}

const TASK_PROPERTIES = ["info.state", "info.result", "info.error"];

/** Waits for all tasks through one filter; `onDone(i, result)` as each one succeeds. */
async function waitAll(
  session: VSphereSession,
  pc: MoRef,
  tasks: MoRef[],
  timeoutMs: number,
  onDone: (i: number, result: Node | undefined) => void,
): Promise<void> {
  const filter = (await session.invoke("CreateFilter", pc, {
    spec: {
      propSet: [{ type: "Task", all: false, pathSet: TASK_PROPERTIES }],
      objectSet: tasks.map((obj) => ({ obj, skip: false })),
    },
    partialUpdates: false,
  })) as MoRef;
  const index = new Map(tasks.map((t, i) => [t.value, i]));
  const props = tasks.map(() => ({}) as Record<string, Node | undefined>);
  const done = new Set<number>();
  const deadline = Date.now() + timeoutMs;
  let version = "";
  while (done.size < tasks.length) {
    if (Date.now() > deadline)
      throw new Error(`floor: ${tasks.length - done.size} tasks not done in ${timeoutMs} ms`);
    const set = parseUpdateSet(
      await session.invoke("WaitForUpdatesEx", pc, { version, options: { maxWaitSeconds: 20 } }),
    );
    if (!set) continue;
    version = set.version;
    for (const u of set.updates) {
      const i = index.get(u.obj.value);
      if (i === undefined || done.has(i)) continue;
      for (const c of u.changeSet) props[i]![c.name] = c.val;
      const state = str(props[i]!["info.state"]);
      if (state === "error") {
        const fault = typeOf(get(props[i]!["info.error"], "fault")) ?? "Unknown";
        throw new Error(`floor: task ${u.obj.value} failed: ${fault}`);
      }
      if (state !== "success") continue;
      done.add(i);
      onDone(i, props[i]!["info.result"]);
    }
  }
  await session.invoke("DestroyPropertyFilter", filter);
}

export async function runFloor(o: FloorOptions): Promise<FloorResult> {
  const soap: Counts = {};
  const kube: Counts = {};
  o.kube.countRequests((method) => void (kube[method] = (kube[method] ?? 0) + 1));
  const session = new VSphereSession(
    {
      url: o.vcenter.url,
      caBundle: o.vcenter.caBundle,
      // A task's time, not a call's: under 1,000 tasks at once vcsim's calls stall (at 60 s
      // the N=1000 floor failed; with this it finished, in 149 s).
      timeoutMs: o.taskTimeoutMs,
      onCall: (m) => void (soap[m] = (soap[m] ?? 0) + 1),
    },
    { username: o.vcenter.username, password: o.vcenter.password },
  );
  const run = limit(o.workers);
  const path = (vs: VirtualServer) => `${serversPath(o.ns)}/${vs.metadata.name}`;
  const t0 = Date.now();

  // The finalizers go out at once, beside the vim25 work (vsop writes them first, too).
  const patched = o.servers.map((vs) =>
    run(() =>
      o.kube.mergePatch<VirtualServer>(path(vs), { metadata: { finalizers: [FINALIZER] } }),
    ),
  );
  const statusWrites: Promise<unknown>[] = [];
  // Awaited later; a failure before then must not count as an unhandled rejection.
  for (const p of patched) p.catch(() => undefined);

  const vim = (async () => {
    const sc = await session.serviceContent();
    const find = async (p: string) => {
      const ref = moRef(
        await session.invoke("FindByInventoryPath", sc.searchIndex!, { inventoryPath: p }),
      );
      if (!ref) throw new Error(`floor: ${p} not found`);
      return ref;
    };
    const { datacenter: dc, cluster, datastore, portGroup } = o.placement;
    const [folder, clusterRef, pgRef] = await Promise.all([
      find(`${dc}/vm`),
      find(`${dc}/host/${cluster}`),
      find(`${dc}/network/${portGroup}`),
    ]);
    const [clusterProps, pgProps] = await Promise.all([
      retrieveOne(session, clusterRef, ["resourcePool"]),
      retrieveOne(session, pgRef, ["key", "config.distributedVirtualSwitch"]),
    ]);
    const pool = moRef(clusterProps.resourcePool)!;
    const dvs = moRef(pgProps["config.distributedVirtualSwitch"])!;
    const switchUuid = str((await retrieveOne(session, dvs, ["uuid"])).uuid)!;
    const network = {
      kind: "distributed" as const,
      name: portGroup,
      portgroupKey: str(pgProps.key)!,
      switchUuid,
    };

    const createTasks = await Promise.all(
      o.servers.map(async (vs) => {
        const config = createConfigSpec(
          {
            name: vs.spec.hostname.split(".")[0]!,
            placement: { datacenter: dc, cluster, datastore },
            guestId: "otherLinux64Guest",
            cpus: 2,
            memoryMiB: 2048,
            diskGiB: 20,
            nics: [{ portGroup, role: "service" }],
            extraConfig: {
              [OWNER_UID_KEY]: vs.metadata.uid!,
              [OWNER_KEY]: `${o.ns}/${vs.metadata.name}`,
            },
            cpuHotAdd: true,
            memoryHotAdd: true,
          },
          datastore,
          [network],
        );
        return moRef(await session.invoke("CreateVM_Task", folder, { config, pool }))!;
      }),
    );
    const vms: MoRef[] = [];
    await waitAll(session, sc.propertyCollector, createTasks, o.taskTimeoutMs, (i, result) => {
      vms[i] = moRef(result)!;
    });
    const createdMs = Date.now() - t0;

    const powerTasks = await Promise.all(
      vms.map(async (vm) => moRef(await session.invoke("PowerOnVM_Task", vm))!),
    );
    await waitAll(session, sc.propertyCollector, powerTasks, o.taskTimeoutMs, (i) => {
      const vs = o.servers[i]!;
      const vm = vms[i]!;
      const write = patched[i]!.then((current) =>
        run(() =>
          o.kube.replace(`${path(vs)}/status`, {
            ...current,
            status: {
              phase: "Creating",
              vm: {
                moRef: vm.value,
                name: vs.spec.hostname.split(".")[0],
                powerState: "poweredOn",
              },
              conditions: [
                {
                  type: "VMCreated",
                  status: "True",
                  reason: "Created",
                  message: `VM ${vm.value}.`,
                  lastTransitionTime: new Date().toISOString(),
                },
              ],
            },
          }),
        ),
      );
      write.catch(() => undefined);
      statusWrites.push(write);
    });
    return { createdMs, poweredOnMs: Date.now() - t0 };
  })();

  const { createdMs, poweredOnMs } = await vim;
  await Promise.all([...patched, ...statusWrites]);
  const totalMs = Date.now() - t0;
  const counted = { ...soap };
  await session.logout();
  return { createdMs, poweredOnMs, totalMs, soap: counted, kube: { ...kube } };
}
