// vim25 SOAP transport over axios: TLS with the class's CA bundle, the session cookie, typed faults.
import https from "node:https";
import axios, { AxiosError, type AxiosInstance, type AxiosResponse } from "axios";
import { currentSignal } from "../abort.js";
import { MoRef, decodeResponse, envelope, type Node } from "./xml.js";
import { VSphereFault, VSphereTLSError, VSphereUnreachable, isTLSErrorCode } from "./errors.js";

export interface SoapOptions {
  /** vCenter SDK URL, e.g. https://vcenter.example.com/sdk */
  url: string;
  /** PEM CA bundle; the system roots when absent. */
  caBundle?: string;
  insecureSkipVerify?: boolean;
  timeoutMs?: number;
  /** Called once per request, for metrics. */
  onCall?: (method: string) => void;
}

const SOAP_ACTION = "urn:vim25/6.5";
/**
 * Reads, which vCenter answers alike when asked twice, are sent once more when the connection
 * drops under them: a load balancer closing an idle keep-alive connection just as it is reused,
 * or (vcsim) a handler that panicked. A task is never sent twice: its owner's next pass finds
 * out what became of it.
 */
const READ_ONLY = /^(Retrieve|ContinueRetrieve|Find|Query)/;
const DROPPED = new Set(["ECONNRESET", "EPIPE"]);
const COOKIE = "vmware_soap_session";

/** A SOAP service beside vim25 on the same vCenter and session, e.g. SPBM at /pbm. */
export interface SoapService {
  path: string;
  namespace: string;
  soapAction: string;
}

/** Storage Policy Based Management (pbm.Path, pbm.Namespace in govmomi). */
export const PBM_SERVICE: SoapService = {
  path: "/pbm",
  namespace: "urn:pbm",
  soapAction: "urn:pbm/2.0",
};

export class SoapTransport {
  private readonly http: AxiosInstance;
  private cookie: string | undefined;

  constructor(readonly options: SoapOptions) {
    const agent = new https.Agent({
      keepAlive: true,
      maxSockets: 8,
      ca: options.caBundle || undefined,
      rejectUnauthorized: !options.insecureSkipVerify,
    });
    this.http = axios.create({
      httpsAgent: agent,
      timeout: options.timeoutMs ?? 60_000,
      responseType: "text",
      transformResponse: (d) => d,
      validateStatus: () => true,
      maxRedirects: 0,
    });
  }

  get sessionCookie(): string | undefined {
    return this.cookie;
  }

  clearSession(): void {
    this.cookie = undefined;
  }

  /** The https agent, shared with the datastore file transfers so they verify TLS alike. */
  get agent(): https.Agent {
    return this.http.defaults.httpsAgent as https.Agent;
  }

  async call(
    method: string,
    thisRef: MoRef,
    args: Record<string, unknown> = {},
    service?: SoapService,
  ): Promise<Node> {
    const url = service ? new URL(service.path, this.options.url).toString() : this.options.url;
    const request = envelope(method, thisRef, args, service?.namespace);
    const res = await this.post(method, url, request, service);
    for (const c of ([] as string[]).concat(res.headers["set-cookie"] ?? [])) {
      const m = new RegExp(`${COOKIE}=("?)([^";]+)\\1`).exec(c);
      if (m) this.cookie = m[2];
    }
    if (typeof res.data !== "string" || !res.data.includes("Envelope"))
      throw new VSphereUnreachable(this.options.url, `HTTP ${res.status}`);
    const { body, fault } = decodeResponse(res.data);
    if (fault) throw new VSphereFault(fault.name, method, fault.message);
    return body ?? "";
  }

  private async post(
    method: string,
    url: string,
    request: string,
    service: SoapService | undefined,
    attempt = 1,
  ): Promise<AxiosResponse<string>> {
    this.options.onCall?.(method);
    try {
      return await this.http.post<string>(url, request, {
        signal: currentSignal(),
        headers: {
          "Content-Type": "text/xml; charset=utf-8",
          SOAPAction: service?.soapAction ?? SOAP_ACTION,
          ...(this.cookie ? { Cookie: `${COOKIE}=${this.cookie}` } : {}),
          // vCenter's other services take the vim25 session in this header.
          ...(service && this.cookie ? { vcSessionCookie: this.cookie } : {}),
        },
      });
    } catch (err) {
      const code = (err as AxiosError).code ?? (err as NodeJS.ErrnoException).code ?? "unknown";
      const causeCode = ((err as AxiosError).cause as NodeJS.ErrnoException | undefined)?.code;
      if (isTLSErrorCode(code) || isTLSErrorCode(causeCode))
        throw new VSphereTLSError(this.options.url, causeCode ?? code);
      if (attempt === 1 && DROPPED.has(code) && READ_ONLY.test(method))
        return this.post(method, url, request, service, attempt + 1);
      throw new VSphereUnreachable(this.options.url, code);
    }
  }
}
