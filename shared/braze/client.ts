import http from 'node:http';
import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import { z } from 'zod';
import type { AppSettings } from '../config/settings';
import { BrazeAuthError, BrazeRetryableError, InvalidInputError } from '../errors';
import type { BrazeAttributesObject } from '../mapping/profileIdentity';
import type { ApiKeySource } from './apiKey';
import type { Clock } from '../clock';
import {
  BRAZE_EXPORT_SEGMENT_PATH,
  BRAZE_DELETE_PATH,
  BRAZE_IDENTIFY_PATH,
  BRAZE_RENAME_PATH,
  BRAZE_MAU_OBJECTS_PER_REQUEST,
  BRAZE_MAX_OBJECTS_PER_REQUEST,
  BRAZE_TRACK_PATH,
} from '../brazeApi';
import type { RateLimitPacer } from './pacer';
import { readRateLimit } from './rateLimitHeaders';
import { redactSecret } from './redact';
import { exponentialBackoffStrategy, isEndpointFault, retryLoop, throttlingStrategy, unreachable, type AttemptResult, type RetryStrategy } from './retry';

/** The Braze app settings; the reserve share belongs to the pacer, the key to its source. */
export type BrazeClientOptions = Omit<AppSettings['braze'], 'rateLimitReserveShare' | 'apiKey' | 'apiKeySecretUri'>;

/** Braze's answer body; partial failures come as 2xx with `errors`. */
const trackResponseSchema = z.looseObject({
  message: z.string().optional(),
  attributes_processed: z.number().optional(),
  errors: z
    .array(
      z.looseObject({
        type: z.string().optional(),
        input_array: z.string().optional(),
        index: z.number().int().optional(),
      }),
    )
    .optional(),
});

/** The permission an endpoint beyond /users/track needs, named when Braze answers 401/403 to it. */
const PERMISSION_OF: Record<string, string> = {
  [BRAZE_IDENTIFY_PATH]: 'users.identify',
  [BRAZE_DELETE_PATH]: 'users.delete',
  [BRAZE_RENAME_PATH]: 'users.external_ids.rename',
};

const renameResponseSchema = z.looseObject({ external_ids: z.array(z.string()).optional(), rename_errors: z.array(z.unknown()).optional() });

const exportResponseSchema = z.looseObject({ message: z.string().optional(), object_prefix: z.string().min(1).optional(), url: z.string().optional() });

/** Where Braze will put a segment export: a download URL, or (cloud storage set up) files under the object prefix. */
export interface SegmentExportTicket {
  objectPrefix: string;
  url?: string;
}

export interface RowError {
  index: number;
  type: string;
}

export type TrackOutcome =
  { kind: 'accepted'; status: number; rowErrors: RowError[]; unattributedErrors: string[] } | { kind: 'refused'; status: number; message: string };

export interface TrackStats {
  requests: number;
  http429: number;
  retries: number;
}

/**
 * POST /users/track with pacing and retry. One instance per process: it owns the keep-alive
 * connection pool and the pacer every sender shares.
 */
export class BrazeClient {
  private readonly http: AxiosInstance;
  private readonly strategies: RetryStrategy[];
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  readonly stats: TrackStats = { requests: 0, http429: 0, retries: 0 };
  /** Objects per /users/track request: as configured, lowered when the workspace refuses a request for its size. */
  private objectLimit: number;
  /** A request of the current limit was accepted: no need to try one alone first. */
  private limitConfirmed = false;

  private refreshing?: Promise<string>;

  constructor(
    private readonly options: BrazeClientOptions,
    private readonly keys: ApiKeySource,
    private readonly pacer: RateLimitPacer,
    private readonly clock: Clock,
  ) {
    this.objectLimit = Math.min(BRAZE_MAX_OBJECTS_PER_REQUEST, Math.max(1, options.objectsPerRequest));
    const agentOptions = { keepAlive: true, maxSockets: options.maxConcurrentRequests };
    this.http = axios.create({
      baseURL: options.endpoint,
      timeout: options.requestTimeoutMs,
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
      headers: { 'Content-Type': 'application/json' },
      validateStatus: () => true,
      // Never through HTTP(S)_PROXY from the environment: the API key goes to Braze and nowhere else.
      proxy: false,
      // Braze's answers are small; a huge body (a gateway's page) is not read into memory.
      maxContentLength: 1024 * 1024,
      responseType: 'text',
      transformResponse: (body: unknown) => body,
      // Bodies are JSON text already: axios's default would parse each one again to check it
      // (a seventh of the sender's CPU at 75 objects a request).
      transformRequest: (body: unknown) => body,
      maxRedirects: 0,
    });
    this.strategies = [throttlingStrategy({ maxRetries: options.maxRetries * 4, fallbackDelayMs: options.retryDelayMs }), exponentialBackoffStrategy(options)];
  }

