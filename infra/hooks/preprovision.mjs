// Before each provision: the Braze key reaches Key Vault from BRAZE_API_KEY on the first
// provision, and the postprovision hook then removes it from the azd environment — the vault's
// secret is the only copy, and a rotation there is never undone by a later provision. So without
// BRAZE_API_KEY, the vault must already hold the secret: after `azd down` it is gone, and the app
// would start without a key.
import { arm, envValue, stop } from './azure.mjs';

const SECRET = 'braze-api-key';

if (!envValue('BRAZE_API_KEY')) {
  const vault = envValue('KEY_VAULT_NAME');
  const group = envValue('AZURE_RESOURCE_GROUP');
  const subscription = envValue('AZURE_SUBSCRIPTION_ID');
  const ask = 'Set the Braze REST API key for this provision: azd env set-secret BRAZE_API_KEY (or azd env set BRAZE_API_KEY <key>).';
  if (!vault || !group || !subscription) stop(`No Braze API key: this environment has not been provisioned yet. ${ask}`);
  const found = await arm(
    'GET',
    `/subscriptions/${subscription}/resourceGroups/${group}/providers/Microsoft.KeyVault/vaults/${vault}/secrets/${SECRET}?api-version=2023-07-01`,
  );
  if (found.status === 404) stop(`Key Vault ${vault} holds no secret ${SECRET} (was the environment taken down?). ${ask}`);
  if (found.status >= 400) stop(`Could not check Key Vault ${vault} for ${SECRET}: ${found.status} ${JSON.stringify(found.body)}`);
  console.log(`Braze API key: kept in Key Vault ${vault} (secret ${SECRET}); this provision does not change it.`);
}
