// The connector in one resource group: the function app on Flex Consumption, its own storage
// (identity only, no shared keys), Key Vault for the Braze key, monitoring and alerts, and the
// Event Grid wiring from the account Customer Insights exports to.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags derive from it.')
param environmentName string

// Flex Consumption regions, as listed by the official Azure-Samples/functions-quickstart-typescript-azd.
@minLength(1)
@description('Region of the connector (one that offers Flex Consumption). A new export account goes here too; an existing one keeps its region, and so does its system topic.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({ azd: { type: 'location' } })
param location string

@description('Braze REST endpoint of the workspace, e.g. rest.iad-03.braze.com.')
param brazeRestEndpoint string

@secure()
@description('Braze REST API key with users.track, users.identify and users.external_ids.rename (users.delete with an erasure table), written to Key Vault when given (the first provision); empty leaves the vault\'s secret as it is, so a rotation there holds.')
param brazeApiKey string = ''

@description('The mapping config; by default infra/sync-config.json, which you edit before deploying. An object, so azd takes SYNC_CONFIG as JSON (a string parameter would break on its quotes).')
param syncConfig object = loadJsonContent('sync-config.json')

@description('The container Customer Insights exports to.')
param exportContainerName string = 'customer-insights'

@description('Name of the storage account Customer Insights already exports to; empty creates a new one.')
param existingExportStorageAccountName string = ''

@description('Resource group of that account (default: the connector\'s own).')
param existingExportStorageResourceGroup string = ''

@description('That account\'s Event Grid system topic, when it has one already (an account has at most one); empty creates one.')
param existingExportSystemTopicName string = ''

@description('A new export account only: allow shared-key access, for a Customer Insights connection that uses the account key.')
param exportAccountAllowSharedKeyAccess bool = false

@description('NCRONTAB schedule of the timer sync.')
param syncSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the reconcile with Braze (every destination); empty: on demand only (POST /api/reconcile).')
param reconcileSchedule string = ''

@description('Days rejects reports, run files and run records are kept.')
@minValue(1)
param retentionDays int = 30

@description('Connector settings left at the code\'s defaults when empty, by app setting name (README: Settings); main.parameters.json maps each to the azd environment variable of the same name.')
param tuning object = {}

@description('Further app settings, kept as given (a workspace\'s apiKeySetting, a Key Vault reference): JSON object text in EXTRA_APP_SETTINGS.')
param extraAppSettings object = {}

@description('E-mail address alerts go to; empty creates no action group.')
param alertEmail string = ''

@description('An existing action group (resource id) alerts go to. Without it or an e-mail address, no alert rule is created.')
param alertActionGroupId string = ''

@description('Alert when more than this share of a run\'s rows is rejected.')
param rejectedShareThreshold string = '0.05'

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('V8 old-space bound for the Node worker in MB (192 covers 1M profiles per destination; add 64 per further million); 0 sets none. A bound also caps the young generation at 8 MB a semi-space, which took ~40 MB off the measured peak RSS. Any value makes the host start its own worker instead of a pre-warmed one, so cold starts are slower.')
@minValue(0)
param nodeMaxOldSpaceMB int = 0

@description('Set for one provision by the postdeploy hook once the code is deployed: Event Grid subscribes only a function that exists. Never kept in the azd environment.')
param eventSubscriptionEnabled bool = false

@description('Who may rotate the Braze key in Key Vault (Key Vault Secrets Officer): an object id of a user, group or service principal; empty grants nobody. Not the deployer by default.')
param keyVaultAdminPrincipalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param keyVaultAdminPrincipalType string = 'User'

@description('Key Vault purge protection: on, a deleted vault keeps its name for 90 days and the environment cannot be re-created after azd down until then.')
param keyVaultPurgeProtection bool = false

@description('Storage and Key Vault reachable only through private endpoints, the app on a virtual network.')
param networkIsolation bool = false

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var newExportAccount = empty(existingExportStorageAccountName)
var exportAccountName = newExportAccount ? 'stcie${resourceToken}' : existingExportStorageAccountName
var exportResourceGroupName = newExportAccount || empty(existingExportStorageResourceGroup) ? rg.name : existingExportStorageResourceGroup

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-braze-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-braze-${resourceToken}'
    applicationInsightsName: 'appi-braze-${resourceToken}'
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module appStorage 'modules/appStorage.bicep' = {
  name: 'appStorage'
  scope: rg
  params: {
    name: 'stbraze${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package-${resourceToken}'
    retentionDays: retentionDays
    appPrincipalId: identity.outputs.principalId
    privateOnly: networkIsolation
  }
}

module keyVault 'modules/keyVault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: 'kv-braze-${resourceToken}'
    location: location
    tags: tags
    brazeApiKey: brazeApiKey
    appPrincipalId: identity.outputs.principalId
    adminPrincipalId: keyVaultAdminPrincipalId
    adminPrincipalType: keyVaultAdminPrincipalType
    purgeProtection: keyVaultPurgeProtection
    privateOnly: networkIsolation
  }
}

