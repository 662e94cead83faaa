import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { formatIssues, InvalidInputError } from '../errors';
import { checkBrazeEndpoint } from './endpoint';
import { BRAZE_CHANNEL_STATES, BRAZE_GROUP_STATES, BRAZE_MAX_STRING_LENGTH, NOT_ATTRIBUTE_FIELDS, brazeChannelField } from '../brazeApi';

/** A number whose every failure says the range (zod names one bound at a time); with `orNull`, null too. */
function numberIn(range: { min: number; max?: number; whole?: boolean; orNull?: boolean }) {
  const kind = range.whole === false ? 'a number' : 'a whole number';
  const allowed = `must be ${kind}${range.max === undefined ? `, at least ${range.min}` : ` from ${range.min} to ${range.max}`}${range.orNull ? ', or null' : ''}`;
  const number = z.number({ error: allowed }).min(range.min, allowed);
  const bounded = range.max === undefined ? number : number.max(range.max, allowed);
  return range.whole === false ? bounded : bounded.int(allowed);
}

/** Braze custom attribute names: non-empty, ≤255 characters, not starting with `$` (reserved). */
const brazeAttributeName = z
  .string()
  .min(1)
  .max(BRAZE_MAX_STRING_LENGTH)
  .refine((name) => !name.startsWith('$'), 'must not start with "$" (reserved by Braze)');

const segmentSchema = z.strictObject({
  /** The CI segment as exported: the entity/table name in model.json and the folder name. */
  table: z.string().min(1),
  /** The Braze segment API identifier CI's own Braze export asks for. */
  brazeSegmentId: z.string().min(1),
  /** The custom attribute members carry in Braze; defaults to the segment API identifier. */
  attribute: brazeAttributeName.optional(),
});

const matchingSchema = z.strictObject({
  /** The column holding the e-mail address (CI's "E-mail" data-matching field). */
  emailColumn: z.string().min(1).optional(),
  /** The column holding the Braze customer ID (CI's "Braze customer ID" data-matching field). */
  customerIdColumn: z.string().min(1).optional(),
  /** Whether the customer-ID column holds Braze's external_id. If not, rows are keyed by e-mail or alias. */
  customerIdIsExternalId: z.boolean().default(true),
  /**
   * How rows without a usable external_id are keyed, in order of preference. E-mail first: Braze
   * matches existing profiles by e-mail, and CI's CustomerId can change when profiles merge.
   */
  fallbackIdentifiers: z.array(z.enum(['email', 'user_alias'])).default(['email', 'user_alias']),
  /** The alias label used when a row is keyed by user_alias (alias_name = the customer-ID value). */
  aliasLabel: z.string().min(1).max(BRAZE_MAX_STRING_LENGTH).default('ci_customer_id'),
  /**
   * Whether a customer ID that is a GUID is sent in one spelling (lower case, hyphenated, no
   * braces), so two spellings are one Braze user. Default: when the customer-ID column's dataType
   * is GUID. A state written with other spellings is migrated (renamed in Braze) on the next run.
   */
  normalizeGuids: z.boolean().optional(),
});

/**
 * A Braze workspace other than the app's default one (BRAZE_REST_ENDPOINT and its key): its own
 * REST endpoint, and where its key comes from — an app setting named here, or a Key Vault secret.
 */
const workspaceSchema = z
  .strictObject({
    /** As copied from the dashboard (`rest.fra-01.braze.eu`) or as a URL. */
    restEndpoint: z.string().superRefine((raw, ctx) => {
      const checked = checkBrazeEndpoint(raw);
      if ('problem' in checked) ctx.addIssue({ code: 'custom', message: checked.problem });
    }),
    /** The app setting that holds the workspace's REST API key. */
    apiKeySetting: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an app setting name')
      .optional(),
    /** Or the key as a Key Vault secret (`https://<vault>.vault.azure.net/secrets/<name>`), read with the app's identity. */
    apiKeySecretUri: z.url().optional(),
    /** Objects per /users/track request for this workspace (50 on Monthly Active Users CY 24-25 contracts); default BRAZE_OBJECTS_PER_REQUEST. */
    objectsPerRequest: numberIn({ min: 1, max: 75 }).optional(),
  })
  .refine((w) => (w.apiKeySetting === undefined) !== (w.apiKeySecretUri === undefined), 'needs exactly one of apiKeySetting and apiKeySecretUri');

/**
 * A CI column that holds a subscription state: the e-mail or push channel (`email_subscribe`,
 * `push_subscribe`) or one Braze subscription group. `values` maps what the column holds to Braze's
 * states; without it the usual words are read (yes/no, true/false, opted in/out, granted/denied).
 */
