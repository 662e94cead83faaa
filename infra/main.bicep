// The connector in one resource group: the function app on Flex Consumption, its own storage
// (identity only, no shared keys), Key Vault for the Braze key, monitoring and alerts, and the
// Event Grid wiring from the account Customer Insights exports to.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags derive from it.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption).')
param location string

@description('Braze REST endpoint of the workspace, e.g. rest.iad-03.braze.com.')
param brazeRestEndpoint string

@secure()
@description('Braze REST API key with users.track; stored in Key Vault, never in app settings or outputs.')
param brazeApiKey string

@description('The mapping config (JSON text); by default infra/sync-config.json, which you edit before deploying.')
param syncConfigJson string = loadTextContent('sync-config.json')

@description('The container Customer Insights exports to.')
param exportContainerName string = 'customer-insights'

@description('Name of the storage account Customer Insights already exports to; empty creates a new one.')
param existingExportStorageAccountName string = ''

@description('Resource group of that account (default: the connector\'s own).')
param existingExportStorageResourceGroup string = ''

@description('NCRONTAB schedule of the timer sync.')
param syncSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the reconcile with Braze (every destination); empty: on demand only (POST /api/reconcile).')
param reconcileSchedule string = ''

@description('Days rejects reports, run files and run records are kept.')
@minValue(1)
param retentionDays int = 30

@description('E-mail address alerts go to; empty creates no action group.')
param alertEmail string = ''

@description('Alert when more than this share of a run\'s rows is rejected.')
param rejectedShareThreshold string = '0.05'

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('V8 old-space bound for the Node worker in MB: 192 covers 1M profiles per destination; add 64 per further million.')
param nodeMaxOldSpaceMB int = 192

@description('Set by the postdeploy hook once the function code is deployed: Event Grid checks that the function exists.')
param eventSubscriptionEnabled bool = false

@description('Your own object id, to get Key Vault Secrets Officer for rotating the key; empty grants nothing.')
param principalId string = ''

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
    operatorPrincipalId: principalId
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
  }
}

module functionApp 'modules/functionApp.bicep' = {
  name: 'functionApp'
  scope: rg
  params: {
    name: 'func-braze-${resourceToken}'
    planName: 'plan-braze-${resourceToken}'
    location: location
    tags: union(tags, { 'azd-service-name': 'connector' })
    identityId: identity.outputs.id
    deploymentContainerUrl: '${appStorage.outputs.blobEndpoint}${appStorage.outputs.deploymentContainerName}'
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    appSettings: {
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
      SYNC_CONFIG: syncConfigJson
      RUN_RETENTION_DAYS: string(retentionDays)
      languageWorkers__node__arguments: '--max-old-space-size=${nodeMaxOldSpaceMB}'
    }
  }
}

module eventSubscription 'modules/eventSubscription.bicep' = if (eventSubscriptionEnabled) {
  name: 'eventSubscription'
  scope: resourceGroup(exportResourceGroupName)
  params: {
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
    rejectedShareThreshold: rejectedShareThreshold
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output HTTP_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output FUNCTION_KEYS_HINT string = 'az functionapp keys list -g ${rg.name} -n ${functionApp.outputs.name} (or the portal: Function App > App keys)'
output EXPORT_STORAGE_ACCOUNT string = exportAccountName
output EXPORT_CONTAINER string = exportContainerName
output KEY_VAULT_NAME string = keyVault.outputs.name
output BRAZE_API_KEY_SECRET_NAME string = keyVault.outputs.brazeApiKeySecretName
output APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
