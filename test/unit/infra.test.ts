import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ignore from 'ignore';
import { boundedWorkerNodeArgs } from '../../bench/workerNodeArgs';
import { EXPORT_BLOB_DROP_FUNCTION } from '../../functions/exportBlobDrop';
import { appSettingsSchema, loadAppSettings } from '../../shared/config/settings';
import { BATCH_QUEUE, RUN_QUEUE } from '../../shared/storage/queueNames';
import { parseSyncConfig } from '../../shared/config/syncConfig';
import { connectorEvents, recordFields } from '../../shared/telemetry';

/**
 * infra/main.json is the compiled infra/main.bicep (`npm run infra:check` in CI proves it is
 * current); these tests hold it, infra/main.parameters.json, azure.yaml and .funcignore against
 * the code, without the Bicep CLI or azd.
 */
const root = path.resolve(__dirname, '..', '..');
const read = (...parts: string[]) => readFileSync(path.join(root, ...parts), 'utf8');
const templateText = read('infra', 'main.json');
const template = JSON.parse(templateText) as ArmTemplate;
const parametersFile = JSON.parse(read('infra', 'main.parameters.json')) as { parameters: Record<string, { value: unknown }> };

interface ArmResource {
  type: string;
  name: string;
  condition?: string | boolean;
  copy?: { count: string };
  tags?: unknown;
  properties?: { template?: ArmTemplate; parameters?: Record<string, { value?: unknown }> } & Record<string, unknown>;
}
interface ArmTemplate {
  /** An array, or (symbolic names, languageVersion 2.0) an object of resources. */
  resources: ArmResource[] | Record<string, ArmResource>;
  parameters?: Record<string, { type: string; defaultValue?: unknown }>;
  variables?: Record<string, unknown>;
}

function resourcesOf(t: ArmTemplate): ArmResource[] {
  return Array.isArray(t.resources) ? t.resources : Object.values(t.resources);
}

function moduleNamed(name: string, t: ArmTemplate = template): ArmResource {
  const found = resourcesOf(t).find((r) => r.type === 'Microsoft.Resources/deployments' && r.name === name);
  if (!found) throw new Error(`no module ${name} in infra/main.json`);
  return found;
}

/** Every resource, nested templates included. */
function allResources(t: ArmTemplate = template): ArmResource[] {
  return resourcesOf(t).flatMap((r) => [r, ...(r.properties?.template ? allResources(r.properties.template) : [])]);
}

const resourceOfType = (type: string, t?: ArmTemplate) => {
  const found = allResources(t).filter((r) => r.type === type);
  if (found.length !== 1) throw new Error(`${found.length} resources of type ${type}`);
  return found[0];
};

const settingsModule = moduleNamed('appSettings');
const appSettings = settingsModule.properties!.parameters!.managedSettings.value as Record<string, string>;
const storageVariables = moduleNamed('appStorage').properties!.template!.variables!;

/** Settings the Functions platform reads, not the connector. */
const PLATFORM_SETTINGS = [
  'AzureWebJobsStorage__credential',
  'APPLICATIONINSIGHTS_CONNECTION_STRING',
  'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
  'languageWorkers__node__arguments',
];

/** Connector settings the template never sets in Azure, and why. */
const NOT_IN_AZURE: Record<string, string> = {
  AzureWebJobsStorage: 'a connection string: the app storage takes no shared keys, the identity-based __*ServiceUri settings are used',
  ExportStorage: 'a connection string: the export account is reached by identity (ExportStorage__blobServiceUri)',
  BRAZE_API_KEY: 'the key itself: in Azure it is in Key Vault (BRAZE_API_KEY_SECRET_URI)',
  SYNC_CONFIG_FILE: 'a file path: in Azure the mapping config is the SYNC_CONFIG setting',
};

/** Where an azd environment variable is used in the parameters file: `${NAME}` → parameter (and the key inside an object parameter). */
function environmentMapping(): { variable: string; parameter: string; key?: string }[] {
  const found: { variable: string; parameter: string; key?: string }[] = [];
  for (const [parameter, { value }] of Object.entries(parametersFile.parameters)) {
    const entries = typeof value === 'object' && value !== null ? Object.entries(value as Record<string, string>) : [[undefined, value] as const];
    for (const [key, text] of entries)
      for (const match of String(text).matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(=[^}]*)?\}/g))
        found.push({ variable: match[1], parameter, key: key ?? undefined });
  }
  return found;
}

