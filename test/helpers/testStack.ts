import { DEFAULT_GUARD, type SyncConfig } from '../../shared/config/syncConfig';
import type { Logger } from '../../shared/log';
import { recordLine, type ConnectorRecord } from '../../shared/telemetry';
import { startAzurite, type AzuriteInstance } from '../../local/azurite';
import { BrazeServer, type BrazeServerOptions } from '../../local/brazeServer';
import { LocalFunctionApp } from '../../local/stack';
import type { HostQueueSettings } from '../../local/queueHost';

export const TEST_API_KEY = '6f1c2b8e-1a2b-4c3d-9e8f-0a1b2c3d4e5f';

/** Every log line, so tests can assert what never appears in one. */
export class RecordingLogger implements Logger {
  readonly lines: string[] = [];
  readonly records: ConnectorRecord[] = [];
  record(record: ConnectorRecord): void {
    this.records.push(record);
    this.lines.push(recordLine(record));
  }
  info(message: string): void {
    this.lines.push(message);
  }
  warn(message: string): void {
    this.lines.push(message);
  }
  error(message: string): void {
    this.lines.push(message);
  }
}

export function testConfig(overrides: Partial<SyncConfig['destinations'][number]> = {}): SyncConfig {
  return {
    workspaces: {},
    destinations: [
      {
        name: 'BrazeExport',
        segments: [
          { table: 'HighValue', brazeSegmentId: 'seg-high-value', attribute: 'ci_high_value' },
          { table: 'Newsletter', brazeSegmentId: 'ci_newsletter' },
        ],
        matching: {
          emailColumn: 'EMail',
          customerIdColumn: 'CustomerId',
          customerIdIsExternalId: true,
          fallbackIdentifiers: ['email', 'user_alias'],
          aliasLabel: 'ci_customer_id',
        },
        fields: { FirstName: 'first_name', LoyaltyPoints: 'loyalty_points' },
        leaverValue: null,
        dryRun: false,
        subscriptions: [],
        membership: { mode: 'flags' },
        notify: [],
        guard: { ...DEFAULT_GUARD },
        ...overrides,
      },
    ],
  };
}

export interface TestStack {
  azurite: AzuriteInstance;
  braze: BrazeServer;
  app: LocalFunctionApp;
  log: RecordingLogger;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Real Azurite and the local Braze server; the function app with its real handlers. */
export async function startTestStack(
  options: {
    config?: SyncConfig;
    braze?: Partial<BrazeServerOptions>;
    env?: Record<string, string>;
    hostSettings?: Partial<HostQueueSettings>;
    lockSeconds?: number;
    azurite?: AzuriteInstance;
  } = {},
): Promise<TestStack> {
  const azurite = options.azurite ?? (await startAzurite());
  const braze = new BrazeServer({ apiKey: TEST_API_KEY, ...options.braze });
  const endpoint = await braze.start();
  const log = new RecordingLogger();
  const env = {
    AzureWebJobsStorage: azurite.connectionString,
    EXPORT_CONTAINER: 'customer-insights',
    BRAZE_REST_ENDPOINT: endpoint,
    BRAZE_API_KEY: TEST_API_KEY,
    SYNC_CONFIG: JSON.stringify(options.config ?? testConfig()),
    BRAZE_RETRY_DELAY_MS: '20',
    BRAZE_MAX_RETRY_DELAY_MS: '200',
    BRAZE_REQUEST_TIMEOUT_MS: '2000',
    // Every step through the queue, as the tests of steps and their races were written for; the
    // small-refresh path and reading on are tested on their own and under the incremental and
    // fan-out tests (readHere, incremental, fanOut).
    SMALL_REFRESH_MAX_BYTES: '0',
    READ_ON_SECONDS: '0',
    ...options.env,
  };
  const app = new LocalFunctionApp({
    env,
    log,
    hostSettings: { visibilityTimeout: '00:00:00', maxPollingInterval: '00:00:00.200', ...options.hostSettings },
    lockSeconds: options.lockSeconds,
  });
  await app.start();
  return {
    azurite,
    braze,
    app,
    log,
    env,
    stop: async () => {
      await app.stop();
      await braze.stop();
      if (!options.azurite) await azurite.stop();
    },
  };
}

/**
 * A stack on an Azurite shared by a test file: a fresh container, table and state container per
 * test, and the (fixed-name) queues emptied, keep the tests apart.
 */
export async function startIsolatedStack(azurite: AzuriteInstance, options: Parameters<typeof startTestStack>[0] = {}): Promise<TestStack> {
  const suffix = Math.random().toString(36).slice(2, 8);
  const stack = await startTestStack({
    ...options,
    azurite,
    env: { EXPORT_CONTAINER: `ci-${suffix}`, STATE_CONTAINER: `state-${suffix}`, RUNS_TABLE: `runs${suffix}`, ...options.env },
  });
  const storage = stack.app.deps.storage;
  for (const queue of [storage.runQueue, storage.batchQueue, storage.batchPoisonQueue, storage.runPoisonQueue])
    await queue.clearMessages().catch(() => undefined);
  return stack;
}

/**
 * For a test file whose tests each want a stack of their own on one Azurite: starts Azurite once,
 * and stops each test's stack after it. `start` gives the test its stack.
 */
export function stacksOnSharedAzurite(): { start: (options?: Parameters<typeof startTestStack>[0]) => Promise<TestStack> } {
  let azurite: AzuriteInstance | undefined;
  let current: TestStack | undefined;
  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterEach(async () => {
    await current?.stop();
    current = undefined;
  });
  afterAll(async () => {
    await azurite?.stop();
  });
  return { start: async (options) => (current = await startIsolatedStack(azurite!, options)) };
}
