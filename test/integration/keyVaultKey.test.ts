import https from 'node:https';
import type { SecretClientOptions } from '@azure/keyvault-secrets';
import { KeyVaultApiKey } from '../../shared/braze/apiKey';
import { BrazeClient } from '../../shared/braze/client';
import { RateLimitPacer } from '../../shared/braze/pacer';
import { systemClock } from '../../shared/clock';
import { InvalidInputError } from '../../shared/errors';
import { BrazeServer } from '../../local/brazeServer';
import { LOCAL_TLS_CA, LocalKeyVault, localVaultCredential } from '../helpers/keyVaultServer';

/** The SDK as the app builds it, trusting the local vault's certificate (and only for this client). */
const agent = new https.Agent({ ca: LOCAL_TLS_CA });
const clientOptions: SecretClientOptions = {
  // The local vault's challenge names vault.azure.net, which 127.0.0.1 is not.
  disableChallengeResourceVerification: true,
  retryOptions: { maxRetries: 0 },
  additionalPolicies: [
    {
      position: 'perCall',
      policy: {
        name: 'localVaultCa',
        sendRequest: (request, next) => {
          request.agent = agent;
          return next(request);
        },
      },
    },
  ],
};

describe('the Braze key read from Key Vault (KeyVaultApiKey, against a local server that speaks the secrets API)', () => {
  let vault: LocalKeyVault;
  let url: string;
  beforeEach(async () => {
    vault = new LocalKeyVault();
    url = await vault.start();
  });
  afterEach(async () => {
    await vault.stop();
  });
  const keyOf = (uri: string) => new KeyVaultApiKey(uri, localVaultCredential, undefined, clientOptions);

  it('reads the newest version once and keeps it; a refresh reads again and says whether the key changed', async () => {
    vault.setSecret('braze-api-key', 'key-one');
    const key = keyOf(`${url}/secrets/braze-api-key`);
    expect(await Promise.all([key.get(), key.get(), key.get()])).toEqual(['key-one', 'key-one', 'key-one']);
    expect(vault.reads.get('braze-api-key')).toBe(1);
    // Not rotated: a refresh reads, and says nothing changed.
    expect(await key.refresh()).toBe(false);
    expect(vault.reads.get('braze-api-key')).toBe(2);
    // Rotated in the vault: the next refresh picks the new version up, and both keys stay known for redaction.
    vault.setSecret('braze-api-key', 'key-two');
    expect(await key.get()).toBe('key-one');
    expect(await key.refresh()).toBe(true);
    expect(await key.get()).toBe('key-two');
    expect([...key.known].sort()).toEqual(['key-one', 'key-two']);
  });

  it('reads the version a URI names, whatever is newer', async () => {
    const first = vault.setSecret('braze-api-key', 'key-one');
    vault.setSecret('braze-api-key', 'key-two');
    expect(await keyOf(`${url}/secrets/braze-api-key/${first}`).get()).toBe('key-one');
  });

  it('does not keep a failed read: the next request tries again', async () => {
    vault.setSecret('braze-api-key', 'key-one');
    vault.failNext = { status: 500, count: 1 };
    const key = keyOf(`${url}/secrets/braze-api-key`);
    await expect(key.get()).rejects.toMatchObject({ statusCode: 500 });
    expect(await key.get()).toBe('key-one');
    await expect(keyOf(`${url}/secrets/no-such-secret`).get()).rejects.toMatchObject({ statusCode: 404 });
    vault.setSecret('empty', '');
    await expect(keyOf(`${url}/secrets/empty`).get()).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('heals a rotated key without a restart: Braze answers 401, the key is read again, the request goes through', async () => {
    vault.setSecret('braze-api-key', 'old-key');
    const braze = new BrazeServer({ apiKey: 'new-key' });
    const endpoint = await braze.start();
    try {
      const key = keyOf(`${url}/secrets/braze-api-key`);
      const client = new BrazeClient(
        { endpoint, requestTimeoutMs: 2000, maxRetries: 1, retryDelayMs: 10, maxRetryDelayMs: 10, maxConcurrentRequests: 1, objectsPerRequest: 75 },
        key,
        new RateLimitPacer({ reserveShare: 0, clock: systemClock }),
        systemClock,
      );
      expect(await key.get()).toBe('old-key');
      // The key was rotated in the vault (and in Braze) while the app ran.
      vault.setSecret('braze-api-key', 'new-key');
      const outcome = await client.track([{ external_id: 'p-1', first_name: 'P' }], Date.now() + 5000);
      expect(outcome.kind).toBe('accepted');
      expect(braze.stats.byStatus[401]).toBe(1);
      expect(vault.reads.get('braze-api-key')).toBe(2);
      expect(braze.profile('external_id:p-1')).toEqual({ first_name: 'P' });
    } finally {
      await braze.stop();
    }
  });
});
