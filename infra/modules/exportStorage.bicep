// The account Customer Insights exports to: an existing one (CI already writes there) or a new
// one. The app may only read, and only the export container. Its BlobCreated events go through a
// system topic to the app's Event Grid function (eventSubscription.bicep).
param name string
param createAccount bool
param location string
param tags object
param containerName string
param appPrincipalId string
param systemTopicName string

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
    // CI's export connection may use the account key; the connector never does.
    allowSharedKeyAccess: true
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: name
  dependsOn: [newAccount]
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

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output blobEndpoint string = account.properties.primaryEndpoints.blob
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
