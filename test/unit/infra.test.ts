import { readFileSync } from 'node:fs';
import path from 'node:path';
import { EXPORT_BLOB_DROP_FUNCTION } from '../../functions/exportBlobDrop';
import { appSettingsSchema, loadAppSettings } from '../../shared/config/settings';
import { BATCH_QUEUE, RUN_QUEUE } from '../../shared/storage/queueNames';
import { parseSyncConfig } from '../../shared/config/syncConfig';

/**
 * infra/main.json is the compiled infra/main.bicep (`npm run infra:check` in CI proves it is
 * current); these tests hold it against the code, without the Bicep CLI.
 */
const root = path.resolve(__dirname, '..', '..');
const templateText = readFileSync(path.join(root, 'infra', 'main.json'), 'utf8');
const template = JSON.parse(templateText) as ArmTemplate;

interface ArmResource {
  type: string;
  name: string;
  properties?: { template?: ArmTemplate; parameters?: Record<string, { value?: unknown }> } & Record<string, unknown>;
}
interface ArmTemplate {
  /** An array, or (symbolic names, languageVersion 2.0) an object of resources. */
  resources: ArmResource[] | Record<string, ArmResource>;
  variables?: Record<string, unknown>;
}

function resourcesOf(t: ArmTemplate): ArmResource[] {
  return Array.isArray(t.resources) ? t.resources : Object.values(t.resources);
}

function moduleNamed(name: string): ArmResource {
  const found = resourcesOf(template).find((r) => r.type === 'Microsoft.Resources/deployments' && r.name === name);
  if (!found) throw new Error(`no module ${name} in infra/main.json`);
  return found;
}

/** Every resource, nested templates included. */
function allResources(t: ArmTemplate = template): ArmResource[] {
  return resourcesOf(t).flatMap((r) => [r, ...(r.properties?.template ? allResources(r.properties.template) : [])]);
}

const appSettings = moduleNamed('functionApp').properties!.parameters!.appSettings.value as Record<string, string>;
const storageVariables = moduleNamed('appStorage').properties!.template!.variables!;

/** Settings the Functions platform reads, not the connector. */
const PLATFORM_SETTINGS = [
  'AzureWebJobsStorage__credential',
  'APPLICATIONINSIGHTS_CONNECTION_STRING',
  'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
  'languageWorkers__node__arguments',
];

describe('the deployment template, held against the code', () => {
  it('sets every app setting the settings schema needs, and none it does not know', () => {
    const known = new Set([...Object.keys(appSettingsSchema.shape), ...PLATFORM_SETTINGS]);
    expect(Object.keys(appSettings).filter((name) => !known.has(name))).toEqual([]);
    // With a plausible value for each setting the template sets (ARM fills them in at deploy time), the app starts.
    const sample = (name: string): string => {
      if (/uri$/i.test(name)) return name.includes('SECRET') ? 'https://kv.vault.azure.net/secrets/braze-api-key' : 'https://acct.blob.core.windows.net/';
      if (name === 'SYNC_CONFIG') return readFileSync(path.join(root, 'sample', 'config.json'), 'utf8');
      if (name === 'BRAZE_REST_ENDPOINT') return 'rest.iad-03.braze.com';
      if (name === 'EXPORT_CONTAINER' || name === 'STATE_CONTAINER') return 'customer-insights';
      if (name === 'RUNS_TABLE') return 'brazeconnectorruns';
      if (name === 'RUN_RETENTION_DAYS') return '30';
      if (name === 'SYNC_SCHEDULE') return '0 */15 * * * *';
      return 'x';
    };
    const env = Object.fromEntries(Object.keys(appSettings).map((name) => [name, sample(name)]));
    const settings = loadAppSettings(env);
    expect(settings.storage.connectionString).toBeUndefined();
    expect(settings.braze.apiKey).toBeUndefined();
    expect(settings.braze.apiKeySecretUri).toBeDefined();
    expect(appSettings.languageWorkers__node__arguments).toMatch(/--max-old-space-size=/);
  });

  it('creates the queues, table and state container under the names the code uses', () => {
    expect(storageVariables.batchQueueName).toBe(BATCH_QUEUE);
    expect(storageVariables.runQueueName).toBe(RUN_QUEUE);
    expect(storageVariables.stateContainerName).toBe(appSettingsSchema.shape.STATE_CONTAINER.parse(undefined));
    expect(storageVariables.runsTableName).toBe(appSettingsSchema.shape.RUNS_TABLE.parse(undefined));
    const queues = allResources().find((r) => r.type === 'Microsoft.Storage/storageAccounts/queueServices/queues') as unknown as { copy: { input: string } };
    expect(JSON.stringify(queues.copy)).toContain('-poison');
  });

  it('delivers BlobCreated events of the export container to the function the code registers', () => {
    const subscription = allResources().find((r) => r.type === 'Microsoft.EventGrid/systemTopics/eventSubscriptions')!;
    const destination = subscription.properties!.destination as { endpointType: string };
    expect(destination.endpointType).toBe('AzureFunction');
    expect(JSON.stringify(moduleNamed('eventSubscription').properties!.parameters!.functionResourceId)).toContain(`/functions/${EXPORT_BLOB_DROP_FUNCTION}`);
    expect((subscription.properties!.filter as { includedEventTypes: string[] }).includedEventTypes).toEqual(['Microsoft.Storage.BlobCreated']);
  });

  it('gives the app storage no shared keys, and uses no account key or listKeys anywhere', () => {
    const appStorage = resourcesOf(moduleNamed('appStorage').properties!.template!).find((r) => r.type === 'Microsoft.Storage/storageAccounts')!;
    expect(appStorage.properties).toMatchObject({ allowSharedKeyAccess: false, allowBlobPublicAccess: false });
    expect(templateText).not.toMatch(/listKeys|AccountKey=|DefaultEndpointsProtocol|listConnectionStrings/);
    for (const value of Object.values(appSettings)) expect(String(value)).not.toMatch(/AccountKey|SharedAccessSignature|sig=/i);
  });

  it('runs the app on Flex Consumption with Node 22 and the deployment package reached by identity', () => {
    const site = allResources().find((r) => r.type === 'Microsoft.Web/sites')!;
    const config = site.properties!.functionAppConfig as {
      runtime: { name: string; version: string };
      deployment: { storage: { authentication: { type: string } } };
    };
    expect(config.runtime).toEqual({ name: 'node', version: '22' });
    expect(config.deployment.storage.authentication.type).toBe('UserAssignedIdentity');
    const plan = allResources().find((r) => r.type === 'Microsoft.Web/serverfarms') as unknown as { sku: { name: string; tier: string } };
    expect(plan.sku).toEqual({ name: 'FC1', tier: 'FlexConsumption' });
  });
});

describe('the mapping config the template deploys', () => {
  it('is a valid mapping config', () => {
    expect(() => parseSyncConfig(readFileSync(path.join(root, 'infra', 'sync-config.json'), 'utf8'), 'infra/sync-config.json')).not.toThrow();
    const syncConfig = moduleNamed('functionApp').properties!.parameters!.appSettings.value as Record<string, string>;
    expect(syncConfig.SYNC_CONFIG).toBe("[parameters('syncConfigJson')]");
  });
});
