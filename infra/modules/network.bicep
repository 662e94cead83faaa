// Network isolation (off by default): the app's storage and Key Vault take no traffic from the
// internet, only through private endpoints in a virtual network the app is integrated with
// (Flex Consumption: a subnet delegated to Microsoft.App/environments, as in the official
// Azure-Samples/functions-quickstart-typescript-azd). Braze and the export account stay on the
// internet: the app reaches them through a NAT gateway, since new subnets have no default
// outbound access.
param namePrefix string
param location string
param tags object
param appStorageId string
param keyVaultId string

var storageSuffix = environment().suffixes.storage
var endpoints = [
  { group: 'blob', zone: 'privatelink.blob.${storageSuffix}', target: appStorageId }
  { group: 'queue', zone: 'privatelink.queue.${storageSuffix}', target: appStorageId }
  { group: 'table', zone: 'privatelink.table.${storageSuffix}', target: appStorageId }
  { group: 'vault', zone: 'privatelink.vaultcore.azure.net', target: keyVaultId }
]

resource outboundIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-${namePrefix}'
  location: location
  tags: tags
  sku: { name: 'Standard' }
  properties: { publicIPAllocationMethod: 'Static' }
}

resource natGateway 'Microsoft.Network/natGateways@2024-05-01' = {
  name: 'ng-${namePrefix}'
  location: location
  tags: tags
  sku: { name: 'Standard' }
  properties: { publicIpAddresses: [{ id: outboundIp.id }] }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-${namePrefix}'
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: ['10.0.0.0/16'] }
    subnets: [
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: '10.0.1.0/24'
          privateEndpointNetworkPolicies: 'Disabled'
          defaultOutboundAccess: false
        }
      }
      {
        name: 'app'
        properties: {
          addressPrefix: '10.0.2.0/24'
          delegations: [{ name: 'flex-consumption', properties: { serviceName: 'Microsoft.App/environments' } }]
          natGateway: { id: natGateway.id }
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for endpoint in endpoints: {
    name: endpoint.zone
    location: 'global'
    tags: tags
  }
]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (endpoint, i) in endpoints: {
    parent: zones[i]
    name: 'link-${namePrefix}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: { id: vnet.id }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for (endpoint, i) in endpoints: {
    name: 'pe-${namePrefix}-${endpoint.group}'
    location: location
    tags: tags
    properties: {
      subnet: { id: vnet.properties.subnets[0].id }
      privateLinkServiceConnections: [
        {
          name: endpoint.group
          properties: { privateLinkServiceId: endpoint.target, groupIds: [endpoint.group] }
        }
      ]
    }
  }
]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (endpoint, i) in endpoints: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [{ name: endpoint.group, properties: { privateDnsZoneId: zones[i].id } }]
    }
  }
]

output appSubnetId string = vnet.properties.subnets[1].id
