import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { formatIssues, InvalidInputError } from '../errors';
import { checkBrazeEndpoint } from './endpoint';

/**
 * A number setting, read from its digits: `Number()` would take "" as 0 and "0x10" as 16, and a
 * value that is no number would reach the message as NaN instead of as written. Every failure
 * says the range.
 */
function numberSetting(range: { min: number; max?: number; whole?: boolean }) {
  const whole = range.whole ?? true;
  const allowed = `must be ${whole ? 'a whole number' : 'a number'}${range.max === undefined ? `, at least ${range.min}` : ` from ${range.min} to ${range.max}`}`;
  const inRange = z.number().min(range.min, allowed);
  return z
    .string()
    .trim()
    .regex(whole ? /^\d+$/ : /^\d+(\.\d+)?$/, allowed)
    .transform(Number)
    .pipe(range.max === undefined ? inRange : inRange.max(range.max, allowed));
}

const positiveInt = (fallback: number) => numberSetting({ min: 1 }).default(fallback);

/** A field of an NCRONTAB expression: what it takes, and the names NCrontab reads for its numbers. */
interface NcrontabField {
  name: string;
  min: number;
  max: number;
  values: string;
  names?: string[];
}

const NCRONTAB_SHAPE = 'six fields {second} {minute} {hour} {day} {month} {day-of-week}';
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const NCRONTAB_FIELDS: NcrontabField[] = [
  { name: 'second', min: 0, max: 59, values: '0-59' },
  { name: 'minute', min: 0, max: 59, values: '0-59' },
  { name: 'hour', min: 0, max: 23, values: '0-23' },
  { name: 'day', min: 1, max: 31, values: '1-31' },
  { name: 'month', min: 1, max: 12, values: '1-12 or Jan-Dec', names: MONTHS },
  { name: 'day-of-week', min: 0, max: 6, values: '0-6 (0 is Sunday) or Sun-Sat', names: DAYS },
];

/**
 * Why a timer schedule is not one the Functions host takes, or undefined when it is one. The host
 * reads the setting itself (`%SYNC_SCHEDULE%`), so without this check a bad one shows only as a
 * function that fails to load or a timer that never fires.
 *
 * Azure Functions timer trigger docs (learn.microsoft.com/azure/azure-functions/functions-bindings-timer,
 * "NCRONTAB expressions"): the NCrontab library, six fields `{second} {minute} {hour} {day} {month}
 * {day-of-week}`, each a value, `*`, a range `a-b`, a list `a,b` or a step `/n`; months and days
 * also by English name, case-insensitive and abbreviated (NCrontab takes any prefix of the name);
 * days of the week 0-6, 0 being Sunday. The timer extension also reads five fields (no seconds),
 * which the docs do not describe; refused here, with the six-field form to write instead, so an
 * expression reads one way only.
 * "TimeSpan": `hh:mm:ss` only on an App Service plan; this app runs on Flex Consumption (infra/).
 *
 * cron-parser checks each field's values. What it takes beyond NCrontab is refused before it:
 * `?`, `L`, `#`, `H`, `@daily`, 7 for Sunday. It refuses a reversed range (`6-2`), which NCrontab
 * would read as `2-6` rather than as the wrap-around it looks like, and a step of 0.
 */
function ncrontabProblem(expression: string): string | undefined {
  const read = readNcrontab(expression);
  return 'problem' in read ? read.problem : undefined;
}

/**
 * A schedule as cron-parser reads it, the same six fields with names as numbers (cron-parser
 * knows only three-letter names, NCrontab any prefix); undefined when the host would not take it.
 */
export function ncrontabAsCron(expression: string): string | undefined {
  const read = readNcrontab(expression);
  return 'cron' in read ? read.cron : undefined;
}