const subscriptionSchema = z
  .strictObject({
    column: z.string().min(1),
    channel: z.enum(['email', 'push']).optional(),
    /** The group's ID as Braze shows it (Audience > Subscriptions), a UUID. */
    subscriptionGroupId: z
      .string()
      .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a subscription group ID as Braze shows it (a UUID)')
      .optional(),
    /** CI value → Braze state; compared trimmed, case-insensitively, spaces and hyphens as "_". */
    values: z.record(z.string().min(1), z.enum(BRAZE_CHANNEL_STATES)).optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.channel === undefined) === (s.subscriptionGroupId === undefined))
      ctx.addIssue({ code: 'custom', message: 'needs exactly one of channel ("email" or "push") and subscriptionGroupId' });
    if (s.subscriptionGroupId !== undefined)
      for (const [from, to] of Object.entries(s.values ?? {}))
        if (!(BRAZE_GROUP_STATES as readonly string[]).includes(to))
          ctx.addIssue({ code: 'custom', path: ['values', from], message: `a subscription group's state is "subscribed" or "unsubscribed", not "${to}"` });
  });

/**
 * How memberships appear in Braze: one boolean attribute per segment (`flags`), or one array
 * attribute listing the segments' API identifiers (`list`), sent whole whenever it changes.
 */
const membershipSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('flags') }),
  z.strictObject({
    mode: z.literal('list'),
    attribute: brazeAttributeName.default('ci_segments'),
    /** What a profile that left every segment gets: the attribute removed (null, default) or an empty list ([]). */
    whenEmpty: z.union([z.null(), z.tuple([])], { error: 'must be null or []' }).default(null),
    /** The most elements Braze keeps in this array attribute: 500 by default (custom_attributes.md, Arrays); lower if your workspace sets it lower. */
    maxLength: numberIn({ min: 1, max: 500 }).default(500),
  }),
]);

