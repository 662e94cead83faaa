// The app's settings, merged into the ones the site already has: a setting added by hand (a
// workspace's apiKeySetting, a tuning value) survives every provision. `Microsoft.Web/sites/config`
// replaces the whole list, hence the read first (as the Azure Verified Modules' site config module
// does). Where several name a setting, the template's own win, then tuning, then extra settings.
param siteName string
@description('Settings the template owns: where everything is, and what its parameters say.')
param managedSettings object
@description('Connector tuning by app setting name; empty values are not set, so the code\'s defaults apply.')
param tuningSettings object
@description('Further settings, kept as given.')
param extraSettings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

var current = list('${site.id}/config/appsettings', '2024-04-01').properties
var tuning = toObject(filter(items(tuningSettings), item => !empty(string(item.value))), item => item.key, item => string(item.value))

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(current, extraSettings, tuning, managedSettings)
}
