import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { FaultDeck } from './faultDeck';
import { exportFiles, exportLine, gzipFiles, zipFiles } from './segmentExport';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
export type BrazeProfile = Record<string, Json>;

export interface BrazeServerSnapshot {
  profiles: [string, BrazeProfile][];
  deprecatedIds: [string, string][];
  updatedAt: [string, number][];
  updates: number;
}

export interface BrazeFaults {
  /** Share of requests answered 500 without applying anything. */
  http500?: number;
  /** Share of requests applied, then answered 500 (the client cannot know it landed). */
  http500AfterApply?: number;
  /** Share of requests answered 502 with an HTML body, as a gateway would. */
  html502?: number;
  /** Share of connections destroyed without an answer. */
  reset?: number;
  /** Share of requests never answered (the client must time out). */
  hang?: number;
  /** Share of rate windows whose whole budget another tool of the workspace already spent (every request 429). */
  exhaustedWindows?: number;
}

export interface BrazeServerOptions {
  apiKey: string;
  rateLimit?: number;
  rateWindowMs?: number;
  /**
   * An hourly contract's burst limit: at most this many requests per 3 s, beyond which Braze
   * answers 429 while the headers still describe the (hourly) window, with budget left in it.
   */
  burstLimit?: number;
  faults?: BrazeFaults;
  /**
   * Segments `/users/export/segment` can export, by segment id: the custom attribute that makes a
   * profile a member (a Braze segment filtered on the membership attribute being true).
   */
  segments?: Record<string, string>;
  /** How long a segment export takes before its download appears (ms). */
  exportDelayMs?: number;
  /** Seeds the fault decks, so a fault run can be repeated. */
  seed?: number;
  /** Artificial latency per request (ms), to look more like a remote API. */
  latencyMs?: number;
  /**
   * Objects one /users/track request may hold: 75, or 50 on Monthly Active Users (CY 24-25)
   * contracts ("Each request may batch up to 50 updates", post_user_track.md). Beyond it: 400 Max
   * Input Length Exceeded (errors.md).
   */
  maxObjectsPerRequest?: number;
  /** Elements an array custom attribute keeps (500 by default). */
  maxArrayLength?: number;
  /** Keep every applied /users/track object (`appliedObjects`), for tests that look at what was sent. */
  keepObjects?: boolean;
}

export interface BrazeServerStats {
  /** Every request, export downloads included. */
  requests: number;
  /** POST /users/track requests, whatever the answer. */
  trackRequests: number;
  /** POST /users/export/segment requests. */
  exportRequests: number;
  /** POST /users/identify requests. */
  identifyRequests: number;
  /** POST /users/external_ids/rename requests. */
  renameRequests: number;
  /** POST /users/delete requests, and the users they deleted. */
  deleteRequests: number;
  usersDeleted: number;
  byStatus: Record<number, number>;
  objectsApplied: number;
  rowErrors: number;
  firstRequestAtMs?: number;
  lastRequestAtMs?: number;
  /** Requests per rate window, to check pacing against the limit. */
  perWindow: Map<number, number>;
  /** 429s for the burst limit (also counted in byStatus). */
  burst429: number;
}

/** The documented /users/track identifier fields; an object must carry exactly one. */
const IDENTIFIERS = ['external_id', 'user_alias', 'braze_id', 'email', 'phone'] as const;
const MAX_OBJECTS = 75;
const POST_PATHS = new Set(['/users/track', '/users/export/segment', '/users/identify', '/users/external_ids/rename', '/users/delete']);
const PRIORITIZATIONS = new Set(['identified', 'unidentified', 'most_recently_updated', 'least_recently_updated']);
const MAX_STRING = 255;

/**
 * A local server that behaves like Braze's POST /users/track for what the connector depends on:
 * bearer auth (echoing the key in the 401 body, as Braze does), the 75-object limit, 2xx with
 * per-row `errors`, X-RateLimit-* headers and 429 per fixed window, and injectable 500s, HTML 502s,
 * connection resets and hangs. Profiles are kept in memory so tests can compare state.
 */
const BURST_WINDOW_MS = 3_000;

