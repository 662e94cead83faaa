// After a provision that wrote the Braze key to Key Vault: the key leaves the azd environment
// (.azure/<env>/.env held it in plain text, or a reference to a secret elsewhere), so the vault's
// secret is the only copy and rotating it there (README) is never undone by the next provision.
import { azd, envValue } from './azure.mjs';

if (envValue('BRAZE_API_KEY')) {
  // `KEY=` rather than two arguments: an empty argument does not survive every shell.
  azd(['env', 'set', 'BRAZE_API_KEY=']);
  console.log(
    `Braze API key: now only in Key Vault ${envValue('KEY_VAULT_NAME') ?? ''} (secret braze-api-key), removed from the azd environment. Rotate it in the vault; the app reads the newest version.`,
  );
}