describe('the deployment template, held against the code', () => {
  it('sets every app setting the settings schema needs, and none it does not know', () => {
    const known = new Set([...Object.keys(appSettingsSchema.shape), ...PLATFORM_SETTINGS]);
    expect(Object.keys(appSettings).filter((name) => !known.has(name))).toEqual([]);
    // With a plausible value for each setting the template sets (ARM fills them in at deploy time), the app starts.
    const sample = (name: string): string => {
      if (/uri$/i.test(name)) return name.includes('SECRET') ? 'https://kv.vault.azure.net/secrets/braze-api-key' : 'https://acct.blob.core.windows.net/';
      if (name === 'SYNC_CONFIG') return read('sample', 'config.json');
      if (name === 'BRAZE_REST_ENDPOINT') return 'rest.iad-03.braze.com';
      if (name === 'EXPORT_CONTAINER' || name === 'STATE_CONTAINER') return 'customer-insights';
      if (name === 'RUNS_TABLE') return 'brazeconnectorruns';
      if (name === 'RUN_RETENTION_DAYS') return '30';
      if (name === 'SYNC_SCHEDULE') return '0 */15 * * * *';
      if (name === 'RECONCILE_SCHEDULE' || name === 'languageWorkers__node__arguments') return '';
      return 'x';
    };
    const env = Object.fromEntries(Object.keys(appSettings).map((name) => [name, sample(name)]));
    const settings = loadAppSettings(env);
    expect(settings.storage.connectionString).toBeUndefined();
    expect(settings.braze.apiKey).toBeUndefined();
    expect(settings.braze.apiKeySecretUri).toBeDefined();
  });

  it("lets azd set every setting the code reads: each is the template's own, a tuning value, or named here with the reason it is not set in Azure", () => {
    const tuningValue = parametersFile.parameters.tuning.value as Record<string, string>;
    for (const name of Object.keys(appSettingsSchema.shape)) {
      const owned = name in appSettings;
      const tuned = name in tuningValue;
      const excluded = name in NOT_IN_AZURE;
      expect({ name, ways: [owned, tuned, excluded].filter(Boolean).length }).toEqual({ name, ways: 1 });
    }
    // Each tuning value comes from the azd environment variable of its own name, and is a setting the code reads.
    for (const [name, text] of Object.entries(tuningValue)) {
      expect(text).toBe(`\${${name}}`);
      expect(Object.keys(appSettingsSchema.shape)).toContain(name);
    }
    // The template's own settings that come straight from a parameter use the setting's name as the variable.
    for (const [setting, variable] of [
      ['EXPORT_CONTAINER', 'exportContainerName'],
      ['BRAZE_REST_ENDPOINT', 'brazeRestEndpoint'],
      ['SYNC_SCHEDULE', 'syncSchedule'],
      ['RECONCILE_SCHEDULE', 'reconcileSchedule'],
    ]) {
      expect(appSettings[setting]).toBe(`[parameters('${variable}')]`);
      expect(parametersFile.parameters[variable].value).toBe(`\${${setting}}`);
    }
    expect(appSettings.RUN_RETENTION_DAYS).toBe("[string(parameters('retentionDays'))]");
    // An object parameter: azd parses the variable as JSON (a string parameter's value would break on its quotes).
    expect(appSettings.SYNC_CONFIG).toBe("[string(parameters('syncConfig'))]");
    expect(template.parameters!.syncConfig.type).toBe('object');
    expect(parametersFile.parameters.syncConfig.value).toBe('${SYNC_CONFIG}');
    expect(parametersFile.parameters.retentionDays.value).toBe('${RUN_RETENTION_DAYS}');
  });

  it('maps the parameters file and the template both ways, with defaults only in the template', () => {
    const declared = template.parameters!;
    // Every parameter in the file exists in the template.
    expect(Object.keys(parametersFile.parameters).filter((name) => !(name in declared))).toEqual([]);
    // Every template parameter can be set from the environment, but for the one the template reads from a file.
    expect(Object.keys(declared).filter((name) => !(name in parametersFile.parameters))).toEqual([]);
    // `${NAME=default}` would be a second default: an unset variable leaves the parameter out, and the template's default holds.
    const mapping = environmentMapping();
    expect(mapping.length).toBeGreaterThan(Object.keys(parametersFile.parameters).length);
    expect(JSON.stringify(parametersFile)).not.toMatch(/\$\{[A-Za-z_]+=/);
    // Each variable is used once (two parameters from one variable would hide a mistake), but for none here.
    const variables = mapping.map((m) => m.variable);
    expect(variables.filter((v, i) => variables.indexOf(v) !== i)).toEqual([]);
    // Every parameter but the few azd fills itself has a default, so an unset variable never makes azd prompt.
    const required = Object.entries(declared)
      .filter(([, p]) => p.defaultValue === undefined)
      .map(([name]) => name);
    expect(required.sort()).toEqual(['brazeRestEndpoint', 'environmentName', 'location']);
    // The deployer is never granted anything by default (azd always knows AZURE_PRINCIPAL_ID).
    expect(variables).not.toContain('AZURE_PRINCIPAL_ID');
  });

  it("keeps settings added by hand: the settings are merged into the site's current ones, the template's winning", () => {
    const config = resourceOfType('Microsoft.Web/sites/config', settingsModule.properties!.template!);
    // The site's current settings first (read at deploy time), the template's own last: a later one wins.
    expect(String(config.properties)).toBe(
      "[union(list(format('{0}/config/appsettings', resourceId('Microsoft.Web/sites', parameters('siteName'))), '2024-04-01').properties, parameters('extraSettings'), variables('tuning'), parameters('managedSettings'))]",
    );
    expect(settingsModule.properties!.parameters!.extraSettings.value).toBe("[parameters('extraAppSettings')]");
    expect(parametersFile.parameters.extraAppSettings.value).toBe('${EXTRA_APP_SETTINGS}');
  });

  it('creates the queues, table and state container under the names the code uses', () => {
    expect(storageVariables.batchQueueName).toBe(BATCH_QUEUE);
    expect(storageVariables.runQueueName).toBe(RUN_QUEUE);
    expect(storageVariables.stateContainerName).toBe(appSettingsSchema.shape.STATE_CONTAINER.parse(undefined));
    expect(storageVariables.runsTableName).toBe(appSettingsSchema.shape.RUNS_TABLE.parse(undefined));
    const queues = allResources().find((r) => r.type === 'Microsoft.Storage/storageAccounts/queueServices/queues') as unknown as { copy: { input: string } };
    expect(JSON.stringify(queues.copy)).toContain('-poison');
  });

  it('delivers BlobCreated events of the export container to the function the code registers, once the code is there', () => {
    const subscription = resourceOfType('Microsoft.EventGrid/systemTopics/eventSubscriptions');
    const destination = subscription.properties!.destination as { endpointType: string };
    expect(destination.endpointType).toBe('AzureFunction');
    const module = moduleNamed('eventSubscription');
    expect(JSON.stringify(module.properties!.parameters!.functionResourceId)).toContain(`/functions/${EXPORT_BLOB_DROP_FUNCTION}`);
    expect((subscription.properties!.filter as { includedEventTypes: string[] }).includedEventTypes).toEqual(['Microsoft.Storage.BlobCreated']);
    // Only for the one provision the postdeploy hook runs: the variable is never kept in the azd environment.
    expect(module.condition).toBe("[parameters('eventSubscriptionEnabled')]");
    expect(parametersFile.parameters.eventSubscriptionEnabled.value).toBe('${CONNECTOR_CODE_DEPLOYED}');
    expect(read('infra', 'hooks', 'postdeploy.mjs')).toContain("azd(['provision', '--no-state', '--no-prompt'], { CONNECTOR_CODE_DEPLOYED: 'true' })");
    expect(read('infra', 'hooks', 'postdeploy.mjs')).toContain(`const FUNCTION = '${EXPORT_BLOB_DROP_FUNCTION}'`);
  });

  it("puts the system topic in the export account's region, or reuses the account's own", () => {
    const exportStorage = moduleNamed('exportStorage').properties!.template!;
    const topicModule = moduleNamed('exportSystemTopic', exportStorage);
    expect(JSON.stringify(topicModule.properties!.parameters!.location)).toMatch(/reference\(.*Microsoft\.Storage\/storageAccounts.*\)\.location|\.location/);
    expect(topicModule.condition).toBe("[empty(parameters('existingSystemTopicName'))]");
    expect(parametersFile.parameters.existingExportSystemTopicName.value).toBe('${EXPORT_SYSTEM_TOPIC_NAME}');
  });

  it('gives the app storage no shared keys, a new export account none by default and no soft delete, and uses no account key anywhere', () => {
    const appStorage = resourcesOf(moduleNamed('appStorage').properties!.template!).find((r) => r.type === 'Microsoft.Storage/storageAccounts')!;
    expect(appStorage.properties).toMatchObject({ allowSharedKeyAccess: false, allowBlobPublicAccess: false });
    const exportStorage = moduleNamed('exportStorage').properties!.template!;
    const newAccount = resourcesOf(exportStorage).find((r) => r.type === 'Microsoft.Storage/storageAccounts')!;
    expect(newAccount.properties!.allowSharedKeyAccess).toBe("[parameters('allowSharedKeyAccess')]");
    expect(template.parameters!.exportAccountAllowSharedKeyAccess.defaultValue).toBe(false);
    // Customer Insights: "If you turned on the soft delete setting ... exports will fail."
    const blobService = resourcesOf(exportStorage).find((r) => r.type === 'Microsoft.Storage/storageAccounts/blobServices' && r.properties)!;
    expect(blobService.properties).toMatchObject({ deleteRetentionPolicy: { enabled: false } });
    expect(templateText).not.toMatch(/listKeys|AccountKey=|DefaultEndpointsProtocol|listConnectionStrings/);
    for (const value of Object.values(appSettings)) expect(String(value)).not.toMatch(/AccountKey|SharedAccessSignature|sig=/i);
  });

  it('runs the app on Flex Consumption with Node 22, the package reached by identity, no basic publishing credentials, and the azd tag on the site alone', () => {
    const site = resourceOfType('Microsoft.Web/sites');
    const config = site.properties!.functionAppConfig as {
      runtime: { name: string; version: string };
      deployment: { storage: { authentication: { type: string } } };
    };
    expect(config.runtime).toEqual({ name: 'node', version: '22' });
    expect(config.deployment.storage.authentication.type).toBe('UserAssignedIdentity');
    const plan = resourceOfType('Microsoft.Web/serverfarms') as unknown as { sku: { name: string; tier: string }; tags: string };
    expect(plan.sku).toEqual({ name: 'FC1', tier: 'FlexConsumption' });
    // azd before 1.23.10 refuses two resources tagged azd-service-name.
    expect(plan.tags).toBe("[parameters('tags')]");
    expect(site.tags).toBe("[parameters('siteTags')]");
    expect(JSON.stringify(moduleNamed('functionApp').properties!.parameters!.siteTags)).toContain('azd-service-name');
    expect(JSON.stringify(moduleNamed('functionApp').properties!.parameters!.tags)).not.toContain('azd-service-name');
    const policies = allResources().filter((r) => r.type === 'Microsoft.Web/sites/basicPublishingCredentialsPolicies');
    expect(policies.map((p) => [p.name.replace(/.*'(\w+)'.*/, '$1'), p.properties])).toEqual([
      ['ftp', { allow: false }],
      ['scm', { allow: false }],
    ]);
    // No V8 bound by default: the host's pre-warmed worker is used (a bound set earlier is lifted, the setting is always written).
    expect(template.parameters!.nodeMaxOldSpaceMB.defaultValue).toBe(0);
    expect(appSettings.languageWorkers__node__arguments).toContain("''");
    // A bound set writes the arguments the benchmark's workers run with: the RSS it reports is the deployment's.
    const bound = /format\('([^']*)', parameters\('nodeMaxOldSpaceMB'\)\)/.exec(appSettings.languageWorkers__node__arguments)?.[1];
    expect(bound?.replace('{0}', '192')).toBe(boundedWorkerNodeArgs(192));
  });

  it("writes the Braze key only when given one, and grants rotation only to whom it is told, with the principal's type", () => {
    const keyVault = moduleNamed('keyVault').properties!.template!;
    const secret = resourcesOf(keyVault).find((r) => r.type === 'Microsoft.KeyVault/vaults/secrets')!;
    expect(secret.condition).toBe("[not(empty(parameters('brazeApiKey')))]");
    expect(template.parameters!.brazeApiKey.defaultValue).toBe('');
    const officer = resourcesOf(keyVault).find((r) => r.type === 'Microsoft.Authorization/roleAssignments' && r.condition)!;
    expect(officer.condition).toBe("[not(empty(parameters('adminPrincipalId')))]");
    expect(officer.properties!.principalType).toBe("[parameters('adminPrincipalType')]");
    const vault = resourcesOf(keyVault).find((r) => r.type === 'Microsoft.KeyVault/vaults')!;
    expect(vault.properties!.enablePurgeProtection).toBe("[if(parameters('purgeProtection'), true(), null())]");
    expect(template.parameters!.keyVaultPurgeProtection.defaultValue).toBe(false);
  });

  it('closes storage and Key Vault to the internet when asked, with the app on a virtual network', () => {
    expect(moduleNamed('network').condition).toBe("[parameters('networkIsolation')]");
    expect(template.parameters!.networkIsolation.defaultValue).toBe(false);
    const network = moduleNamed('network').properties!.template!;
    const groups = resourcesOf(network).find((r) => r.type === 'Microsoft.Network/privateEndpoints')!;
    expect(JSON.stringify(network.variables!.endpoints)).toMatch(/blob.*queue.*table.*vault/);
    expect(groups).toBeDefined();
    const subnets = JSON.stringify(resourceOfType('Microsoft.Network/virtualNetworks', network).properties);
    expect(subnets).toContain('Microsoft.App/environments');
    expect(subnets).toContain('natGateway');
    const appStorage = resourcesOf(moduleNamed('appStorage').properties!.template!).find((r) => r.type === 'Microsoft.Storage/storageAccounts')!;
    expect(appStorage.properties!.publicNetworkAccess).toBe("[if(parameters('privateOnly'), 'Disabled', 'Enabled')]");
    const vault = resourcesOf(moduleNamed('keyVault').properties!.template!).find((r) => r.type === 'Microsoft.KeyVault/vaults')!;
    expect(vault.properties!.publicNetworkAccess).toBe("[if(parameters('privateOnly'), 'Disabled', 'Enabled')]");
    expect(JSON.stringify(moduleNamed('functionApp').properties!.parameters!.virtualNetworkSubnetId)).toContain('appSubnetId');
  });

  it('turns off local authentication on Log Analytics as on Application Insights', () => {
    const monitoring = moduleNamed('monitoring').properties!.template!;
    expect(resourceOfType('Microsoft.OperationalInsights/workspaces', monitoring).properties).toMatchObject({ features: { disableLocalAuth: true } });
    expect(resourceOfType('Microsoft.Insights/components', monitoring).properties).toMatchObject({ DisableLocalAuth: true });
  });
});