export class BrazeServer {
  /**
   * One store of profiles, each under its strongest identifier (`external_id:…`, else `alias:…`,
   * else `email:…` or `phone:…` for an e-mail-only or phone-only profile). An object identified
   * by e-mail or phone updates the profile that holds that address, as Braze matches it.
   */
  readonly profiles = new Map<string, BrazeProfile>();
  /** Deprecated external IDs (renamed away from) → the primary one: they still find the user. */
  readonly deprecatedIds = new Map<string, string>();
  /** With `keepObjects`: every /users/track object applied, as it came. */
  readonly appliedObjects: BrazeProfile[] = [];
  private readonly keepObjects: boolean;
  private readonly maxArrayLength: number;
  /** When each profile was last updated (a counter), for Braze's "most recently updated" rules. */
  private readonly updatedAt = new Map<string, number>();
  private updates = 0;
  readonly stats: BrazeServerStats = {
    requests: 0,
    trackRequests: 0,
    exportRequests: 0,
    identifyRequests: 0,
    renameRequests: 0,
    deleteRequests: 0,
    usersDeleted: 0,
    byStatus: {},
    objectsApplied: 0,
    rowErrors: 0,
    perWindow: new Map(),
    burst429: 0,
  };
  apiKey: string;
  faults: BrazeFaults;
  rateLimit: number;
  private readonly rateWindowMs: number;
  private readonly burstLimit: number | undefined;
  private readonly perBurstWindow = new Map<number, number>();
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly requestDeck: FaultDeck<'reset' | 'hang' | 'http500' | 'html502' | 'http500AfterApply'>;
  private readonly windowDeck: FaultDeck<'exhausted'>;
  private readonly windowFate = new Map<number, boolean>();
  private latencyMs: number;
  private readonly segments: Record<string, string>;
  private readonly exportDelayMs: number;
  private readonly maxObjects: number;
  /** Exports by object prefix: the segment they are of, and their archive once it is ready. */
  private readonly exports = new Map<string, { segmentId: string; ready?: { body: Buffer; contentType: string } }>();
  url = '';

