// The app's own storage: the Functions host, the connector's queues, run records and state.
// Shared keys are off: only identities with data roles get in.
param name string
param location string
param tags object
param deploymentContainerName string
param retentionDays int
param appPrincipalId string
@description('Reached only through private endpoints (network isolation); Azure services such as Event Grid dead-lettering still get in.')
param privateOnly bool

// Names the code uses (shared/storage/queueNames.ts, shared/config/settings.ts defaults); a test checks they agree.
var batchQueueName = 'braze-batches'
var runQueueName = 'export-runs'
var stateContainerName = 'braze-connector'
var runsTableName = 'brazeconnectorruns'
var deadLetterContainerName = 'event-dead-letters'

// The least that works for the app's identity:
// - Blob Data Owner: the Functions host keeps its own blobs (leases, keys, timer state) in this
//   account and requires Owner for an identity-based AzureWebJobsStorage; the connector's state
//   container lives here too.
// - Queue Data Contributor: send, receive and delete on the connector's queues and the host's
//   poison queues.
// - Table Data Contributor: the run records.
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: { defaultAction: privateOnly ? 'Deny' : 'Allow', bypass: 'AzureServices' }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in [batchQueueName, '${batchQueueName}-poison', runQueueName, '${runQueueName}-poison']: {
    parent: queueService
    name: queue
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource runsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: runsTableName
}

// Rejects reports and run files go after the retention; delivered state is never touched here
// (the connector replaces it itself, and a quiet destination still needs it).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'run-files'
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['${stateContainerName}/runs/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: retentionDays } } }
          }
        }
        {
          enabled: true
          name: 'event-dead-letters'
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['${deadLetterContainerName}/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: retentionDays } } }
          }
        }
      ]
    }
  }
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in items(roles): {
    name: guid(account.id, appPrincipalId, role.value)
    scope: account
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
output stateContainerName string = stateContainer.name
output deadLetterContainerName string = deadLetterContainer.name
output runsTableName string = runsTable.name