function readNcrontab(expression: string): { problem: string } | { cron: string } {
  const quoted = JSON.stringify(expression);
  const example = 'e.g. "0 */15 * * * *"';
  if (/^\d+(\.\d+)?:\d+(:\d+)?$/.test(expression.trim())) {
    return {
      problem: `${quoted} is a TimeSpan, which Azure Functions takes only on an App Service plan, not on Flex Consumption where this app runs: use NCRONTAB, ${NCRONTAB_SHAPE}, ${example}`,
    };
  }
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== NCRONTAB_FIELDS.length) {
    const hint = fields.length === 5 ? `not 5 (with the second first: ${JSON.stringify(`0 ${fields.join(' ')}`)})` : example;
    return { problem: `${quoted} is not an NCRONTAB expression: ${NCRONTAB_SHAPE}, ${hint}` };
  }
  const numeric: string[] = [];
  for (const [i, field] of NCRONTAB_FIELDS.entries()) {
    const written = `{${field.name}} ${JSON.stringify(fields[i])}`;
    const value = numericField(fields[i], field);
    const backwards = value === undefined ? undefined : backwardsRange(value, field);
    if (backwards)
      return {
        problem: `${quoted} is not an NCRONTAB expression: ${written} runs backwards; a range goes upwards, a wrap-around is two: ${JSON.stringify(backwards)}`,
      };
    if (value === undefined || !fieldParses(value, i)) {
      return { problem: `${quoted} is not an NCRONTAB expression: ${written} is not ${field.values}, *, a range (1-5), a list (1,3) or a step (*/5)` };
    }
    numeric.push(value);
  }
  // Each field is right on its own; together they can still name no time (day 31 of February).
  try {
    CronExpressionParser.parse(numeric.join(' '));
  } catch (error) {
    return { problem: `${quoted} never fires (${(error as Error).message})` };
  }
  return { cron: numeric.join(' ') };
}

/** The field with its names as numbers, as NCrontab reads them; undefined when it holds what NCrontab does not take. */
function numericField(written: string, field: NcrontabField): string | undefined {
  let unknownName = false;
  const value = written.replace(/[a-z]+/gi, (word) => {
    const index = field.names?.findIndex((name) => name.toLowerCase().startsWith(word.toLowerCase())) ?? -1;
    if (index < 0) unknownName = true;
    return String(index + field.min);
  });
  if (unknownName || !/^[\d*,/-]+$/.test(value)) return undefined;
  // The values of each list item (not its step) against NCrontab's maximum: cron-parser takes 7 for Sunday.
  if (value.split(',').some((item) => (item.split('/')[0].match(/\d+/g) ?? []).some((n) => Number(n) > field.max))) return undefined;
  return value;
}

/** The field written as it was meant when a range in it runs backwards (`22-2` → `22-23,0-2`), else undefined. */
function backwardsRange(value: string, field: NcrontabField): string | undefined {
  let backwards = false;
  const items = value.split(',').map((item) => {
    const range = /^(\d+)-(\d+)$/.exec(item);
    if (!range || Number(range[1]) <= Number(range[2])) return item;
    backwards = true;
    const [from, to] = [Number(range[1]), Number(range[2])];
    return `${from === field.max ? from : `${from}-${field.max}`},${to === field.min ? to : `${field.min}-${to}`}`;
  });
  return backwards ? items.join(',') : undefined;
}

/** Whether cron-parser takes the field, every other field being `*`. */
function fieldParses(value: string, position: number): boolean {
  try {
    CronExpressionParser.parse(NCRONTAB_FIELDS.map((_, i) => (i === position ? value : '*')).join(' '));
    return true;
  } catch {
    return false;
  }
}

/** An NCRONTAB setting, refused with its value and what is allowed. */
const schedule = z.string().superRefine((expression, ctx) => {
  const problem = ncrontabProblem(expression);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: expression });
});

/**
 * App settings (environment). Everything below this module receives typed values; nothing else
 * reads process.env.
 */
