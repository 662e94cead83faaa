// The account Customer Insights exports to: an existing one (CI already writes there) or a new
// one. The app may only read, and only the export container. Its BlobCreated events go through a
// system topic to the app's Event Grid function (eventSubscription.bicep): the account's own
// system topic when it has one (an account has at most one), else a new one in the account's
// region (a system topic must be where its source is).
param name string
param createAccount bool
@description('Region of a new account; an existing one keeps its own.')
param location string
param tags object
param containerName string
param appPrincipalId string
@description('Name of the system topic to create; ignored when existingSystemTopicName is given.')
param systemTopicName string
@description('The account\'s existing system topic (it must have a system-assigned identity, for dead-lettering); empty creates one.')
param existingSystemTopicName string
@description('A new account only: shared-key access for a Customer Insights connection that uses the account key (one by subscription and resource group uses CI\'s identity).')
param allowSharedKeyAccess bool

var blobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

resource newAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = if (createAccount) {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowSharedKeyAccess: allowSharedKeyAccess
    defaultToOAuthAuthentication: true
  }
}

// "If you turned on the soft delete setting for the Azure Blob Storage account, exports will fail"
// (MicrosoftDocs/customer-insights, ci-docs/data/export-azure-blob-storage.md): kept off.
resource newBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = if (createAccount) {
  parent: newAccount
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: false }
    containerDeleteRetentionPolicy: { enabled: false }
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: name
  dependsOn: [newAccount, newBlobService]
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
}

resource appCanRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, appPrincipalId, blobDataReader)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

module newSystemTopic 'systemTopic.bicep' = if (empty(existingSystemTopicName)) {
  name: 'exportSystemTopic'
  params: {
    name: systemTopicName
    location: account.location
    tags: tags
    sourceId: account.id
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: empty(existingSystemTopicName) ? systemTopicName : existingSystemTopicName
  dependsOn: [newSystemTopic]
}

output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output systemTopicId string = systemTopic.id
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
