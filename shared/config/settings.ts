import { z } from 'zod';
import { formatIssues, InvalidInputError } from '../errors';
import { parseBrazeEndpoint } from './endpoint';

const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);

/**
 * App settings (environment). Everything below this module receives typed values; nothing else
 * reads process.env.
 */
export const appSettingsSchema = z.object({
  AzureWebJobsStorage: z.string().min(1).optional(),
  AzureWebJobsStorage__blobServiceUri: z.url().optional(),
  AzureWebJobsStorage__queueServiceUri: z.url().optional(),
  AzureWebJobsStorage__tableServiceUri: z.url().optional(),
  /** The user-assigned managed identity the app authenticates with (its client id), when it has one. */
  AzureWebJobsStorage__clientId: z.string().min(1).optional(),
  /** The account CI exports to, when it is not the app's own: a connection string (local) or a blob endpoint (identity). */
  ExportStorage: z.string().min(1).optional(),
  ExportStorage__blobServiceUri: z.url().optional(),
  EXPORT_CONTAINER: z.string().regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, 'must be a valid blob container name'),
  STATE_CONTAINER: z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, 'must be a valid blob container name')
    .default('braze-connector'),
  BRAZE_REST_ENDPOINT: z.string().min(1, 'is required (e.g. rest.iad-03.braze.com)'),
  BRAZE_API_KEY: z.string().min(1).optional(),
  /** The key as a Key Vault secret (`https://<vault>.vault.azure.net/secrets/<name>[/<version>]`), read with the app's identity. */
  BRAZE_API_KEY_SECRET_URI: z.url().optional(),
  SYNC_SCHEDULE: z.string().min(1).default('0 */15 * * * *'),
  SYNC_CONFIG: z.string().optional(),
  SYNC_CONFIG_FILE: z.string().optional(),
  RUNS_TABLE: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9]{2,62}$/)
    .default('brazeconnectorruns'),
  BRAZE_REQUEST_TIMEOUT_MS: positiveInt(30_000),
  BRAZE_MAX_RETRIES: z.coerce.number().int().min(0).default(6),
  BRAZE_RETRY_DELAY_MS: positiveInt(500),
  BRAZE_MAX_RETRY_DELAY_MS: positiveInt(30_000),
  /** Share of Braze's rate limit left for other tools of the workspace. */
  BRAZE_RATE_LIMIT_RESERVE_SHARE: z.coerce.number().min(0).max(0.9).default(0.1),
  /**
   * An hourly contract's burst limit (requests per 3 s for the workspace), when known. Without it
   * the pacer learns the burst from the first 429 that leaves budget in the hour.
   */
  BRAZE_BURST_LIMIT: z.coerce.number().int().positive().optional(),
  BRAZE_MAX_CONCURRENT_REQUESTS: positiveInt(32),
  /**
   * Objects per /users/track request: 75, or 50 on Monthly Active Users (CY 24-25) contracts
   * (braze-docs post_user_track.md). A workspace that refuses a request for its size ("Max Input
   * Length Exceeded") is learnt from as it goes; setting it saves those refusals.
   */
  BRAZE_OBJECTS_PER_REQUEST: z.coerce.number().int().min(1).max(75).default(75),
  /** How long one sender invocation may spend before it re-enqueues the rest of its batch. */
  SENDER_BUDGET_MS: positiveInt(120_000),
  /** How long a reading step holds its claim, or the finalizer its lease, before another worker may take over (after a crash). */
  ENQUEUE_LEASE_MS: positiveInt(60_000),
  /**
   * Profiles a diff step (one shard) aims at: its slice of the refresh and of the state sit in one
   * instance's memory. Fewer makes more, smaller steps to spread; more makes fewer state blobs.
   */
  PROFILES_PER_SHARD: z.coerce.number().int().min(100).max(1_000_000).default(100_000),
  /** Reading steps (map or diff) one instance works on at once; more are handed to other instances. */
  READER_STEPS_PER_INSTANCE: positiveInt(1),
  /**
   * A refresh whose partitions add up to at most this many bytes is read step after step by the
   * instance that has it, without waiting for the queue between steps (0: every step through the
   * queue). 8 MiB is ~55,000 rows, whose map steps take ~1.5 s in all: less than one queue hop
   * costs an idle instance (maxPollingInterval, 2 s).
   */
  SMALL_REFRESH_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .default(8 * 1024 * 1024),
  /**
   * A sending run none of whose batches ended for this long is marked stalled. Above the longest
   * quiet a healthy run has: a batch handed back waits at most an hour for Braze's reset.
   */
  RUN_STALL_MINUTES: positiveInt(90),
  /**
   * A reconcile asks Braze to export each segment and looks for the archive this often; it fails
   * the reconcile if an export is not ready this long after it was asked for (Braze documents
   * that large segments take long).
   */
  /** NCRONTAB of the reconcile timer; empty or unset, the timer function is not registered. */
  RECONCILE_SCHEDULE: z.string().optional(),
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