  constructor(options: BrazeServerOptions) {
    this.apiKey = options.apiKey;
    this.faults = options.faults ?? {};
    this.rateLimit = options.rateLimit ?? 3_000;
    this.rateWindowMs = options.rateWindowMs ?? 3_000;
    this.burstLimit = options.burstLimit;
    this.latencyMs = options.latencyMs ?? 0;
    this.segments = options.segments ?? {};
    this.exportDelayMs = options.exportDelayMs ?? 200;
    this.maxObjects = options.maxObjectsPerRequest ?? MAX_OBJECTS;
    this.keepObjects = options.keepObjects ?? false;
    this.maxArrayLength = options.maxArrayLength ?? 500;
    this.requestDeck = new FaultDeck(options.seed ?? 42);
    this.windowDeck = new FaultDeck((options.seed ?? 42) + 1);
    this.server = http.createServer((request, response) => void this.handle(request, response));
    this.server.keepAliveTimeout = 30_000;
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async start(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The profile Braze holds for an identifier key: `external_id:…`, `email:…`, `alias:label:name`. */
  profile(key: string): BrazeProfile | undefined {
    return this.profiles.get(key);
  }

  /**
   * The profile a person would find in Braze's dashboard: by external_id (a deprecated one finds
   * its user too), by e-mail address, or by alias name (under `label`, or any label).
   */
  findUser(by: 'external_id' | 'email' | 'alias', id: string, label?: string): BrazeProfile | undefined {
    if (by === 'external_id') return this.profiles.get(`external_id:${this.deprecatedIds.get(id) ?? id}`);
    if (by === 'email') {
      const holder = this.holdersOf('email', id)[0];
      return holder === undefined ? undefined : this.profiles.get(holder);
    }
    if (label !== undefined) return this.profiles.get(`alias:${label}:${id}`);
    for (const [key, profile] of this.profiles) if (key.startsWith('alias:') && key.endsWith(`:${id}`)) return profile;
    return undefined;
  }

  /** What the server holds, to be kept between starts (`npm run serve`). */
  snapshot(): BrazeServerSnapshot {
    return { profiles: [...this.profiles], deprecatedIds: [...this.deprecatedIds], updatedAt: [...this.updatedAt], updates: this.updates };
  }

  /** Takes back what `snapshot` kept; anything held before is dropped. */
  restore(snapshot: BrazeServerSnapshot): void {
    this.profiles.clear();
    this.deprecatedIds.clear();
    this.updatedAt.clear();
    for (const [key, profile] of snapshot.profiles) this.profiles.set(key, profile);
    for (const [id, primary] of snapshot.deprecatedIds) this.deprecatedIds.set(id, primary);
    for (const [key, at] of snapshot.updatedAt) this.updatedAt.set(key, at);
    this.updates = snapshot.updates;
  }

  private windowOf(nowMs: number): number {
    return Math.floor(nowMs / this.rateWindowMs);
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (request.url === '/__stats' && request.method === 'GET') return this.sendStats(response);
    if (this.latencyMs) await new Promise((resolve) => setTimeout(resolve, this.latencyMs));
    const now = Date.now();
    this.stats.requests += 1;
    if (request.url === '/users/track') this.stats.trackRequests += 1;
    if (request.url === '/users/export/segment') this.stats.exportRequests += 1;
    if (request.url === '/users/identify') this.stats.identifyRequests += 1;
    if (request.url === '/users/external_ids/rename') this.stats.renameRequests += 1;
    if (request.url === '/users/delete') this.stats.deleteRequests += 1;
    this.stats.firstRequestAtMs ??= now;
    this.stats.lastRequestAtMs = now;

    // A download URL is pre-signed, as Braze's are: no key.
    if (request.method === 'GET' && request.url?.startsWith('/__exports/')) return this.serveExport(request.url, response);
    if (request.method !== 'POST' || !POST_PATHS.has(request.url ?? '')) return this.send(response, 404, { message: 'Not found' });
    const auth = request.headers.authorization ?? '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (key !== this.apiKey) return this.send(response, 401, { message: `Invalid API key: ${key}` });
    if (request.url === '/users/export/segment') return this.startSegmentExport(Buffer.concat(chunks).toString('utf8'), response);
    // Its own limit (20,000 a minute, shared with /users/delete, /users/merge and the alias endpoints), not /users/track's.
    if (request.url === '/users/identify') return this.identify(Buffer.concat(chunks).toString('utf8'), response);
    // 1,000 requests a minute, its own limit too.
    if (request.url === '/users/external_ids/rename') return this.rename(Buffer.concat(chunks).toString('utf8'), response);
    // Its own limit too (20,000 a minute, shared with /users/identify).
    if (request.url === '/users/delete') return this.deleteUsers(Buffer.concat(chunks).toString('utf8'), response);

    const window = this.windowOf(now);
    if (!this.windowFate.has(window)) this.windowFate.set(window, this.windowDeck.draw({ exhausted: this.faults.exhaustedWindows }) === 'exhausted');
    const used = (this.stats.perWindow.get(window) ?? 0) + 1 + (this.windowFate.get(window) ? this.rateLimit : 0);
    const resetEpochSeconds = Math.ceil(((window + 1) * this.rateWindowMs) / 1000);
    const headersAt = (count: number) => ({
      'X-RateLimit-Limit': String(this.rateLimit),
      'X-RateLimit-Remaining': String(Math.max(0, this.rateLimit - count)),
      'X-RateLimit-Reset': String(resetEpochSeconds),
    });
    if (this.burstLimit !== undefined && used <= this.rateLimit) {
      const burstWindow = Math.floor(now / BURST_WINDOW_MS);
      const inBurst = (this.perBurstWindow.get(burstWindow) ?? 0) + 1;
      this.perBurstWindow.set(burstWindow, inBurst);
      if (this.perBurstWindow.size > 64) this.perBurstWindow.delete(this.perBurstWindow.keys().next().value!);
      if (inBurst > this.burstLimit) {
        // Refused by the burst limit: the hourly window keeps its budget, and the headers say so.
        this.stats.burst429 += 1;
        return this.send(response, 429, { message: 'Rate limit exceeded' }, headersAt(used - 1));
      }
    }
    this.stats.perWindow.set(window, used);
    const rateHeaders = headersAt(used);
    if (used > this.rateLimit) return this.send(response, 429, { message: 'Rate limit exceeded' }, rateHeaders);

    const { reset, hang, http500, html502, http500AfterApply } = this.faults;
    const fault = this.requestDeck.draw({ reset, hang, http500, html502, http500AfterApply });
    if (fault === 'reset') {
      request.socket.destroy();
      return;
    }
    if (fault === 'hang') return; // never answered; the client's timeout must fire
    if (fault === 'http500') return this.send(response, 500, { message: 'Internal server error' }, rateHeaders);
    if (fault === 'html502') {
      response.writeHead(502, { 'Content-Type': 'text/html', ...rateHeaders });
      response.end('<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>');
      this.count(502);
      return;
    }
    const applyThenFail = fault === 'http500AfterApply';

    let body: { attributes?: unknown };
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { attributes?: unknown };
    } catch {
      return this.send(response, 400, { message: 'Invalid JSON' }, rateHeaders);
    }
    const attributes = body.attributes;
    if (!Array.isArray(attributes)) return this.send(response, 400, { message: "'attributes' must be an array" }, rateHeaders);
    if (attributes.length > this.maxObjects) return this.send(response, 400, { message: 'Max Input Length Exceeded' }, rateHeaders);
    // A whole-request refusal that names no row: what the sender must isolate by splitting.
    if (attributes.some((a) => isObject(a) && typeof a.external_id === 'string' && a.external_id.startsWith('bad-request'))) {
      return this.send(response, 400, { message: "Invalid 'attributes' object" }, rateHeaders);
    }

    const errors: { type: string; input_array: string; index: number }[] = [];
    // "When a nested custom attribute contains any invalid values (such as invalid time formats or
    // null values), all nested custom attribute updates in the request will be dropped" (post_user_track.md).
    const dropNested = attributes.some((a) => isObject(a) && Object.entries(a).some(([name, value]) => isNestedCustom(name, value) && holdsNull(value)));
    attributes.forEach((object, index) => {
      const problem = this.validate(object);
      if (problem) {
        errors.push({ type: problem, input_array: 'attributes', index });
        return;
      }
      this.apply(object as Record<string, Json>, dropNested);
      if (this.keepObjects) this.appliedObjects.push(object as BrazeProfile);
    });
    this.stats.rowErrors += errors.length;
    if (applyThenFail) return this.send(response, 500, { message: 'Internal server error' }, rateHeaders);
    const answer: Record<string, Json> = { message: 'success', attributes_processed: attributes.length - errors.length };
    if (errors.length) answer.errors = errors;
    return this.send(response, 201, answer, rateHeaders);
  }

  private validate(object: unknown): string | undefined {
    if (!isObject(object)) return 'Attributes object is not an object';
    // email and phone identify only an object without external_id, user_alias or braze_id (then they
    // are attributes); "with both email and phone, Braze will use the email as the identifier".
    const strong = 'external_id' in object || 'user_alias' in object || 'braze_id' in object;
    const identifiers = IDENTIFIERS.filter((id) => id in object && !((id === 'email' || id === 'phone') && strong) && !(id === 'phone' && 'email' in object));
    if (identifiers.length !== 1) return `Attributes object must specify exactly one identifier, found ${identifiers.length}`;
    if ('user_alias' in object) {
      const alias = object.user_alias;
      if (!isObject(alias) || typeof alias.alias_name !== 'string' || typeof alias.alias_label !== 'string') return 'Invalid user_alias';
      if (object._update_existing_only !== false) return 'user_alias requires _update_existing_only: false to create';
    }
    if (typeof object.external_id === 'string' && object.external_id.startsWith('reject-')) return 'Invalid external_id';
    if ('email' in object && (typeof object.email !== 'string' || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(object.email))) return 'Invalid email address';
    for (const [key, value] of Object.entries(object)) {
      if (key.length > MAX_STRING) return 'Attribute key too long';
      if (typeof value === 'string' && value.length > MAX_STRING) return `Value of ${key} exceeds 255 characters`;
    }
    return undefined;
  }

  private apply(object: Record<string, Json>, dropNested = false): void {
    const key = this.profileFor(object);
    const profile = this.profiles.get(key) ?? {};
    for (const [name, given] of Object.entries(object)) {
      if (name === '_update_existing_only' || name === 'user_alias' || name === 'external_id') continue;
      if (dropNested && isNestedCustom(name, given)) continue;
      if (name === 'subscription_groups') {
        const merged = mergeSubscriptionGroups(profile.subscription_groups, given);
        if (merged) profile.subscription_groups = merged;
        continue;
      }
      const value = isArrayUpdate(given) ? updatedArray(profile[name], given, this.maxArrayLength) : storedValue(name, given, this.maxArrayLength);
      if (value === undefined) continue;
      if (value === null) delete profile[name];
      else profile[name] = value;
    }
    this.profiles.set(key, profile);
    this.touch(key);
    this.stats.objectsApplied += 1;
  }

  private touch(key: string): void {
    this.updatedAt.set(key, ++this.updates);
  }

  /**
   * The profile an attributes object updates. By external_id or alias: its own. By e-mail (or
   * phone): "If the external_id exists, the most recently updated profile with an external ID will
   * be prioritized for updates. If the external_id doesn't exist, the most recently updated profile
   * will be prioritized" (post_user_track.md); with no profile holding the address, a new one.
   */
  private profileFor(object: Record<string, Json>): string {
    const key = profileKey(object);
    // "the user can be identified by either external_id until the deprecated one is removed"
    const primary = typeof object.external_id === 'string' ? this.deprecatedIds.get(object.external_id) : undefined;
    if (primary !== undefined) return `external_id:${primary}`;
    if (!key.startsWith('email:') && !key.startsWith('phone:')) return key;
    const field = key.startsWith('email:') ? 'email' : 'phone';
    const holders = this.holdersOf(field, String(object[field]));
    const identified = holders.filter((k) => k.startsWith('external_id:'));
    return this.mostRecent(identified.length ? identified : holders) ?? key;
  }

  /** The profiles holding an e-mail address or phone number. */
  private holdersOf(field: 'email' | 'phone', value: string): string[] {
    const holders: string[] = [];
    const own = `${field}:${value}`;
    for (const [key, profile] of this.profiles) if (key === own || profile[field] === value) holders.push(key);
    return holders;
  }

  private mostRecent(keys: string[], least = false): string | undefined {
    let best: string | undefined;
    for (const key of keys) {
      const at = this.updatedAt.get(key) ?? 0;
      if (best === undefined || (least ? at < (this.updatedAt.get(best) ?? 0) : at > (this.updatedAt.get(best) ?? 0))) best = key;
    }
    return best;
  }

  /**
   * The profile a `prioritization` picks among those holding an address (post_user_identify.md,
   * post_user_delete.md): `identified`/`unidentified` filter, the recency rules pick one; "If an
   * email address or phone number is specified as an identifier, you must also include
   * prioritization", and only one of identified and unidentified may be in it.
   */
  private prioritized(holders: string[], order: Json | undefined): string | undefined | 'invalid' | 'several' {
    if (!Array.isArray(order) || order.length === 0 || order.some((p) => !PRIORITIZATIONS.has(p as string))) return 'invalid';
    if (order.includes('identified') && order.includes('unidentified')) return 'invalid';
    let candidates = holders;
    for (const rule of order) {
      if (rule === 'identified') candidates = candidates.filter((k) => k.startsWith('external_id:'));
      else if (rule === 'unidentified') candidates = candidates.filter((k) => !k.startsWith('external_id:'));
      else if (candidates.length > 1) candidates = [this.mostRecent(candidates, rule === 'least_recently_updated')!];
    }
    return candidates.length > 1 ? 'several' : candidates[0];
  }

  /**
   * POST /users/identify (post_user_identify.md): each entry of `emails_to_identify` or
   * `phone_numbers_to_identify` names an external_id, an address and a `prioritization`; the
   * profile the prioritization picks among those holding the address is combined with the profile
   * of that external_id — the fields found only on it are merged in and it is removed — or, when no
   * profile has that external_id yet, it is given it. A prioritization that matches more than one
   * profile merges nothing. `aliases_to_identify` does the same for an alias-only profile.
   */
  private identify(text: string, response: http.ServerResponse): void {
    const body = jsonObject(text);
    if (!body) return this.send(response, 400, { message: 'Invalid JSON' });
    const lists = ['aliases_to_identify', 'emails_to_identify', 'phone_numbers_to_identify'] as const;
    if (!lists.some((name) => Array.isArray(body[name]))) {
      return this.send(response, 400, { message: 'One of aliases_to_identify, emails_to_identify or phone_numbers_to_identify is required' });
    }
    const entries = lists.flatMap((name) => (Array.isArray(body[name]) ? (body[name] as Json[]).map((entry) => ({ name, entry })) : []));
    if (entries.length > 50) return this.send(response, 400, { message: 'Max Input Length Exceeded' });
    const errors: { type: string; input_array: string; index: number }[] = [];
    let processed = 0;
    const indexIn = new Map<string, number>();
    for (const { name, entry } of entries) {
      const index = indexIn.get(name) ?? 0;
      indexIn.set(name, index + 1);
      const problem = this.identifyOne(name, entry);
      if (problem) errors.push({ type: problem, input_array: name, index });
      else processed += 1;
    }
    const answer: Record<string, Json> = { aliases_processed: processed, message: 'success' };
    if (errors.length) answer.errors = errors;
    return this.send(response, 201, answer);
  }

  /**
   * POST /users/delete (post_user_delete.md): "Up to 50 external_ids, user_aliases, braze_ids,
   * email_addresses, or phone_numbers"; an e-mail or phone number needs a `prioritization`, and
   * "deleting users will not occur if more than one user matches a prioritization". Answers
   * `deleted`, the users queued for deletion — an identifier no user has is no error. An external
   * ID that was renamed away from still finds its user.
   */
  private deleteUsers(text: string, response: http.ServerResponse): void {
    const body = jsonObject(text);
    if (!body) return this.send(response, 400, { message: 'Invalid JSON' });
    const lists = ['external_ids', 'user_aliases', 'braze_ids', 'email_addresses', 'phone_numbers'] as const;
    const given = lists.filter((name) => body[name] !== undefined);
    if (given.length === 0)
      return this.send(response, 400, { message: 'One of external_ids, user_aliases, braze_ids, email_addresses or phone_numbers is required' });
    if (given.some((name) => !Array.isArray(body[name]))) return this.send(response, 400, { message: 'Identifiers must be arrays' });
    if (given.reduce((n, name) => n + (body[name] as Json[]).length, 0) > 50) return this.send(response, 400, { message: 'Max Input Length Exceeded' });
    const keys = new Set<string>();
    for (const id of (body.external_ids as Json[] | undefined) ?? []) {
      const primary = typeof id === 'string' ? (this.deprecatedIds.get(id) ?? id) : undefined;
      if (primary !== undefined && this.profiles.has(`external_id:${primary}`)) keys.add(`external_id:${primary}`);
    }
    for (const alias of (body.user_aliases as Json[] | undefined) ?? []) {
      if (!isObject(alias) || typeof alias.alias_name !== 'string' || typeof alias.alias_label !== 'string')
        return this.send(response, 400, { message: 'Invalid user alias' });
      const key = profileKey({ user_alias: alias });
      if (this.profiles.has(key)) keys.add(key);
    }
    for (const [name, field] of [
      ['email_addresses', 'email'],
      ['phone_numbers', 'phone'],
    ] as const) {
      for (const entry of (body[name] as Json[] | undefined) ?? []) {
        if (!isObject(entry) || typeof entry[field] !== 'string') return this.send(response, 400, { message: `Each of ${name} needs ${field}` });
        const chosen = this.prioritized(this.holdersOf(field, entry[field] as string), entry.prioritization);
        if (chosen === 'invalid') return this.send(response, 400, { message: `Each of ${name} needs a valid prioritization` });
        // "deleting users will not occur if more than one user matches a prioritization"
        if (chosen !== undefined && chosen !== 'several') keys.add(chosen);
      }
    }
    for (const key of keys) {
      this.profiles.delete(key);
      this.updatedAt.delete(key);
    }
    this.stats.usersDeleted += keys.size;
    return this.send(response, 202, { deleted: keys.size, message: 'success' });
  }

  /**
   * POST /users/external_ids/rename (post_external_ids_rename.md): each user's primary external_id
   * becomes `new_external_id`, the old one is kept as deprecated (it still finds the user). The
   * current ID must be a primary one, the new one not in use as either, and the two different.
   * Answers the renames made in `external_ids` and the others in `rename_errors`.
   */
  private rename(text: string, response: http.ServerResponse): void {
    const body = jsonObject(text);
    if (!body) return this.send(response, 400, { message: 'Invalid JSON' });
    const renames = body.external_id_renames;
    if (!Array.isArray(renames) || renames.length === 0) return this.send(response, 400, { message: "'external_id_renames' must be a non-empty array" });
    if (renames.length > 50) return this.send(response, 400, { message: 'Max Input Length Exceeded' });
    const done: string[] = [];
    const errors: Json[] = [];
    renames.forEach((entry, index) => {
      const from = isObject(entry) ? entry.current_external_id : undefined;
      const to = isObject(entry) ? entry.new_external_id : undefined;
      let problem: string | undefined;
      if (typeof from !== 'string' || typeof to !== 'string' || !from || !to) problem = 'current_external_id and new_external_id are required';
      else if (from === to) problem = 'current_external_id and new_external_id cannot be the same';
      else if (!this.profiles.has(`external_id:${from}`)) problem = 'current_external_id is not a primary external ID';
      else if (this.profiles.has(`external_id:${to}`) || this.deprecatedIds.has(to)) problem = 'new_external_id is already in use';
      if (problem !== undefined) {
        errors.push([index, problem]);
        return;
      }
      const profile = this.profiles.get(`external_id:${from as string}`)!;
      this.profiles.delete(`external_id:${from as string}`);
      this.updatedAt.delete(`external_id:${from as string}`);
      this.profiles.set(`external_id:${to as string}`, profile);
      this.touch(`external_id:${to as string}`);
      for (const [old, primary] of this.deprecatedIds) if (primary === from) this.deprecatedIds.set(old, to as string);
      this.deprecatedIds.set(from as string, to as string);
      done.push(to as string);
    });
    return this.send(response, 201, { message: 'success', external_ids: done, rename_errors: errors });
  }

  private identifyOne(list: 'aliases_to_identify' | 'emails_to_identify' | 'phone_numbers_to_identify', entry: Json): string | undefined {
    if (!isObject(entry) || typeof entry.external_id !== 'string' || !entry.external_id) return 'external_id is required';
    let candidates: string[];
    if (list === 'aliases_to_identify') {
      const alias = entry.user_alias;
      if (!isObject(alias) || typeof alias.alias_name !== 'string' || typeof alias.alias_label !== 'string') return 'Invalid user_alias';
      const key = `alias:${alias.alias_label}:${alias.alias_name}`;
      candidates = this.profiles.has(key) ? [key] : [];
    } else {
      const field = list === 'emails_to_identify' ? 'email' : 'phone';
      const value = entry[field];
      if (typeof value !== 'string' || !value) return `${field} is required`;
      const chosen = this.prioritized(this.holdersOf(field, value), entry.prioritization);
      if (chosen === 'invalid') return 'Invalid prioritization';
      // An ordered prioritization that still matches more than one user merges nothing.
      if (chosen === 'several') return 'More than one user matches the prioritization';
      candidates = chosen === undefined ? [] : [chosen];
    }
    const from = candidates[0];
    if (from === undefined) return 'No user matches';
    const target = `external_id:${this.deprecatedIds.get(entry.external_id) ?? entry.external_id}`;
    if (from === target) return undefined;
    const anonymous = this.profiles.get(from)!;
    const identified = this.profiles.get(target);
    if (identified) {
      // "merges the following list of fields found exclusively on the anonymous user to the identified user"
      for (const [name, value] of Object.entries(anonymous)) if (!(name in identified)) identified[name] = value;
    } else this.profiles.set(target, anonymous);
    this.profiles.delete(from);
    this.updatedAt.delete(from);
    this.touch(target);
    return undefined;
  }

  /**
   * POST /users/export/segment: asynchronous, as Braze's is. Answers at once with the object prefix
   * and the URL the archive will be at; the URL answers 404 until the export is ready (after
   * `exportDelayMs`), then a zip (default) or gzip of NDJSON files of ≤ 5,000 users. The members
   * are those at the time of the request. One export per segment at a time.
   */
  private startSegmentExport(text: string, response: http.ServerResponse): void {
    let body: { segment_id?: unknown; fields_to_export?: unknown; output_format?: unknown; callback_endpoint?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      return this.send(response, 400, { message: 'Invalid JSON' });
    }
    const segmentId = body.segment_id;
    if (typeof segmentId !== 'string' || !(segmentId in this.segments)) return this.send(response, 400, { message: 'Invalid segment_id' });
    if (!Array.isArray(body.fields_to_export) || body.fields_to_export.some((f) => typeof f !== 'string'))
      return this.send(response, 400, { message: "'fields_to_export' must be an array of field names" });
    const format = body.output_format ?? 'zip';
    if (format !== 'zip' && format !== 'gzip') return this.send(response, 400, { message: "'output_format' must be zip or gzip" });
    if ([...this.exports.values()].some((e) => e.segmentId === segmentId && !e.ready))
      return this.send(response, 429, { message: 'An export of this segment is already in progress' });
    const attribute = this.segments[segmentId];
    const fields = new Set(body.fields_to_export as string[]);
    const lines: string[] = [];
    // A segment on a boolean attribute (is true), or on an array attribute (includes the segment's identifier).
    const member = (value: Json | undefined) => value === true || (Array.isArray(value) && value.includes(segmentId));
    for (const [key, profile] of this.profiles) if (member(profile[attribute])) lines.push(exportLine(key, profile, fields));
    const prefix = randomUUID();
    const entry: { segmentId: string; ready?: { body: Buffer; contentType: string } } = { segmentId };
    this.exports.set(prefix, entry);
    const callback = typeof body.callback_endpoint === 'string' ? body.callback_endpoint : undefined;
    setTimeout(() => {
      const files = exportFiles(prefix, lines);
      entry.ready = format === 'zip' ? { body: zipFiles(files), contentType: 'application/zip' } : { body: gzipFiles(files), contentType: 'application/gzip' };
      if (callback) void fetch(callback, { method: 'POST', body: JSON.stringify({ object_prefix: prefix, segment_id: segmentId }) }).catch(() => undefined);
    }, this.exportDelayMs).unref();
    this.send(response, 201, { message: 'success', object_prefix: prefix, url: `${this.url}/__exports/${prefix}.${format === 'zip' ? 'zip' : 'gz'}` });
  }

  private serveExport(url: string, response: http.ServerResponse): void {
    const prefix = /^\/__exports\/([0-9a-f-]{36})\.(zip|gz)$/.exec(url)?.[1];
    const ready = prefix ? this.exports.get(prefix)?.ready : undefined;
    if (!ready) {
      response.writeHead(404, { 'Content-Type': 'application/xml' });
      response.end('<Error><Code>NoSuchKey</Code></Error>');
      return;
    }
    response.writeHead(200, { 'Content-Type': ready.contentType, 'Content-Length': ready.body.length });
    response.end(ready.body);
  }

  /** Test and benchmark hook (no auth: the server only listens on loopback). */
  private sendStats(response: http.ServerResponse): void {
    const text = JSON.stringify({
      requests: this.stats.requests,
      byStatus: this.stats.byStatus,
      objectsApplied: this.stats.objectsApplied,
      rowErrors: this.stats.rowErrors,
      firstRequestAtMs: this.stats.firstRequestAtMs,
      lastRequestAtMs: this.stats.lastRequestAtMs,
      profiles: this.profiles.size,
      maxPerWindow: Math.max(0, ...this.stats.perWindow.values()),
    });
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(text);
  }

  private count(status: number): void {
    this.stats.byStatus[status] = (this.stats.byStatus[status] ?? 0) + 1;
  }

  private send(response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    this.count(status);
    const text = JSON.stringify(body);
    response.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
    response.end(text);
  }
}

/**
 * What Braze keeps of a profile field's value (user_attributes_object.md): a country that is not an
 * ISO-3166-1 alpha-2 code is stored as NULL; a time zone that is not a valid one is not set
 * (undefined: the field is left as it was), nor is a subscription state Braze does not list (the
 * document names the values it takes and nothing else; left as it was is our reading).
 */
function storedValue(name: string, value: Json, maxArrayLength: number): Json | undefined {
  if (Array.isArray(value) && !STANDARD_FIELDS.has(name) && !value.some((v) => isObject(v))) return arrayOf(value, maxArrayLength);
  // "Available values are "opted_in", "unsubscribed", and "subscribed"": another is not a state.
  if (name === 'email_subscribe' || name === 'push_subscribe')
    return value === 'opted_in' || value === 'unsubscribed' || value === 'subscribed' ? value : undefined;
  if (name === 'country' && value !== null) return typeof value === 'string' && /^[A-Z]{2}$/.test(value) ? value : null;
  if (name === 'time_zone' && value !== null) {
    // IANA names, and names like the documented "Eastern Time (US & Canada)".
    if (/^[A-Z][A-Za-z.'&-]*( [A-Za-z.'&-]+)* \([A-Za-z .&'-]+\)$/.test(String(value))) return value;
    try {
      new Intl.DateTimeFormat('en', { timeZone: String(value) });
      return value;
    } catch {
      return undefined;
    }
  }
  return value;
}

/**
 * `subscription_groups` sets the state of each group it lists, and only those: "Available values
 * for subscription_state are "subscribed" and "unsubscribed"" (user_attributes_object.md). An entry
 * without an ID or with another state changes nothing. Kept as the documented array, by group.
 */
function mergeSubscriptionGroups(held: Json | undefined, given: Json): Json[] | undefined {
  if (!Array.isArray(given)) return undefined;
  const groups = new Map<string, Json>();
  if (Array.isArray(held)) for (const entry of held) if (isObject(entry)) groups.set(String(entry.subscription_group_id), entry);
  for (const entry of given) {
    if (!isObject(entry) || typeof entry.subscription_group_id !== 'string') continue;
    if (entry.subscription_state !== 'subscribed' && entry.subscription_state !== 'unsubscribed') continue;
    groups.set(entry.subscription_group_id, { subscription_group_id: entry.subscription_group_id, subscription_state: entry.subscription_state });
  }
  return [...groups.values()];
}

/**
 * An array custom attribute (user_attributes_object.md): "only unique values are supported" (a set
 * given with repeats keeps each once); beyond its maximum length — "By default, the length of an
 * array for an attribute is up to 500 items" — "the first … will be removed from the array, and the
 * most recent … will be added" (custom_attributes.md, Arrays).
 */
function arrayOf(values: Json[], max: number): Json[] {
  const unique: Json[] = [];
  for (const value of values) if (!unique.some((held) => JSON.stringify(held) === JSON.stringify(value))) unique.push(value);
  return unique.slice(-max);
}

/** `{add: […]}` / `{remove: […]}` (or `$add`/`$remove`) on an array attribute. */
function isArrayUpdate(value: Json): value is Record<string, Json> {
  if (!isObject(value)) return false;
  const keys = Object.keys(value);
  return keys.length > 0 && keys.every((k) => k === 'add' || k === 'remove' || k === '$add' || k === '$remove') && keys.every((k) => Array.isArray(value[k]));
}

/**
 * Braze applies an array update's additions first, then its removals ("Adding an element … appends
 * the element to the end of the array, unless it's already present, in which case it gets moved …
 * to the end"); beyond the maximum, the first elements go.
 */
function updatedArray(held: Json | undefined, update: Record<string, Json>, max: number): Json[] {
  const same = (a: Json, b: Json) => JSON.stringify(a) === JSON.stringify(b);
  let values: Json[] = Array.isArray(held) ? [...held] : [];
  for (const added of [...((update.add as Json[]) ?? []), ...((update.$add as Json[]) ?? [])]) values = [...values.filter((v) => !same(v, added)), added];
  for (const removed of [...((update.remove as Json[]) ?? []), ...((update.$remove as Json[]) ?? [])]) values = values.filter((v) => !same(v, removed));
  return values.slice(-max);
}

const STANDARD_FIELDS = new Set(['current_location', 'facebook', 'twitter', 'push_tokens', 'user_alias', 'subscription_groups']);

/** A nested custom attribute: an object value (not an update operator of a plain one) or an array of objects. */
function isNestedCustom(name: string, value: Json): boolean {
  if (STANDARD_FIELDS.has(name)) return false;
  if (Array.isArray(value)) return value.some((v) => isObject(v));
  if (!isObject(value)) return false;
  const keys = Object.keys(value);
  return !(keys.length > 0 && keys.every((k) => k === 'inc' || k === 'add' || k === 'remove' || k === '$add' || k === '$remove'));
}

function holdsNull(value: Json): boolean {
  if (value === null) return true;
  if (Array.isArray(value)) return value.some(holdsNull);
  if (isObject(value)) return Object.values(value).some(holdsNull);
  return false;
}

export function profileKey(object: Record<string, Json>): string {
  if (typeof object.external_id === 'string') return `external_id:${object.external_id}`;
  if (isObject(object.user_alias)) return `alias:${String(object.user_alias.alias_label)}:${String(object.user_alias.alias_name)}`;
  if (typeof object.email === 'string') return `email:${object.email}`;
  if (typeof object.braze_id === 'string') return `braze_id:${object.braze_id}`;
  return `phone:${String(object.phone)}`;
}

/** A request body that is a JSON object, or undefined. */
function jsonObject(text: string): Record<string, Json> | undefined {
  try {
    const parsed = JSON.parse(text) as Json;
    return isObject(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, Json> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