export const appSettingsSchema = z.object({
  AzureWebJobsStorage: z.string().optional(),
  AzureWebJobsStorage__blobServiceUri: z.url().optional(),
  AzureWebJobsStorage__queueServiceUri: z.url().optional(),
  AzureWebJobsStorage__tableServiceUri: z.url().optional(),
  /** The user-assigned managed identity the app authenticates with (its client id), when it has one. */
  AzureWebJobsStorage__clientId: z.string().optional(),
  /** The account CI exports to, when it is not the app's own: a connection string (local) or a blob endpoint (identity). */
  ExportStorage: z.string().optional(),
  ExportStorage__blobServiceUri: z.url().optional(),
  EXPORT_CONTAINER: z
    .string({ error: (issue) => (issue.input === undefined ? 'is required: the container CI exports to' : undefined) })
    .regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, 'must be a valid blob container name'),
  STATE_CONTAINER: z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, 'must be a valid blob container name')
    .default('braze-connector'),
  /** As copied from the dashboard or as a URL, kept as its URL; required with the key (crossSettingIssues). */
  BRAZE_REST_ENDPOINT: z
    .string()
    .transform((raw, ctx) => {
      const checked = checkBrazeEndpoint(raw);
      if ('url' in checked) return checked.url;
      ctx.addIssue({ code: 'custom', message: checked.problem, input: raw });
      return z.NEVER;
    })
    .optional(),
  BRAZE_API_KEY: z.string().optional(),
  /** The key as a Key Vault secret (`https://<vault>.vault.azure.net/secrets/<name>[/<version>]`), read with the app's identity. */
  BRAZE_API_KEY_SECRET_URI: z.url().optional(),
  SYNC_SCHEDULE: schedule.default('0 */15 * * * *'),
  SYNC_CONFIG: z.string().optional(),
  SYNC_CONFIG_FILE: z.string().optional(),
  RUNS_TABLE: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9]{2,62}$/)
    .default('brazeconnectorruns'),
  BRAZE_REQUEST_TIMEOUT_MS: positiveInt(30_000),
  BRAZE_MAX_RETRIES: numberSetting({ min: 0 }).default(6),
  BRAZE_RETRY_DELAY_MS: positiveInt(500),
  BRAZE_MAX_RETRY_DELAY_MS: positiveInt(30_000),
  /** Share of Braze's rate limit left for other tools of the workspace. */
  BRAZE_RATE_LIMIT_RESERVE_SHARE: numberSetting({ min: 0, max: 0.9, whole: false }).default(0.1),
  /**
   * An hourly contract's burst limit (requests per 3 s for the workspace), when known. Without it
   * the pacer learns the burst from the first 429 that leaves budget in the hour.
   */
  BRAZE_BURST_LIMIT: numberSetting({ min: 1 }).optional(),
  BRAZE_MAX_CONCURRENT_REQUESTS: positiveInt(32),
  /**
   * Objects per /users/track request: 75, or 50 on Monthly Active Users (CY 24-25) contracts
   * (braze-docs post_user_track.md). A workspace that refuses a request for its size ("Max Input
   * Length Exceeded") is learnt from as it goes; setting it saves those refusals.
   */
  BRAZE_OBJECTS_PER_REQUEST: numberSetting({ min: 1, max: 75 }).default(75),
  /** How long one sender invocation may spend before it re-enqueues the rest of its batch. */
  SENDER_BUDGET_MS: positiveInt(120_000),
  /** How long a reading step holds its claim, or the finalizer its lease, before another worker may take over (after a crash). */
  ENQUEUE_LEASE_MS: positiveInt(60_000),
  /**
   * Profiles a diff step (one shard) aims at: its slice of the refresh and of the state sit in one
   * instance's memory. Fewer makes more, smaller steps to spread; more makes fewer state blobs.
   */
  PROFILES_PER_SHARD: numberSetting({ min: 100, max: 1_000_000 }).default(100_000),
  /** Reading steps (map or diff) one instance works on at once; more are handed to other instances. */
  READER_STEPS_PER_INSTANCE: positiveInt(1),
  /**
   * A refresh whose partitions add up to at most this many bytes is read step after step by the
   * instance that has it, without waiting for the queue between steps (0: every step through the
   * queue). 8 MiB is ~55,000 rows, whose map steps take ~1.5 s in all: less than one queue hop
   * costs an idle instance (maxPollingInterval, 2 s).
   */
  SMALL_REFRESH_MAX_BYTES: numberSetting({ min: 0 }).default(8 * 1024 * 1024),
  /**
   * How long an instance that worked a reading step goes on taking the run's open steps (those no
   * instance has claimed) one after another, instead of going back to the queue for each (0: each
   * step from its own message). It bounds when a step starts, not how long it works: at most 120,
   * so a step started last still ends well within the function's timeout (10 minutes).
   */
  READ_ON_SECONDS: numberSetting({ min: 0, max: 120 }).default(60),
  /**
   * A sending run none of whose batches ended for this long is marked stalled. Above the longest
   * quiet a healthy run has: a batch handed back waits at most an hour for Braze's reset.
   */
  RUN_STALL_MINUTES: positiveInt(90),
  /** NCRONTAB of the reconcile timer; empty or unset, the timer function is not registered. */
  RECONCILE_SCHEDULE: schedule.optional(),
  /**
   * A reconcile asks Braze to export each segment and looks for the archive this often; it fails
   * the reconcile if an export is not ready this long after it was asked for (Braze documents
   * that large segments take long).
   */
  RECONCILE_POLL_SECONDS: positiveInt(30),
  RECONCILE_EXPORT_TIMEOUT_MINUTES: positiveInt(180),
  /** Ended runs older than this are deleted by the timer: their records, batches and rejects report. */
  RUN_RETENTION_DAYS: positiveInt(30),
  /** When a webhook that did not take a notification is tried again (seconds after each failure); then it is given up. */
  NOTIFY_RETRY_SECONDS: z
    .string()
    .regex(/^\d+(\.\d+)?(,\d+(\.\d+)?)*$/, 'must be seconds separated by commas, e.g. 30,120,600,1800')
    .default('30,120,600,1800'),
  /**
   * Azure Storage answers 503 ServerBusy and 500 under load and drops connections: each call is
   * tried this often, each try given this long, with exponential backoff between tries.
   */
  STORAGE_MAX_TRIES: positiveInt(5),
  STORAGE_TRY_TIMEOUT_MS: positiveInt(30_000),
  STORAGE_RETRY_DELAY_MS: positiveInt(800),
  STORAGE_MAX_RETRY_DELAY_MS: positiveInt(15_000),
});