  /** How many attribute objects one /users/track request of this workspace may hold. */
  get objectsPerRequest(): number {
    return this.objectLimit;
  }

  /**
   * The workspace refused a request of `size` objects for its size ("Max Input Length Exceeded"):
   * Braze documents 75, and 50 on Monthly Active Users (CY 24-25) contracts, so a refused request
   * over 50 means 50; below that, half. Answers the limit now, or undefined when it did not change
   * (a refusal of a request sent before an earlier one was learnt from).
   */
  learnObjectLimit(size: number): number | undefined {
    const next = size > BRAZE_MAU_OBJECTS_PER_REQUEST ? BRAZE_MAU_OBJECTS_PER_REQUEST : Math.max(1, Math.floor(size / 2));
    if (next >= this.objectLimit) return undefined;
    this.objectLimit = next;
    this.limitConfirmed = false;
    return next;
  }

  /** Whether the workspace has taken a request of the current limit (until then a batch tries one request alone first). */
  get objectLimitConfirmed(): boolean {
    return this.limitConfirmed;
  }

  /** A request of `size` objects was accepted. */
  confirmObjectLimit(size: number): void {
    if (size >= this.objectLimit) this.limitConfirmed = true;
  }

  /**
   * Sends at most objectsPerRequest attribute objects; retries transient failures until `deadlineMs`. A 401/403 makes the
   * client read the key once more (rotated in Key Vault?) and, if it changed, send again with it. Retries that end on a host
   * that does not resolve or a port nothing listens on throw a BrazeUnreachableError (see retryLoop), here as in every request
   * sent through `send`.
   */
  async track(attributes: BrazeAttributesObject[], deadlineMs: number, seen: { http429: number } = { http429: 0 }): Promise<TrackOutcome> {
    return this.post(BRAZE_TRACK_PATH, JSON.stringify({ attributes }), true, deadlineMs, seen);
  }

  /**
   * POST /users/identify with `emails_to_identify`: each e-mail-only profile holding an address
   * (the most recently updated one, should there be several) is merged into the profile of its
   * external_id, or becomes it. At most 50 entries. Retried like track, but not paced with it: the
   * endpoint has its own limit, and its headers say nothing of /users/track's budget.
   */
  async identifyEmails(
    entries: { externalId: string; email: string }[],
    deadlineMs: number,
    seen: { http429: number } = { http429: 0 },
  ): Promise<TrackOutcome> {
    const body = JSON.stringify({
      emails_to_identify: entries.map((entry) => ({
        external_id: entry.externalId,
        email: entry.email,
        prioritization: ['unidentified', 'most_recently_updated'],
      })),
    });
    return this.post(BRAZE_IDENTIFY_PATH, body, false, deadlineMs, seen);
  }

  /**
   * POST /users/external_ids/rename: each profile's primary external_id becomes `to`; the old one
   * stays as a deprecated ID that still finds the user (post_external_ids_rename.md), so apps that
   * still use it are not broken. At most 50 renames. Answers which renames Braze did not make, and why.
   */
  async renameExternalIds(
    renames: { from: string; to: string }[],
    deadlineMs: number,
    seen: { http429: number } = { http429: 0 },
  ): Promise<{ kind: 'accepted'; failed: Map<number, string> } | { kind: 'refused'; status: number; message: string }> {
    const body = JSON.stringify({ external_id_renames: renames.map((r) => ({ current_external_id: r.from, new_external_id: r.to })) });
    const response = await this.send(BRAZE_RENAME_PATH, body, false, deadlineMs, seen);
    const { message } = this.readAnswer(response, BRAZE_RENAME_PATH);
    if (response.status < 200 || response.status >= 300) return { kind: 'refused', status: response.status, message };
    // Errors "reference the index of the object in the array of the original request"; the
    // renames made are listed in external_ids. A rename neither lists is taken as made.
    const answer = renameResponseSchema.safeParse(safeJson(response.data ?? ''));
    const failed = new Map<number, string>();
    for (const error of answer.success ? (answer.data.rename_errors ?? []) : []) {
      const parts = Array.isArray(error) ? error : [error];
      const index = parts.find((part): part is number => typeof part === 'number' && Number.isInteger(part));
      const text = this.redact(parts.filter((part) => typeof part === 'string').join(' ') || JSON.stringify(error), 200);
      if (index !== undefined && index >= 0 && index < renames.length) failed.set(index, text);
    }
    return { kind: 'accepted', failed };
  }

