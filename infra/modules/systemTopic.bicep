// The export account's Event Grid system topic, in the account's region (a system topic must be
// where its source is; the region reaches here as a parameter, read from the account at deploy time).
param name string
param location string
param tags object
param sourceId string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: sourceId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}