/** Rules across settings, checked on the raw environment so they are reported with the field errors. */
function crossFieldIssues(env: Record<string, string | undefined>): string[] {
  const issues: string[] = [];
  const identityBased = env.AzureWebJobsStorage__blobServiceUri && env.AzureWebJobsStorage__queueServiceUri;
  if (!env.AzureWebJobsStorage && !identityBased) {
    issues.push(
      '  - AzureWebJobsStorage: is required: a connection string, or AzureWebJobsStorage__blobServiceUri, __queueServiceUri and __tableServiceUri for identity-based access',
    );
  }
  if (!env.SYNC_CONFIG && !env.SYNC_CONFIG_FILE) issues.push('  - SYNC_CONFIG: is required: the mapping config as JSON, or SYNC_CONFIG_FILE with its path');
  if (!env.BRAZE_API_KEY && !env.BRAZE_API_KEY_SECRET_URI) {
    issues.push('  - BRAZE_API_KEY: is required: the REST API key, or BRAZE_API_KEY_SECRET_URI naming the Key Vault secret that holds it');
  }
  if (env.BRAZE_API_KEY && env.BRAZE_API_KEY_SECRET_URI) issues.push('  - BRAZE_API_KEY: set it or BRAZE_API_KEY_SECRET_URI, not both');
  if (env.BRAZE_REST_ENDPOINT) {
    try {
      parseBrazeEndpoint(env.BRAZE_REST_ENDPOINT);
    } catch (error) {
      issues.push(`  - ${(error as Error).message}`);
    }
  }
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
  runStallMs: number;
  runRetentionMs: number;
  reconcile: { pollMs: number; exportTimeoutMs: number };
  /** Delays before each further try of a notification. */
  notifyRetryDelaysMs: number[];
}

export function loadAppSettings(env: Record<string, string | undefined>): AppSettings {
  const parsed = appSettingsSchema.safeParse(env);
  const extra = crossFieldIssues(env);
  if (!parsed.success || extra.length) {
    const fieldIssues = parsed.success ? 'App settings is invalid:' : formatIssues('App settings', parsed.error);
    throw new InvalidInputError([fieldIssues, ...extra].join('\n'));
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
      endpoint: parseBrazeEndpoint(s.BRAZE_REST_ENDPOINT),
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
    runStallMs: s.RUN_STALL_MINUTES * 60_000,
    runRetentionMs: s.RUN_RETENTION_DAYS * 24 * 3600_000,
    reconcile: { pollMs: s.RECONCILE_POLL_SECONDS * 1000, exportTimeoutMs: s.RECONCILE_EXPORT_TIMEOUT_MINUTES * 60_000 },
    notifyRetryDelaysMs: s.NOTIFY_RETRY_SECONDS.split(',').map((seconds) => Math.round(Number(seconds) * 1000)),
  };
}