  /**
   * POST /users/delete: the users with these identifiers, all of one kind, are deleted — for good.
   * An e-mail names the profile the connector keyed by it, the unidentified one holding the address
   * (the most recently updated, should there be several). Braze answers how many it queued for
   * deletion, not which: an identifier it does not know is no error. At most 50 per request.
   */
  async deleteUsers(
    users: { external_id: string }[] | { user_alias: { alias_name: string; alias_label: string } }[] | { email: string }[],
    deadlineMs: number,
    seen: { http429: number } = { http429: 0 },
  ): Promise<{ kind: 'accepted'; deleted: number } | { kind: 'refused'; status: number; message: string }> {
    const first = users[0];
    const body =
      'external_id' in first
        ? { external_ids: (users as { external_id: string }[]).map((u) => u.external_id) }
        : 'user_alias' in first
          ? { user_aliases: (users as { user_alias: { alias_name: string; alias_label: string } }[]).map((u) => u.user_alias) }
          : { email_addresses: (users as { email: string }[]).map((u) => ({ email: u.email, prioritization: ['unidentified', 'most_recently_updated'] })) };
    const response = await this.send(BRAZE_DELETE_PATH, JSON.stringify(body), false, deadlineMs, seen);
    const { message } = this.readAnswer(response, BRAZE_DELETE_PATH);
    if (response.status < 200 || response.status >= 300) return { kind: 'refused', status: response.status, message };
    const deleted = (safeJson(response.data ?? '') as { deleted?: unknown } | undefined)?.deleted;
    return { kind: 'accepted', deleted: typeof deleted === 'number' ? deleted : 0 };
  }

  private async post(path: string, body: string, paced: boolean, deadlineMs: number, seen: { http429: number }): Promise<TrackOutcome> {
    return this.interpret(await this.send(path, body, paced, deadlineMs, seen), path);
  }

  /** One request, retried until the deadline; after a 401/403 once more with the key read again, if it changed. */
  private async send(path: string, body: string, paced: boolean, deadlineMs: number, seen: { http429: number }): Promise<AxiosResponse<string>> {
    let key = await this.keys.get();
    for (let reread = false; ; reread = true) {
      const response = await retryLoop<AxiosResponse<string> | undefined>({
        attempt: () => this.attempt(path, body, paced, deadlineMs, key, seen),
        strategies: this.strategies,
        sleep: this.clock.sleep,
        now: this.clock.now,
        deadlineMs,
        endpoint: this.options.endpoint,
        onRetry: () => {
          this.stats.retries += 1;
        },
      });
      if (!reread && (response?.status === 401 || response?.status === 403)) {
        const fresh = await this.freshKey(key);
        if (fresh !== key) {
          key = fresh;
          continue;
        }
      }
      return response!;
    }
  }

  /**
   * POST /users/export/segment: Braze answers at once with where the export will be; the export
   * itself takes minutes to hours. Not paced with /users/track: it has its own hourly limit.
   */
  async exportSegment(segmentId: string, fieldsToExport: string[]): Promise<SegmentExportTicket> {
    const body = JSON.stringify({ segment_id: segmentId, fields_to_export: fieldsToExport, output_format: 'zip' });
    const what = `Braze's export of segment "${segmentId}"`;
    let key = await this.keys.get();
    for (let reread = false; ; reread = true) {
      let response: AxiosResponse<string>;
      try {
        response = await this.http.post<string>(BRAZE_EXPORT_SEGMENT_PATH, body, { headers: { Authorization: `Bearer ${key}` } });
      } catch (error) {
        // A wrong host or port is said as such, not waited on as if the export were coming.
        const code = (error as { code?: string }).code ?? '';
        if (isEndpointFault(code)) throw unreachable(this.options.endpoint, code);
        throw new BrazeRetryableError(`${what} could not be asked for: ${this.redact((error as Error).message ?? String(error))}`, 0);
      }
      const parsed = parseBody(response.data);
      const answer = exportResponseSchema.safeParse(response.data ? safeJson(response.data) : {});
      const message = this.redact(parsed.message ?? (parsed.raw ? `non-JSON answer: ${parsed.raw}` : `HTTP ${response.status}`));
      if (response.status === 401 || response.status === 403) {
        const fresh = reread ? key : await this.freshKey(key);
        if (fresh !== key) {
          key = fresh;
          continue;
        }
        throw new BrazeAuthError(`Braze answered ${response.status} to ${what} (does the key have users.export.segment?): ${message}`, response.status);
      }
      // An export of the segment still in progress (one at a time), or the hourly limit: asked again later.
      if (response.status === 429) throw new BrazeRetryableError(`${what} is refused for now (429: ${message})`, 429);
      if (response.status === 408 || response.status >= 500) throw new BrazeRetryableError(`${what} failed (${response.status}: ${message})`, response.status);
      if (response.status < 200 || response.status >= 300) throw new InvalidInputError(`Braze refused ${what} (${response.status}: ${message})`);
      if (!answer.success || !answer.data.object_prefix) throw new InvalidInputError(`Braze accepted ${what} but named no object prefix`);
      return { objectPrefix: answer.data.object_prefix, url: answer.data.url || undefined };
    }
  }