/** A query's fields of the record (`e.<field>`) and the records it reads (`connectorEvent) == "X"`, `in (...)`, `startswith "Run"`). */
function queryUse(query: string): { events: string[]; fields: string[] } {
  const named = [...query.matchAll(/connectorEvent\)\s*(?:==\s*"(\w+)"|in\s*\(([^)]*)\)|startswith\s*"(\w+)")/g)].flatMap((m) =>
    m[1] ? [m[1]] : m[2] ? [...m[2].matchAll(/"(\w+)"/g)].map((n) => n[1]) : connectorEvents.filter((e) => e.startsWith(m[3])),
  );
  const fields = [...new Set([...query.matchAll(/\be\.([A-Za-z][A-Za-z0-9]*)/g)].map((m) => m[1]).filter((f) => f !== 'connectorEvent'))];
  return { events: named, fields };
}

function expectQueriesReadWhatIsWritten(queries: string[]) {
  expect(queries.length).toBeGreaterThan(0);
  for (const query of queries) {
    const { events, fields } = queryUse(query);
    // Every query picks its records by name, and every name is one the code writes.
    expect({ query, events: events.length > 0 }).toEqual({ query, events: true });
    for (const event of events) expect(connectorEvents).toContain(event);
    // Every field it reads is a field of one of the records it picks.
    const written = new Set(events.flatMap((e) => [...recordFields[e as keyof typeof recordFields]] as string[]));
    expect({ query, unknown: fields.filter((f) => !written.has(f)) }).toEqual({ query, unknown: [] });
  }
}