/** What a run can tell the outside about: how it ended, or that it waits for a person. */
export const NOTIFY_EVENTS = ['completed', 'failed', 'held', 'halted', 'stalled', 'drift'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

/**
 * A webhook told about a destination's runs: a POST of the run's summary (ids, counts, reasons —
 * no identifier, e-mail or name). Its URL is a secret (Slack's and Teams' carry their key), so the
 * config names where it is — an app setting, or a Key Vault secret read with the app's identity.
 */
const notifySchema = z
  .strictObject({
    urlSetting: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an app setting name')
      .optional(),
    urlSecretUri: z.url().optional(),
    on: z.array(z.enum(NOTIFY_EVENTS)).min(1).default(['failed', 'held', 'halted', 'stalled']),
    /** `json` (the summary as is), `slack` (an incoming webhook's text), `teams` (a Workflows webhook's Adaptive Card). */
    format: z.enum(['json', 'slack', 'teams']).default('json'),
  })
  .refine((n) => (n.urlSetting === undefined) !== (n.urlSecretUri === undefined), 'needs exactly one of urlSetting and urlSecretUri');

/**
 * When a run must wait for a person instead of sending: a broken export upstream (a failed job, a
 * truncated file, a wrong filter) looks like a mass exit, and clearing a segment stops every Canvas
 * that targets it. A run that trips the guard is `held` with its preview until it is approved or
 * cancelled. The first sync of a destination (nothing delivered yet) is never held.
 */
const guardSchema = z.strictObject({
  /** Hold when a run would clear more than this share of a segment's members (null: never). */
  maxClearedShare: numberIn({ min: 0, max: 1, whole: false, orNull: true }).nullable().default(0.2),
  /** Hold when a run would send more than this share of the profiles Braze holds for the destination (null: never, the default). */
  maxChangedShare: numberIn({ min: 0, max: 1, whole: false, orNull: true }).nullable().default(null),
  /** Fewer profiles than this cleared (per segment) or changed never hold a run: small segments move by whole shares. */
  minProfiles: numberIn({ min: 0 }).default(10),
  /** Hold when a run would delete more users than this from Braze (erasure; null: never). A deletion cannot be undone. */
  maxErasures: numberIn({ min: 0, orNull: true }).nullable().default(100),
});

export const DEFAULT_GUARD = { maxClearedShare: 0.2, maxChangedShare: null, minProfiles: 10, maxErasures: 100 } as const satisfies z.input<typeof guardSchema>;

/**
 * Erasure: a CI table exported to the destination like a segment, whose rows are users to delete
 * from Braze (POST /users/delete), keyed by the destination's matching rules. Off unless named.
 */
const erasureSchema = z.strictObject({
  /** The entity in model.json (and its folder) listing the users to delete. */
  table: z.string().min(1),
});

const destinationSchema = z
  .strictObject({
    /** The export destination's folder name (`<ExportDestinationName>` in the blob layout). */
    name: z
      .string()
      .min(1)
      .refine((n) => !n.includes('/'), 'must be a folder name without "/"'),
    /** Limit to one `CustomerInsights_<instanceId>` folder; all instances when absent. */
    instance: z.string().min(1).optional(),
    segments: z.array(segmentSchema).min(1, 'needs at least one segment').max(32, 'at most 32 segments per destination'),
    matching: matchingSchema,
    /** Extra columns → Braze attribute names (standard ones like first_name, or custom ones). */
    fields: z.record(z.string().min(1), brazeAttributeName).default({}),
    /** Where a phone number without a country code is from (ISO-3166-1 alpha-2, e.g. DE), for `phone` in E.164. */
    phoneCountry: z
      .string()
      .regex(/^[A-Z]{2}$/, 'must be an ISO-3166-1 alpha-2 code such as DE or US')
      .optional(),
    /** One boolean attribute per segment (default), or one list of segment identifiers. Switching is migrated by the next run. */
    membership: membershipSchema.default({ mode: 'flags' }),
    /** What a member who left a segment gets: the attribute removed (null, default) or false (flags only). */
    leaverValue: z.union([z.null(), z.literal(false)]).default(null),
    /** Every run of this destination is a preview (a first rollout): nothing is sent until this is removed. */
    dryRun: z.boolean().default(false),
    /** The Braze workspace this destination syncs to (a name under `workspaces`); the app's default one when absent. */
    workspace: z.string().min(1).optional(),
    /** Columns holding subscription state (channels, subscription groups): sent when CI's value changes. */
    subscriptions: z.array(subscriptionSchema).default([]),
    /** Users to delete from Braze: off unless set. */
    erasure: erasureSchema.optional(),
    /** Webhooks told when a run ends or waits for a person. */
    notify: z.array(notifySchema).default([]),
    /** The guard against mass change: when a run waits for approval instead of sending. */
    guard: guardSchema.default(() => ({ ...DEFAULT_GUARD })),
  })
  .superRefine((d, ctx) => {
    if (!d.matching.emailColumn && !d.matching.customerIdColumn) {
      ctx.addIssue({ code: 'custom', path: ['matching'], message: 'needs emailColumn or customerIdColumn (or both)' });
    }
    const attributes = new Map<string, string>();
    d.segments.forEach((segment, i) => {
      const attribute = segment.attribute ?? segment.brazeSegmentId;
      const other = attributes.get(attribute);
      if (other !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['segments', i, 'attribute'], message: `"${attribute}" is already used by segment ${other}` });
      }
      attributes.set(attribute, segment.table);
    });
    if (d.erasure) {
      if (d.segments.some((s) => s.table === d.erasure!.table))
        ctx.addIssue({ code: 'custom', path: ['erasure', 'table'], message: `"${d.erasure.table}" is also a segment: its members would be deleted` });
      if (d.segments.length > 31) ctx.addIssue({ code: 'custom', path: ['segments'], message: 'at most 31 segments with an erasure table' });
    }
    const tables = d.segments.map((s) => s.table);
    tables.forEach((table, i) => {
      if (tables.indexOf(table) !== i) ctx.addIssue({ code: 'custom', path: ['segments', i, 'table'], message: `"${table}" is listed twice` });
    });
    for (const [column, brazeName] of Object.entries(d.fields)) {
      if (attributes.has(brazeName)) {
        ctx.addIssue({ code: 'custom', path: ['fields', column], message: `"${brazeName}" is also a segment attribute` });
      }
      if (NOT_ATTRIBUTE_FIELDS.includes(brazeName)) {
        ctx.addIssue({ code: 'custom', path: ['fields', column], message: `"${brazeName}" is an identifier, not an attribute; use matching` });
      }
      if (brazeName === 'subscription_groups') {
        ctx.addIssue({ code: 'custom', path: ['fields', column], message: 'subscription groups are mapped under subscriptions (one entry per group)' });
      }
    }
    if (d.membership.mode === 'list') {
      const list = d.membership.attribute;
      if (Object.values(d.fields).includes(list)) ctx.addIssue({ code: 'custom', path: ['membership', 'attribute'], message: `"${list}" is also a field` });
      if (attributes.has(list))
        ctx.addIssue({ code: 'custom', path: ['membership', 'attribute'], message: `"${list}" is also the attribute of segment ${attributes.get(list)}` });
      if (d.segments.length > d.membership.maxLength)
        ctx.addIssue({
          code: 'custom',
          path: ['membership', 'maxLength'],
          message: `a profile in all ${d.segments.length} segments would need a list of ${d.segments.length}, and Braze cuts this array at ${d.membership.maxLength} elements (dropping the first): raise the attribute's maximum length in Braze and maxLength with it`,
        });
    }
    const subscribed = new Map<string, number>();
    for (const brazeName of Object.values(d.fields)) if (brazeName === 'email_subscribe' || brazeName === 'push_subscribe') subscribed.set(brazeName, -1);
    d.subscriptions.forEach((entry, i) => {
      const target = entry.channel ? brazeChannelField(entry.channel) : `subscription group ${entry.subscriptionGroupId?.toLowerCase()}`;
      const other = subscribed.get(target);
      if (other !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['subscriptions', i],
          message: `${target} is already mapped ${other < 0 ? 'under fields' : `by subscriptions[${other}]`}: one column per state`,
        });
      subscribed.set(target, i);
    });
  });

