// vCenter's tagging service (vAPI REST, /rest/com/vmware/cis/tagging/...): categories, tags and
// their attachment to VMs. A session of its own (POST /rest/com/vmware/cis/session with the
// class's vCenter credentials, then the vmware-api-session-id header), the same TLS agent as SOAP,
// a timeout on every request and a bound on every response. Tag calls are quick (no task).
// Credentials only ever go into the Authorization header of the login; nothing here logs.
import type https from "node:https";
import axios, { type AxiosError, type AxiosInstance } from "axios";
import { currentSignal } from "../abort.js";
import { VSphereFault, VSphereTLSError, VSphereUnreachable, isTLSErrorCode } from "./errors.js";
import { VM_TYPE } from "./vms.js";

export interface TaggingOptions {
  /** vCenter's SDK URL (https://host/sdk): the REST API lives on the same origin. */
  sdkUrl: string;
  agent: https.Agent;
  username: string;
  password: string;
  /** Per request (default 10 s). */
  timeoutMs?: number;
  /** Larger responses are refused before they are parsed (default 1 MiB). */
  maxResponseBytes?: number;
  /** How long category and tag lookups are remembered (default 60 s). */
  ttlMs?: number;
  /** Called once per request with the operation's name, for metrics. */
  onCall?: (method: string) => void;
  now?: () => number;
}

export interface TagCategory {
  id: string;
  name: string;
  cardinality: "SINGLE" | "MULTIPLE";
  associableTypes: string[];
}

export interface Tag {
  id: string;
  name: string;
  categoryId: string;
}

/**
 * The tagging service answered with an error: `status` is the HTTP status, `type` vCenter's
 * error type (e.g. com.vmware.vapi.std.errors.unauthorized). `denied`: the user may not do it.
 */
export class TaggingError extends Error {
  override name = "TaggingError";
  readonly denied: boolean;
  readonly alreadyExists: boolean;
  constructor(
    readonly operation: string,
    readonly status: number,
    readonly type = "",
  ) {
    super(`tagging ${operation}: HTTP ${status}${type ? ` (${type})` : ""}`);
    this.denied = status === 403 || /unauthorized/i.test(type);
    this.alreadyExists = /already_exists/i.test(type);
  }
}

const SESSION_HEADER = "vmware-api-session-id";
const BASE = "/rest/com/vmware/cis";
/** A name missing from a list this old is looked up again: someone may just have created it. */
const MISS_RELOAD_MS = 2_000;

/** The value of a vAPI /rest answer ({"value": ...}); bad shapes become TaggingError. */
function valueOf(operation: string, body: unknown): unknown {
  if (body === "" || body === undefined) return undefined;
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new TaggingError(operation, 200, "malformed answer");
  return (body as { value?: unknown }).value;
}

function strings(operation: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string"))
    throw new TaggingError(operation, 200, "malformed answer");
  return v as string[];
}

function str(operation: string, v: unknown): string {
  if (typeof v !== "string") throw new TaggingError(operation, 200, "malformed answer");
  return v;
}

/** Parses a category as vCenter describes it (snake_case fields). */
export function parseCategory(operation: string, v: unknown): TagCategory {
  const o = (v ?? {}) as Record<string, unknown>;
  return {
    id: str(operation, o.id),
    name: str(operation, o.name),
    cardinality: o.cardinality === "SINGLE" ? "SINGLE" : "MULTIPLE",
    associableTypes: strings(operation, o.associable_types),
  };
}

export function parseTag(operation: string, v: unknown): Tag {
  const o = (v ?? {}) as Record<string, unknown>;
  return {
    id: str(operation, o.id),
    name: str(operation, o.name),
    categoryId: str(operation, o.category_id),
  };
}

export class TaggingClient {
  private readonly http: AxiosInstance;
  private session: string | undefined;
  private loggingIn: Promise<string> | undefined;
  private readonly ttlMs: number;
  private readonly now: () => number;
  /** Categories and tags by id: their names rarely change, the lists are re-read after ttlMs. */
  private readonly categoriesById = new Map<string, TagCategory>();
  private readonly tagsById = new Map<string, Tag>();
  private categoryList: { ids: string[]; at: number } | undefined;
  private readonly tagLists = new Map<string, { ids: string[]; at: number }>();