describe('the operations view and the alerts, held against the records the code writes', () => {
  const workbook = JSON.parse(read('infra', 'workbook.json')) as { items: { type: number; content: { query?: string; title?: string } }[] };

  it('alert rules read only record names and fields the code writes, catch late records once, and exist only with someone to tell', () => {
    const alerts = moduleNamed('alerts').properties!.template!;
    const queries = (alerts.variables!.rules as { query: string }[]).map((r) => r.query.replace("${variables('records')}", String(alerts.variables!.records)));
    expectQueriesReadWhatIsWritten(queries.map((q) => q.replace(/^\[format\('|'\)\]$/g, '')));
    expect(String(alerts.variables!.records)).toContain('ingestion_time() > ago(5m)');
    expect([alerts.variables!.frequency, alerts.variables!.window]).toEqual(['PT5M', 'PT15M']);
    const rules = resourceOfType('Microsoft.Insights/scheduledQueryRules', alerts);
    expect(rules.copy!.count).toContain("variables('hasReceiver')");
  });

  it('the workbook is deployed, and each of its queries reads only record names and fields the code writes', () => {
    const module = moduleNamed('workbook').properties!.template!;
    expect(resourceOfType('Microsoft.Insights/workbooks', module).properties!.serializedData).toBe("[variables('$fxv#0')]");
    expect(JSON.parse(String(module.variables!['$fxv#0']))).toEqual(workbook);
    const queries = workbook.items.filter((i) => i.type === 3).map((i) => i.content.query!);
    expect(workbook.items.filter((i) => i.type === 3).map((i) => i.content.title)).toEqual([
      'Run history',
      'Rows and profiles per run',
      'Braze requests, 429s and hand-backs per hour',
      'Runs held, halted, stalled or failed',
      'Drift found by reconciles',
      'Braze data points per destination and day',
    ]);
    expectQueriesReadWhatIsWritten(queries);
  });

  it('a query naming a field no record has is caught', () => {
    expect(queryUse('traces | where tostring(e.connectorEvent) == "RunCompleted" | project e.rowsRead, e.profilesEnqueued')).toEqual({
      events: ['RunCompleted'],
      fields: ['rowsRead', 'profilesEnqueued'],
    });
    expect(recordFields.RunCompleted as readonly string[]).not.toContain('profilesEnqueued');
  });
});