  /** The key after a 401: one that another request already re-read, or a new read (one at a time). */
  private async freshKey(used: string): Promise<string> {
    const current = await this.keys.get();
    if (current !== used) return current;
    this.refreshing ??= this.keys
      .refresh()
      .then(() => this.keys.get())
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private redact(text: string, max = 300): string {
    return redactSecret(text, this.keys.known, max);
  }

  private async attempt(
    path: string,
    body: string,
    paced: boolean,
    deadlineMs: number,
    key: string,
    seen: { http429: number },
  ): Promise<{ result: AttemptResult; value: AxiosResponse<string> | undefined }> {
    await this.slot();
    if (paced) {
      try {
        await this.pacer.acquire(deadlineMs);
      } catch (error) {
        this.active -= 1;
        this.waiting.shift()?.();
        throw error;
      }
    }
    this.stats.requests += 1;
    try {
      const response = await this.http.post<string>(path, body, { headers: { Authorization: `Bearer ${key}` } });
      const rateLimit = readRateLimit(response.headers as Record<string, unknown>, this.clock.now());
      if (response.status !== 429) {
        if (paced) this.pacer.release(rateLimit);
        return { result: { status: response.status, retryAtMs: rateLimit.resetAtMs }, value: response };
      }
      this.stats.http429 += 1;
      seen.http429 += 1;
      if (!paced) return { result: { status: 429, retryAtMs: rateLimit.resetAtMs }, value: response };
      // A burst 429's Retry-After is not the window's reset: the pacer learns only the budget from it.
      this.pacer.release({ limit: rateLimit.limit, remaining: rateLimit.remaining });
      return { result: { status: 429, retryAtMs: this.pacer.throttled(rateLimit) }, value: response };
    } catch (error) {
      if (paced) this.pacer.release(undefined);
      const code = (error as { code?: string }).code ?? 'ERR_NETWORK';
      const message = this.redact((error as Error).message ?? String(error));
      return { result: { transportError: { code, message } }, value: undefined };
    } finally {
      this.active -= 1;
      this.waiting.shift()?.();
    }
  }

  private slot(): Promise<void> {
    if (this.active < this.options.maxConcurrentRequests) {
      this.active += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiting.push(() => {
        this.active += 1;
        resolve();
      });
    });
  }

  /**
   * What an answer says, redacted; a 401/403 is thrown, naming the permission the endpoint needs
   * (the key was read again before, so it is the key's rights that are wanting).
   */
  private readAnswer(response: AxiosResponse<string>, path: string): { body: ReturnType<typeof parseBody>; message: string } {
    const body = parseBody(response.data);
    const message = this.redact(body.message ?? (body.raw ? `non-JSON answer: ${body.raw}` : `HTTP ${response.status}`));
    if (response.status === 401 || response.status === 403) {
      const permission = PERMISSION_OF[path] ? ` to ${path} (does the key have ${PERMISSION_OF[path]}?)` : '';
      throw new BrazeAuthError(`Braze answered ${response.status}${permission}: ${message}`, response.status);
    }
    return { body, message };
  }

  private interpret(response: AxiosResponse<string>, path: string): TrackOutcome {
    const { body, message } = this.readAnswer(response, path);
    if (response.status >= 200 && response.status < 300) {
      const rowErrors: RowError[] = [];
      const unattributedErrors: string[] = [];
      const ownArray = path === BRAZE_IDENTIFY_PATH ? 'emails_to_identify' : 'attributes';
      for (const error of body.errors ?? []) {
        const type = this.redact(error.type ?? 'unknown error');
        if (error.index !== undefined && (error.input_array === undefined || error.input_array === ownArray)) rowErrors.push({ index: error.index, type });
        else unattributedErrors.push(type);
      }
      return { kind: 'accepted', status: response.status, rowErrors, unattributedErrors };
    }
    return { kind: 'refused', status: response.status, message };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

function parseBody(text: string | undefined): z.output<typeof trackResponseSchema> & { raw?: string } {
  if (!text) return {};
  try {
    const parsed = trackResponseSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : { raw: text };
  } catch {
    return { raw: text.replace(/\s+/g, ' ') };
  }
}