  constructor(private readonly opts: TaggingOptions) {
    this.ttlMs = opts.ttlMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.http = axios.create({
      baseURL: new URL(opts.sdkUrl).origin,
      httpsAgent: opts.agent,
      timeout: opts.timeoutMs ?? 10_000,
      maxContentLength: opts.maxResponseBytes ?? 1024 * 1024,
      maxBodyLength: 64 * 1024,
      maxRedirects: 0,
      responseType: "text",
      transformResponse: (d) => d,
      validateStatus: () => true,
    });
  }

  private async send(
    operation: string,
    method: "GET" | "POST" | "DELETE",
    path: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<{ status: number; data: unknown }> {
    this.opts.onCall?.(`Tagging.${operation}`);
    let res;
    try {
      res = await this.http.request<string>({
        method,
        url: path,
        data: body === undefined ? undefined : JSON.stringify(body),
        headers: { Accept: "application/json", "Content-Type": "application/json", ...headers },
        signal: currentSignal(),
      });
    } catch (err) {
      const e = err as AxiosError;
      const code = e.code ?? "unknown";
      const causeCode = (e.cause as NodeJS.ErrnoException | undefined)?.code;
      if (isTLSErrorCode(code) || isTLSErrorCode(causeCode))
        throw new VSphereTLSError(this.opts.sdkUrl, causeCode ?? code);
      // An answer over maxContentLength is dropped unread.
      if (/maxContentLength/.test(e.message ?? ""))
        throw new TaggingError(operation, 0, "answer too large");
      throw new VSphereUnreachable(this.opts.sdkUrl, code);
    }
    let data: unknown = undefined;
    if (typeof res.data === "string" && res.data.trim() !== "") {
      try {
        data = JSON.parse(res.data);
      } catch {
        throw new TaggingError(operation, res.status, "not JSON");
      }
    }
    return { status: res.status, data };
  }

  private login(): Promise<string> {
    this.loggingIn ??= (async () => {
      const basic = Buffer.from(`${this.opts.username}:${this.opts.password}`).toString("base64");
      const res = await this.send("Login", "POST", `${BASE}/session`, undefined, {
        Authorization: `Basic ${basic}`,
      });
      if (res.status === 401 || res.status === 403)
        throw new VSphereFault(
          "InvalidLogin",
          "TaggingLogin",
          "the tagging service refused the login",
        );
      if (res.status !== 200) throw new TaggingError("Login", res.status, errorType(res.data));
      this.session = str("Login", valueOf("Login", res.data));
      return this.session;
    })().finally(() => (this.loggingIn = undefined));
    return this.loggingIn;
  }

  /** One call with a session: logs in first, and once more when the session has expired. */
  private async call(
    operation: string,
    method: "GET" | "POST",
    path: string,
    body?: unknown,
  ): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const session = this.session ?? (await this.login());
      const res = await this.send(operation, method, path, body, { [SESSION_HEADER]: session });
      if (res.status === 401 && attempt === 0) {
        this.session = undefined;
        continue;
      }
      if (res.status < 200 || res.status > 299)
        throw new TaggingError(operation, res.status, errorType(res.data));
      return valueOf(operation, res.data);
    }
  }

  async logout(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (!session) return;
    await this.send("Logout", "DELETE", `${BASE}/session`, undefined, {
      [SESSION_HEADER]: session,
    }).catch(() => undefined);
  }

  // --- categories and tags -----------------------------------------------------------------------

  private fresh(entry: { at: number } | undefined): boolean {
    return !!entry && this.now() - entry.at < this.ttlMs;
  }

  async categories(): Promise<TagCategory[]> {
    if (!this.fresh(this.categoryList)) {
      const ids = strings(
        "ListCategories",
        await this.call("ListCategories", "GET", `${BASE}/tagging/category`),
      );
      this.categoryList = { ids, at: this.now() };
    }
    const out: TagCategory[] = [];
    for (const id of this.categoryList!.ids) {
      let c = this.categoriesById.get(id);
      if (!c) {
        try {
          c = parseCategory(
            "GetCategory",
            await this.call(
              "GetCategory",
              "GET",
              `${BASE}/tagging/category/id:${encodeURIComponent(id)}`,
            ),
          );
        } catch (err) {
          if (err instanceof TaggingError && err.status === 404) continue; // deleted meanwhile
          throw err;
        }
        this.categoriesById.set(id, c);
      }
      out.push(c);
    }
    return out;
  }

  /** A category by name; one not in the remembered list is looked for again (not more than every 2 s). */
  async category(name: string): Promise<TagCategory | undefined> {
    const found = (await this.categories()).find((c) => c.name === name);
    if (found || !this.categoryList || this.now() - this.categoryList.at < MISS_RELOAD_MS)
      return found;
    this.categoryList = undefined;
    return (await this.categories()).find((c) => c.name === name);
  }

  /** Creates a category for VMs; an existing one of that name (a race) is returned. */
  async createCategory(name: string, cardinality: "SINGLE" | "MULTIPLE"): Promise<TagCategory> {
    try {
      await this.call("CreateCategory", "POST", `${BASE}/tagging/category`, {
        create_spec: {
          name,
          description: "Created by vsop from VirtualServer hostnames.",
          cardinality,
          associable_types: [VM_TYPE],
        },
      });
    } catch (err) {
      if (!(err instanceof TaggingError && err.alreadyExists)) throw err;
    }
    this.categoryList = undefined;
    const c = await this.category(name);
    if (!c) throw new TaggingError("CreateCategory", 404, "created category not found");
    return c;
  }

  async tags(categoryId: string): Promise<Tag[]> {
    let list = this.tagLists.get(categoryId);
    if (!this.fresh(list)) {
      const ids = strings(
        "ListTags",
        await this.call(
          "ListTags",
          "POST",
          `${BASE}/tagging/tag/id:${encodeURIComponent(categoryId)}?~action=list-tags-for-category`,
        ),
      );
      list = { ids, at: this.now() };
      this.tagLists.set(categoryId, list);
    }
    const out: Tag[] = [];
    for (const id of list!.ids) {
      const t = await this.tag(id);
      if (t) out.push(t);
    }
    return out;
  }

  /** A tag by id (remembered); undefined when vCenter no longer has it. */
  async tag(id: string): Promise<Tag | undefined> {
    let t = this.tagsById.get(id);
    if (t) return t;
    try {
      t = parseTag(
        "GetTag",
        await this.call("GetTag", "GET", `${BASE}/tagging/tag/id:${encodeURIComponent(id)}`),
      );
    } catch (err) {
      if (err instanceof TaggingError && err.status === 404) return undefined;
      throw err;
    }
    this.tagsById.set(id, t);
    return t;
  }

  /** Creates a tag in a category; an existing one of that name (a race) is returned. */
  async createTag(categoryId: string, name: string): Promise<Tag> {
    try {
      await this.call("CreateTag", "POST", `${BASE}/tagging/tag`, {
        create_spec: { name, description: "", category_id: categoryId },
      });
    } catch (err) {
      if (!(err instanceof TaggingError && err.alreadyExists)) throw err;
    }
    this.tagLists.delete(categoryId);
    const t = (await this.tags(categoryId)).find((x) => x.name === name);
    if (!t) throw new TaggingError("CreateTag", 404, "created tag not found");
    return t;
  }

  /** Forgets what was remembered (a tag or category turned out to be gone). */
  invalidate(): void {
    this.categoryList = undefined;
    this.tagLists.clear();
    this.categoriesById.clear();
    this.tagsById.clear();
  }

  // --- attachment --------------------------------------------------------------------------------

  /** The ids of the tags attached to a VM. */
  async attached(vm: string): Promise<string[]> {
    return strings(
      "ListAttachedTags",
      await this.call(
        "ListAttachedTags",
        "POST",
        `${BASE}/tagging/tag-association?~action=list-attached-tags`,
        { object_id: { type: VM_TYPE, id: vm } },
      ),
    );
  }

  async attach(tagId: string, vm: string): Promise<void> {
    await this.call(
      "AttachTag",
      "POST",
      `${BASE}/tagging/tag-association/id:${encodeURIComponent(tagId)}?~action=attach`,
      { object_id: { type: VM_TYPE, id: vm } },
    );
  }

  async detach(tagId: string, vm: string): Promise<void> {
    await this.call(
      "DetachTag",
      "POST",
      `${BASE}/tagging/tag-association/id:${encodeURIComponent(tagId)}?~action=detach`,
      { object_id: { type: VM_TYPE, id: vm } },
    );
  }
}

/** vCenter's error type from a /rest ({type}) or /api ({error_type}) error body. */
function errorType(body: unknown): string {
  if (typeof body !== "object" || body === null) return "";
  const o = body as { type?: unknown; error_type?: unknown };
  const t =
    typeof o.type === "string" ? o.type : typeof o.error_type === "string" ? o.error_type : "";
  return t.slice(0, 120);
}
