// The Braze key lives here and nowhere else; the app reads it with its identity (Secrets User)
// at start and again after a 401, so rotating the secret needs no redeploy. The template writes
// the secret only when it is given a key (the first provision, or a new environment): a later
// provision leaves a rotated secret alone (infra/hooks: the key leaves the azd environment once
// the vault holds it).
param name string
param location string
param tags object
@secure()
@description('The key to write; empty leaves the secret as it is.')
param brazeApiKey string
param appPrincipalId string
@description('Who may rotate the key (Key Vault Secrets Officer); empty grants nobody.')
param adminPrincipalId string
@allowed(['User', 'Group', 'ServicePrincipal'])
param adminPrincipalType string
@description('Purge protection keeps a deleted vault\'s name for 90 days: on, the environment cannot be re-created after azd down until then.')
param purgeProtection bool
@description('Reached only through a private endpoint (network isolation).')
param privateOnly bool

var secretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var secretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var secretName = 'braze-api-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 30
    // Purge protection cannot be turned off once on: null leaves a vault that has it as it is.
    enablePurgeProtection: purgeProtection ? true : null
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: privateOnly ? { defaultAction: 'Deny', bypass: 'AzureServices' } : null
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(brazeApiKey)) {
  parent: vault
  name: secretName
  properties: {
    value: brazeApiKey
    contentType: 'Braze REST API key (users.track, users.identify, users.external_ids.rename; users.delete with an erasure table)'
  }
}

resource appCanRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, secretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource adminCanRotate 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(adminPrincipalId)) {
  name: guid(vault.id, adminPrincipalId, secretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsOfficer)
    principalId: adminPrincipalId
    principalType: adminPrincipalType
  }
}

output id string = vault.id
output name string = vault.name
output brazeApiKeySecretName string = secretName
// Versionless: the newest version is read, so a rotation is picked up.
output brazeApiKeySecretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