describe('azd: azure.yaml, the hooks and .funcignore', () => {
  const azureYaml = read('azure.yaml');

  it("asks for an azd that never deletes an existing export account's resource group", () => {
    expect(azureYaml).toMatch(/requiredVersions:\s*\n\s*azd: '>= 1\.24\.1'/);
  });

  it('runs every hook on Windows as on Linux and macOS, and each hook script parses', () => {
    const hooks = [...azureYaml.matchAll(/^ {2}(\w+):\n {4}posix:\n(?: {6}.*\n)+ {4}windows:\n((?: {6}.*\n)+)/gm)];
    expect(hooks.map((h) => h[1])).toEqual(['preprovision', 'postprovision', 'postdeploy']);
    for (const [block] of hooks) {
      const runs = [...block.matchAll(/run: (.*)/g)].map((m) => m[1]);
      expect(runs).toHaveLength(2);
      expect(runs[0]).toBe(runs[1]);
      const script = /node (\S+)/.exec(runs[0])![1];
      expect(existsSync(path.join(root, script))).toBe(true);
      execFileSync(process.execPath, ['--check', path.join(root, script)]);
    }
  });

  it('keeps node_modules and the local build out of the package and the sources in, as remoteBuild needs', () => {
    // azd matches .funcignore as gitignore patterns; `ignore` implements the same specification.
    const rules = ignore().add(read('.funcignore'));
    expect(rules.ignores('node_modules/')).toBe(true);
    expect(rules.ignores('dist/')).toBe(true);
    for (const kept of ['tsconfig.json', 'package.json', 'package-lock.json', 'host.json', 'functions/syncHttp.ts', 'shared/config/settings.ts'])
      expect({ kept, ignored: rules.ignores(kept) }).toEqual({ kept, ignored: false });
    for (const left of ['test/', 'bench/', 'local/', 'infra/', 'local.settings.json', '.env', 'tsconfig.test.json'])
      expect({ left, ignored: rules.ignores(left) }).toEqual({ left, ignored: true });
    expect(azureYaml).toMatch(/remoteBuild: true/);
  });
});

describe('the mapping config the template deploys', () => {
  it('is a valid mapping config', () => {
    expect(() => parseSyncConfig(read('infra', 'sync-config.json'), 'infra/sync-config.json')).not.toThrow();
    expect(template.parameters!.syncConfig.defaultValue).toBe("[variables('$fxv#0')]");
    expect(parseSyncConfig(JSON.stringify(template.variables!['$fxv#0']), "the template's default")).toEqual(
      parseSyncConfig(read('infra', 'sync-config.json'), 'infra/sync-config.json'),
    );
  });
});