export const syncConfigSchema = z
  .strictObject({
    /** Braze workspaces by name, for destinations that do not sync to the default one. */
    workspaces: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be a name of letters, digits, "_" or "-"'), workspaceSchema).default({}),
    destinations: z
      .array(destinationSchema)
      .min(1, 'needs at least one destination')
      .refine((ds) => new Set(ds.map((d) => `${d.instance ?? '*'}|${d.name}`)).size === ds.length, 'lists a destination twice'),
  })
  .superRefine((config, ctx) => {
    config.destinations.forEach((d, i) => {
      if (d.workspace !== undefined && !(d.workspace in config.workspaces)) {
        ctx.addIssue({ code: 'custom', path: ['destinations', i, 'workspace'], message: `"${d.workspace}" is not one of the configured workspaces` });
      }
    });
  });

export type WorkspaceConfig = z.output<typeof workspaceSchema>;

export type SyncConfig = z.output<typeof syncConfigSchema>;
export type DestinationConfig = SyncConfig['destinations'][number];
export type SegmentConfig = DestinationConfig['segments'][number];
export type GuardConfig = DestinationConfig['guard'];
export type SubscriptionConfig = DestinationConfig['subscriptions'][number];
export type MembershipConfig = DestinationConfig['membership'];
export type NotifyTarget = DestinationConfig['notify'][number];

/** Whether the guard can hold a run at all (either share is set). */
export function guardEnabled(guard: GuardConfig): boolean {
  return guard.maxClearedShare !== null || guard.maxChangedShare !== null;
}

/**
 * Whether a run of the destination stages its batches until it is within the guard: when the guard
 * can hold it and something was delivered before (a first sync is never held), and always when it
 * deletes users with a limit to keep (a first sync may delete too).
 */
export function runsStaged(destination: DestinationConfig, hasState: boolean): boolean {
  return (guardEnabled(destination.guard) && hasState) || (destination.erasure !== undefined && destination.guard.maxErasures !== null);
}

export function segmentAttribute(segment: SegmentConfig): string {
  return segment.attribute ?? segment.brazeSegmentId;
}

/** The mapping config from its JSON; `source` says where it came from in every message. */
export function parseSyncConfig(json: string, source: string): SyncConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    throw new InvalidInputError(`Mapping config (${source}) is not valid JSON: ${jsonProblem(json, error as Error)}`);
  }
  const parsed = syncConfigSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw new InvalidInputError(formatIssues(`Mapping config (${source})`, parsed.error));
  return parsed.data;
}

/** JSON.parse's reason with the line and column: it says only "at position 1234", or (Node 22) both in its own words. */
function jsonProblem(json: string, error: Error): string {
  if (!json.trim()) return 'it is empty';
  const reason = error.message.replace(/ \(line \d+ column \d+\)$/, '');
  const position = /at position (\d+)/.exec(reason);
  if (!position) return reason;
  const before = json.slice(0, Number(position[1])).split('\n');
  return `${reason} (line ${before.length}, column ${before[before.length - 1].length + 1})`;
}

/**
 * The mapping config in a file: SYNC_CONFIG_FILE's, or one a tool names otherwise (`setting`, e.g.
 * `--config`). A file that cannot be read or is not JSON is an InvalidInputError naming it and why.
 */
export function readSyncConfigFile(file: string, setting = 'SYNC_CONFIG_FILE'): SyncConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new InvalidInputError(`${setting}: cannot read ${JSON.stringify(file)}: ${fileProblem(error as NodeJS.ErrnoException)}`);
  }
  return parseSyncConfig(text, `${setting} ${JSON.stringify(file)}`);
}

/** Why a file cannot be read, in words: Node's message repeats the path and leads with the code. */
function fileProblem(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EISDIR':
      return 'it is a folder';
    case 'ENOTDIR':
      return 'a part of its path is not a folder';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return error.code ?? error.message;
  }
}

export function loadSyncConfig(source: { inline?: string; file?: string }): SyncConfig {
  if (source.inline) return parseSyncConfig(source.inline, 'SYNC_CONFIG');
  if (!source.file) throw new InvalidInputError('No mapping config: set SYNC_CONFIG or SYNC_CONFIG_FILE');
  return readSyncConfigFile(source.file);
}

export function findDestination(config: SyncConfig, name: string, instance?: string): DestinationConfig | undefined {
  return config.destinations.find((d) => d.name === name && (!d.instance || !instance || d.instance === instance));
}
