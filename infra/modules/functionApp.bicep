// The function app on Flex Consumption (Linux, Node 22), identity-based everywhere: the host's
// storage, the deployment package, Application Insights and Key Vault. Its app settings are
// written by appSettings.bicep, merged with the ones already there.
param name string
param planName string
param location string
@description('Tags of the plan and every other resource.')
param tags object
@description('Tags of the site only: azd finds the service by its azd-service-name tag, and azd before 1.23.10 refuses two resources carrying it.')
param siteTags object
param identityId string
param deploymentContainerUrl string
param instanceMemoryMB int
param maximumInstanceCount int
@description('Subnet the app\'s outbound traffic goes through (network isolation); empty: none.')
param virtualNetworkSubnetId string = ''

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: siteTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
}

// Deployment goes through azd with Entra ID: publishing with a user name and password (FTP, the
// SCM site's basic auth) stays off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