const given = (env: Record<string, string | undefined>, name: string): boolean => env[name] !== undefined;

/** Rules across settings, checked on the raw environment so they are reported with the field errors. */
function crossSettingIssues(env: Record<string, string | undefined>): z.core.$ZodIssue[] {
  const issues: z.core.$ZodIssue[] = [];
  const issue = (setting: string, message: string) => issues.push({ code: 'custom', path: [setting], message });
  const identityBased = given(env, 'AzureWebJobsStorage__blobServiceUri') && given(env, 'AzureWebJobsStorage__queueServiceUri');
  if (!given(env, 'AzureWebJobsStorage') && !identityBased) {
    issue(
      'AzureWebJobsStorage',
      'is required: a connection string, or AzureWebJobsStorage__blobServiceUri, __queueServiceUri and __tableServiceUri for identity-based access',
    );
  }
  if (!given(env, 'SYNC_CONFIG') && !given(env, 'SYNC_CONFIG_FILE'))
    issue('SYNC_CONFIG', 'is required: the mapping config as JSON, or SYNC_CONFIG_FILE with its path');
  // The endpoint and the key go together: one without the other is a half-done setup, named as such.
  const keySetting = ['BRAZE_API_KEY', 'BRAZE_API_KEY_SECRET_URI'].find((name) => given(env, name));
  const endpoint = given(env, 'BRAZE_REST_ENDPOINT');
  if (!endpoint) {
    issue(
      'BRAZE_REST_ENDPOINT',
      keySetting
        ? `is required with ${keySetting}: the REST endpoint of its workspace (e.g. rest.iad-03.braze.com)`
        : 'is required (e.g. rest.iad-03.braze.com)',
    );
  }
  if (!keySetting) {
    issue(
      'BRAZE_API_KEY',
      `is required${endpoint ? ' with BRAZE_REST_ENDPOINT' : ''}: the REST API key, or BRAZE_API_KEY_SECRET_URI naming the Key Vault secret that holds it`,
    );
  }
  if (given(env, 'BRAZE_API_KEY') && given(env, 'BRAZE_API_KEY_SECRET_URI')) issue('BRAZE_API_KEY', 'set it or BRAZE_API_KEY_SECRET_URI, not both');
  return issues;
}

export interface StorageSettings {
  connectionString?: string;
  blobServiceUri?: string;
  queueServiceUri?: string;
  tableServiceUri?: string;
  /** Client id of the user-assigned managed identity, for DefaultAzureCredential. */
  clientId?: string;
  /** Where the export container is, when not on the app's account. */
  exportConnectionString?: string;
  exportBlobServiceUri?: string;
  retry: { maxTries: number; tryTimeoutMs: number; retryDelayMs: number; maxRetryDelayMs: number };
}

export interface AppSettings {
  storage: StorageSettings;
  exportContainer: string;
  stateContainer: string;
  runsTable: string;
  syncSchedule: string;
  syncConfig: { inline?: string; file?: string };
  braze: {
    endpoint: string;
    /** The key itself, or where in Key Vault to read it (exactly one is set). */
    apiKey?: string;
    apiKeySecretUri?: string;
    requestTimeoutMs: number;
    maxRetries: number;
    retryDelayMs: number;
    maxRetryDelayMs: number;
    rateLimitReserveShare: number;
    burstLimit?: number;
    maxConcurrentRequests: number;
    /** Attribute objects per /users/track request (BRAZE_OBJECTS_PER_REQUEST); a workspace's own overrides it. */
    objectsPerRequest: number;
  };
  senderBudgetMs: number;
  /** How long a reading step holds its claim, or a finalizer its lease, unrenewed (ENQUEUE_LEASE_MS). */
  leaseMs: number;
  profilesPerShard: number;
  readerStepsPerInstance: number;
  smallRefreshMaxBytes: number;
  /** READ_ON_SECONDS, in milliseconds. */
  readOnMs: number;
  runStallMs: number;
  runRetentionMs: number;
  reconcile: { pollMs: number; exportTimeoutMs: number };
  /** Delays before each further try of a notification. */
  notifyRetryDelaysMs: number[];
}

