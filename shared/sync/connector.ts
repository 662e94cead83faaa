import { loadAppSettings, type AppSettings } from '../config/settings';
import { loadSyncConfig, type SyncConfig } from '../config/syncConfig';
import { BrazeClient } from '../braze/client';
import { systemClock, type Clock } from '../clock';
import { ReaderSlots } from './readerSlots';
import { RateLimitPacer } from '../braze/pacer';
import { consoleLogger, type Logger } from '../log';
import { BatchLedger } from '../runs/batchLedger';
import { DestinationStore } from '../runs/destinationStore';
import { ErasureLedger } from '../runs/erasureLedger';
import { RunStore } from '../runs/runStore';
import { UnitLedger } from '../runs/unitLedger';
import { azureCredential, createStorageClients, ensureStorage } from '../storage/clients';
import axios from 'axios';
import { KeyVaultApiKey, SettingApiKey, type ApiKeySource } from '../braze/apiKey';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { parseBrazeEndpoint } from '../config/endpoint';
import { InvalidInputError } from '../errors';

export interface ConnectorOptions {
  env: Record<string, string | undefined>;
  log?: Logger;
  clock?: Clock;
  /** Already parsed config (the local runner's --config); otherwise read from the app settings. */
  config?: SyncConfig;
  settings?: AppSettings;
}

/** Builds the process's clients once; fails fast with a message naming the bad setting. */
export function createConnector(options: ConnectorOptions): ConnectorDeps {
  const settings = options.settings ?? loadAppSettings(options.env);
  const config = options.config ?? loadSyncConfig(settings.syncConfig);
  const clock = options.clock ?? systemClock;
  const storage = createStorageClients(settings);
  const pacer = () => new RateLimitPacer({ reserveShare: settings.braze.rateLimitReserveShare, burstLimit: settings.braze.burstLimit, clock });
  const keys = settings.braze.apiKey
    ? new SettingApiKey(settings.braze.apiKey)
    : new KeyVaultApiKey(settings.braze.apiKeySecretUri!, azureCredential(settings.storage.clientId));
  const braze = new BrazeClient(settings.braze, keys, pacer(), clock);
  // Each workspace has its own endpoint, key and rate limit: its own client and pacer.
  const workspaces = new Map<string, BrazeClient>();
  for (const [name, workspace] of Object.entries(config.workspaces)) {
    const what = `workspace "${name}"`;
    let workspaceKeys;
    if (workspace.apiKeySetting !== undefined) {
      const key = options.env[workspace.apiKeySetting];
      if (!key) throw new InvalidInputError(`Mapping config: ${what} takes its key from app setting ${workspace.apiKeySetting}, which is not set`);
      workspaceKeys = new SettingApiKey(key);
    } else {
      workspaceKeys = new KeyVaultApiKey(workspace.apiKeySecretUri!, azureCredential(settings.storage.clientId), `${what} apiKeySecretUri`);
    }
    const endpoint = parseBrazeEndpoint(workspace.restEndpoint, `${what} restEndpoint`);
    const objectsPerRequest = workspace.objectsPerRequest ?? settings.braze.objectsPerRequest;
    workspaces.set(name, new BrazeClient({ ...settings.braze, endpoint, objectsPerRequest }, workspaceKeys, pacer(), clock));
  }
  // Webhook URLs, each read once (a Key Vault secret on first use). One whose app setting is not set
  // is no reason to stop the app: its runs go on, and each notification says why it was not sent.
  const log = options.log ?? consoleLogger;
  const webhookSources = new Map<string, ApiKeySource>();
  const webhookSource = (target: { urlSetting?: string; urlSecretUri?: string }): ApiKeySource => {
    const id = target.urlSetting !== undefined ? `setting:${target.urlSetting}` : `secret:${target.urlSecretUri}`;
    let source = webhookSources.get(id);
    if (!source) {
      if (target.urlSetting !== undefined) {
        const url = options.env[target.urlSetting];
        if (!url) throw new InvalidInputError(`its app setting ${target.urlSetting} is not set`);
        source = new SettingApiKey(url);
      } else source = new KeyVaultApiKey(target.urlSecretUri!, azureCredential(settings.storage.clientId), 'notify urlSecretUri');
      webhookSources.set(id, source);
    }
    return source;
  };
  for (const destination of config.destinations)
    for (const target of destination.notify)
      if (target.urlSetting !== undefined && !options.env[target.urlSetting])
        log.warn(
          `Mapping config: destination ${destination.name} notifies a webhook whose URL is in app setting ${target.urlSetting}, which is not set: nothing is sent to it`,
        );
  const deps: ConnectorDeps = {
    settings,
    config,
    storage,
    runs: new RunStore(storage.runsTable, clock),
    batches: new BatchLedger(storage.runsTable, clock),
    units: new UnitLedger(storage.runsTable, clock),
    destinations: new DestinationStore(storage.runsTable, clock),
    erasures: new ErasureLedger(storage.runsTable, clock),
    readerSlots: new ReaderSlots(settings.readerStepsPerInstance, clock),
    braze,
    brazeFor: (workspace) => (workspace === undefined ? deps.braze : (workspaces.get(workspace) ?? deps.braze)),
    webhookUrl: async (target) => webhookSource(target).get(),
    // No redirects (a webhook that moved is a config to fix, and its new URL would be logged nowhere); every status is judged by the caller.
    webhooks: axios.create({ timeout: 10_000, maxRedirects: 0, validateStatus: () => true }),
    clock,
    log,
  };
  return deps;
}

const ready = new WeakMap<ConnectorDeps, Promise<void>>();
/** Creates the queues, table and state container once per connector. */
export function ensureReady(deps: ConnectorDeps): Promise<void> {
  let done = ready.get(deps);
  if (!done) {
    done = ensureStorage(deps.storage).catch((error) => {
      ready.delete(deps);
      throw error;
    });
    ready.set(deps, done);
  }
  return done;
}
