// A logged-in vim25 session: service content, Login with backoff after a refused login,
// transparent re-login on NotAuthenticated, Logout.
import { SoapTransport, type SoapOptions, type SoapService } from "./soap.js";
import { MoRef, field, text, type Node } from "./xml.js";
import { VSphereFault } from "./errors.js";

export interface Credentials {
  username: string;
  password: string;
}

export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  fileManager?: MoRef;
  searchIndex?: MoRef;
  customFieldsManager?: MoRef;
  storageResourceManager?: MoRef;
  apiVersion: string;
}

const SERVICE_INSTANCE = new MoRef("ServiceInstance", "ServiceInstance");

export class VSphereSession {
  readonly soap: SoapTransport;
  private content: ServiceContent | undefined;
  private loggedIn = false;
  private loggingIn: Promise<void> | undefined;
  /** After a refused login, further logins wait until this time (no login storm). */
  private loginBlockedUntil = 0;
  private loginFailures = 0;
  private lastLoginError: Error | undefined;
  /** Number of Login calls sent, for tests and metrics. */
  loginCount = 0;

  constructor(
    options: SoapOptions,
    private readonly credentials: Credentials,
    private readonly now: () => number = Date.now,
  ) {
    this.soap = new SoapTransport(options);
  }

  async serviceContent(): Promise<ServiceContent> {
    if (this.content) return this.content;
    const sc = await this.soap.call("RetrieveServiceContent", SERVICE_INSTANCE);
    const ref = (name: string) => {
      const v = field(sc, name);
      return v instanceof MoRef ? v : undefined;
    };
    this.content = {
      rootFolder: ref("rootFolder")!,
      propertyCollector: ref("propertyCollector")!,
      viewManager: ref("viewManager")!,
      sessionManager: ref("sessionManager")!,
      fileManager: ref("fileManager"),
      searchIndex: ref("searchIndex"),
      customFieldsManager: ref("customFieldsManager"),
      storageResourceManager: ref("storageResourceManager"),
      apiVersion: text(field(field(sc, "about"), "apiVersion")) ?? "",
    };
    return this.content;
  }

  private async login(): Promise<void> {
    if (this.now() < this.loginBlockedUntil && this.lastLoginError) throw this.lastLoginError;
    const sc = await this.serviceContent();
    this.loginCount++;
    try {
      await this.soap.call("Login", sc.sessionManager, {
        userName: this.credentials.username,
        password: this.credentials.password,
      });
    } catch (err) {
      if (err instanceof VSphereFault && err.fault === "InvalidLogin") {
        this.loginFailures++;
        const delay = Math.min(300_000, 5_000 * 2 ** (this.loginFailures - 1));
        this.loginBlockedUntil = this.now() + delay;
        this.lastLoginError = err;
      }
      throw err;
    }
    this.loginFailures = 0;
    this.lastLoginError = undefined;
    this.loggedIn = true;
  }

  private async ensureLoggedIn(): Promise<void> {
    if (this.loggedIn) return;
    // One login at a time; concurrent callers share it.
    this.loggingIn ??= this.login().finally(() => (this.loggingIn = undefined));
    await this.loggingIn;
  }

  /** Calls a method with a session, logging in (again) when vCenter says the session is gone. */
  async invoke(
    method: string,
    thisRef: MoRef,
    args: Record<string, unknown> = {},
    service?: SoapService,
  ): Promise<Node> {
    await this.ensureLoggedIn();
    try {
      return await this.soap.call(method, thisRef, args, service);
    } catch (err) {
      if (!(err instanceof VSphereFault) || err.fault !== "NotAuthenticated") throw err;
      this.loggedIn = false;
      this.soap.clearSession();
      await this.ensureLoggedIn();
      return this.soap.call(method, thisRef, args, service);
    }
  }

  /** Forgets the session, e.g. after vCenter restarted and lost it. */
  reset(): void {
    this.loggedIn = false;
    this.content = undefined;
    this.soap.clearSession();
  }

  async logout(): Promise<void> {
    if (!this.loggedIn || !this.content) return;
    this.loggedIn = false;
    await this.soap.call("Logout", this.content.sessionManager).catch(() => undefined);
    this.soap.clearSession();
  }
}