/**
 * The settings that have a value. An empty or blank one counts as unset, as the template's empty
 * tuning values do (its RECONCILE_SCHEDULE is empty to keep the timer off), so its default holds —
 * but for SYNC_SCHEDULE, which the Functions host reads itself and cannot take empty.
 */
function setSettings(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && (entry[1].trim() !== '' || entry[0] === 'SYNC_SCHEDULE')),
  );
}

/**
 * The app settings from the environment, checked whole. Throws InvalidInputError "App settings are
 * invalid:" with a line for every bad or missing setting — its value (never a secret's) and what
 * is allowed — so one start shows all there is to fix. The local runner calls it before it starts
 * anything; the Functions app, when it builds the connector.
 */
export function loadAppSettings(env: Record<string, string | undefined>): AppSettings {
  const set = setSettings(env);
  const parsed = appSettingsSchema.safeParse(set, { reportInput: true });
  const issues = [...(parsed.error?.issues ?? []), ...crossSettingIssues(set)];
  if (!parsed.success || issues.length) {
    // In the order of the schema, so the lines about one setting stand together.
    const order = Object.keys(appSettingsSchema.shape);
    issues.sort((a, b) => order.indexOf(String(a.path[0])) - order.indexOf(String(b.path[0])));
    throw new InvalidInputError(formatIssues('App settings', new z.ZodError(issues), { plural: true }));
  }
  const s = parsed.data;
  return {
    storage: {
      connectionString: s.AzureWebJobsStorage,
      blobServiceUri: s.AzureWebJobsStorage__blobServiceUri,
      queueServiceUri: s.AzureWebJobsStorage__queueServiceUri,
      tableServiceUri: s.AzureWebJobsStorage__tableServiceUri,
      clientId: s.AzureWebJobsStorage__clientId,
      exportConnectionString: s.ExportStorage,
      exportBlobServiceUri: s.ExportStorage__blobServiceUri,
      retry: {
        maxTries: s.STORAGE_MAX_TRIES,
        tryTimeoutMs: s.STORAGE_TRY_TIMEOUT_MS,
        retryDelayMs: s.STORAGE_RETRY_DELAY_MS,
        maxRetryDelayMs: s.STORAGE_MAX_RETRY_DELAY_MS,
      },
    },
    exportContainer: s.EXPORT_CONTAINER,
    stateContainer: s.STATE_CONTAINER,
    runsTable: s.RUNS_TABLE,
    syncSchedule: s.SYNC_SCHEDULE,
    syncConfig: { inline: s.SYNC_CONFIG, file: s.SYNC_CONFIG_FILE },
    braze: {
      // Present: crossSettingIssues requires it.
      endpoint: s.BRAZE_REST_ENDPOINT!,
      apiKey: s.BRAZE_API_KEY,
      apiKeySecretUri: s.BRAZE_API_KEY_SECRET_URI,
      requestTimeoutMs: s.BRAZE_REQUEST_TIMEOUT_MS,
      maxRetries: s.BRAZE_MAX_RETRIES,
      retryDelayMs: s.BRAZE_RETRY_DELAY_MS,
      maxRetryDelayMs: s.BRAZE_MAX_RETRY_DELAY_MS,
      rateLimitReserveShare: s.BRAZE_RATE_LIMIT_RESERVE_SHARE,
      burstLimit: s.BRAZE_BURST_LIMIT,
      maxConcurrentRequests: s.BRAZE_MAX_CONCURRENT_REQUESTS,
      objectsPerRequest: s.BRAZE_OBJECTS_PER_REQUEST,
    },
    senderBudgetMs: s.SENDER_BUDGET_MS,
    leaseMs: s.ENQUEUE_LEASE_MS,
    profilesPerShard: s.PROFILES_PER_SHARD,
    readerStepsPerInstance: s.READER_STEPS_PER_INSTANCE,
    smallRefreshMaxBytes: s.SMALL_REFRESH_MAX_BYTES,
    readOnMs: s.READ_ON_SECONDS * 1000,
    runStallMs: s.RUN_STALL_MINUTES * 60_000,
    runRetentionMs: s.RUN_RETENTION_DAYS * 24 * 3600_000,
    reconcile: { pollMs: s.RECONCILE_POLL_SECONDS * 1000, exportTimeoutMs: s.RECONCILE_EXPORT_TIMEOUT_MINUTES * 60_000 },
    notifyRetryDelaysMs: s.NOTIFY_RETRY_SECONDS.split(',').map((seconds) => Math.round(Number(seconds) * 1000)),
  };
}