module network 'modules/network.bicep' = if (networkIsolation) {
  name: 'network'
  scope: rg
  params: {
    namePrefix: 'braze-${resourceToken}'
    location: location
    tags: tags
    appStorageId: appStorage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

module exportStorage 'modules/exportStorage.bicep' = {
  name: 'exportStorage'
  scope: resourceGroup(exportResourceGroupName)
  params: {
    name: exportAccountName
    createAccount: newExportAccount
    location: location
    tags: tags
    containerName: exportContainerName
    appPrincipalId: identity.outputs.principalId
    systemTopicName: 'evgt-ci-export-${resourceToken}'
    existingSystemTopicName: existingExportSystemTopicName
    allowSharedKeyAccess: exportAccountAllowSharedKeyAccess
  }
}

module functionApp 'modules/functionApp.bicep' = {
  name: 'functionApp'
  scope: rg
  params: {
    name: 'func-braze-${resourceToken}'
    planName: 'plan-braze-${resourceToken}'
    location: location
    tags: tags
    siteTags: union(tags, { 'azd-service-name': 'connector' })
    identityId: identity.outputs.id
    deploymentContainerUrl: '${appStorage.outputs.blobEndpoint}${appStorage.outputs.deploymentContainerName}'
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: networkIsolation ? network!.outputs.appSubnetId : ''
  }
}

module appSettings 'modules/appSettings.bicep' = {
  name: 'appSettings'
  scope: rg
  params: {
    siteName: functionApp.outputs.name
    extraSettings: extraAppSettings
    tuningSettings: tuning
    managedSettings: {
      // The host's storage, and the connector's, by the app's identity.
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.outputs.clientId
      AzureWebJobsStorage__blobServiceUri: appStorage.outputs.blobEndpoint
      AzureWebJobsStorage__queueServiceUri: appStorage.outputs.queueEndpoint
      AzureWebJobsStorage__tableServiceUri: appStorage.outputs.tableEndpoint
      APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.applicationInsightsConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
      ExportStorage__blobServiceUri: exportStorage.outputs.blobEndpoint
      EXPORT_CONTAINER: exportContainerName
      STATE_CONTAINER: appStorage.outputs.stateContainerName
      RUNS_TABLE: appStorage.outputs.runsTableName
      BRAZE_REST_ENDPOINT: brazeRestEndpoint
      BRAZE_API_KEY_SECRET_URI: keyVault.outputs.brazeApiKeySecretUri
      SYNC_SCHEDULE: syncSchedule
      RECONCILE_SCHEDULE: reconcileSchedule
      SYNC_CONFIG: string(syncConfig)
      RUN_RETENTION_DAYS: string(retentionDays)
      // Always written, empty when unset: settings are merged, so a bound set once is lifted by setting 0.
      languageWorkers__node__arguments: nodeMaxOldSpaceMB > 0 ? '--max-old-space-size=${nodeMaxOldSpaceMB} --max-semi-space-size=8' : ''
    }
  }
}

var eventSubscriptionName = 'ci-export-to-braze-connector'

module eventSubscription 'modules/eventSubscription.bicep' = if (eventSubscriptionEnabled) {
  name: 'eventSubscription'
  scope: resourceGroup(exportResourceGroupName)
  params: {
    name: eventSubscriptionName
    systemTopicName: exportStorage.outputs.systemTopicName
    functionResourceId: '${functionApp.outputs.id}/functions/exportBlobDrop'
    containerName: exportContainerName
    deadLetterStorageId: appStorage.outputs.id
    deadLetterContainerName: appStorage.outputs.deadLetterContainerName
  }
}

module deadLetterAccess 'modules/deadLetterAccess.bicep' = {
  name: 'deadLetterAccess'
  scope: rg
  params: {
    appStorageName: appStorage.outputs.name
    deadLetterContainerName: appStorage.outputs.deadLetterContainerName
    topicPrincipalId: exportStorage.outputs.systemTopicPrincipalId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'braze-${resourceToken}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
    alertActionGroupId: alertActionGroupId
    rejectedShareThreshold: rejectedShareThreshold
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    name: guid(rg.id, 'braze-connector-operations')
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_ID string = functionApp.outputs.id
output HTTP_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output FUNCTION_KEYS_HINT string = 'az functionapp keys list -g ${rg.name} -n ${functionApp.outputs.name} (or the portal: Function App > App keys)'
output EXPORT_STORAGE_ACCOUNT string = exportAccountName
output EXPORT_CONTAINER string = exportContainerName
output EXPORT_SYSTEM_TOPIC_ID string = exportStorage.outputs.systemTopicId
output EVENT_SUBSCRIPTION_NAME string = eventSubscriptionName
output KEY_VAULT_NAME string = keyVault.outputs.name
output BRAZE_API_KEY_SECRET_NAME string = keyVault.outputs.brazeApiKeySecretName
output APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output ALERT_RULES int = alerts.outputs.ruleCount
