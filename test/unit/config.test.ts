import { parseBrazeEndpoint } from '../../shared/config/endpoint';
import { loadAppSettings } from '../../shared/config/settings';
import { parseSyncConfig } from '../../shared/config/syncConfig';
import { InvalidInputError } from '../../shared/errors';

const validEnv = {
  AzureWebJobsStorage: 'UseDevelopmentStorage=true',
  EXPORT_CONTAINER: 'customer-insights',
  BRAZE_REST_ENDPOINT: 'rest.iad-03.braze.com',
  BRAZE_API_KEY: 'key',
  SYNC_CONFIG: '{}',
};

const validConfig = {
  destinations: [
    { name: 'BrazeExport', segments: [{ table: 'HighValue', brazeSegmentId: 'seg-1' }], matching: { emailColumn: 'EMail', customerIdColumn: 'CustomerId' } },
  ],
};

describe('app settings', () => {
  it('accepts the endpoint as a host name or URL, and defaults the rest', () => {
    const settings = loadAppSettings(validEnv);
    expect(settings.braze.endpoint).toBe('https://rest.iad-03.braze.com');
    expect(settings.braze.maxRetries).toBe(6);
    expect(settings.stateContainer).toBe('braze-connector');
  });

  it('names every bad field at once', () => {
    const attempt = () =>
      loadAppSettings({ EXPORT_CONTAINER: 'Bad_Name', BRAZE_REST_ENDPOINT: 'http://rest.iad-03.braze.com', BRAZE_REQUEST_TIMEOUT_MS: '-5' });
    expect(attempt).toThrow(InvalidInputError);
    const message = (() => {
      try {
        attempt();
      } catch (error) {
        return (error as Error).message;
      }
    })();
    expect(message).toMatch(/EXPORT_CONTAINER: must be a valid blob container name/);
    expect(message).toMatch(/BRAZE_API_KEY: /);
    expect(message).toMatch(/BRAZE_REQUEST_TIMEOUT_MS: /);
    expect(message).toMatch(/AzureWebJobsStorage: is required/);
    expect(message).toMatch(/SYNC_CONFIG: is required/);
    expect(message).toMatch(/BRAZE_REST_ENDPOINT: .*plain http is only allowed for loopback/);
  });

  it('takes identity-based storage through service URIs', () => {
    const { AzureWebJobsStorage: _omit, ...rest } = validEnv;
    const settings = loadAppSettings({
      ...rest,
      AzureWebJobsStorage__blobServiceUri: 'https://acct.blob.core.windows.net',
      AzureWebJobsStorage__queueServiceUri: 'https://acct.queue.core.windows.net',
      AzureWebJobsStorage__tableServiceUri: 'https://acct.table.core.windows.net',
    });
    expect(settings.storage.connectionString).toBeUndefined();
    expect(settings.storage.blobServiceUri).toBe('https://acct.blob.core.windows.net');
  });
});

describe('where the Braze key and the export come from', () => {
  it('takes the key from an app setting or a Key Vault secret URI, exactly one of them', () => {
    const { BRAZE_API_KEY: _key, ...withoutKey } = validEnv;
    const uri = 'https://kv-braze.vault.azure.net/secrets/braze-api-key';
    expect(loadAppSettings({ ...withoutKey, BRAZE_API_KEY_SECRET_URI: uri }).braze).toMatchObject({ apiKey: undefined, apiKeySecretUri: uri });
    expect(() => loadAppSettings(withoutKey)).toThrow(/BRAZE_API_KEY: is required: the REST API key, or BRAZE_API_KEY_SECRET_URI/);
    expect(() => loadAppSettings({ ...validEnv, BRAZE_API_KEY_SECRET_URI: uri })).toThrow(/set it or BRAZE_API_KEY_SECRET_URI, not both/);
  });
  it('reads the export from its own account when one is named, with the app identity', () => {
    const settings = loadAppSettings({
      ...validEnv,
      ExportStorage__blobServiceUri: 'https://ciexports.blob.core.windows.net',
      AzureWebJobsStorage__clientId: 'c1',
    });
    expect(settings.storage).toMatchObject({ exportBlobServiceUri: 'https://ciexports.blob.core.windows.net', clientId: 'c1' });
  });
});

describe('the Braze REST endpoint', () => {
  it.each([
    ['rest.iad-03.braze.com', 'https://rest.iad-03.braze.com'],
    ['https://rest.fra-02.braze.eu/', 'https://rest.fra-02.braze.eu'],
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ['http://localhost:9000', 'http://localhost:9000'],
  ])('accepts %s', (raw, expected) => expect(parseBrazeEndpoint(raw)).toBe(expected));

  it.each([
    ['http://rest.iad-03.braze.com', /plain http/],
    ['ftp://rest.iad-03.braze.com', /must use https/],
    ['https://user:pw@rest.iad-03.braze.com', /credentials/],
    ['', /empty/],
  ])('refuses %s', (raw, message) => expect(() => parseBrazeEndpoint(raw)).toThrow(message));
});

describe('the mapping config', () => {
  it('defaults the attribute to the segment API identifier and the matching rules', () => {
    const config = parseSyncConfig(JSON.stringify(validConfig), 'test');
    const destination = config.destinations[0];
    expect(destination.matching).toEqual({
      emailColumn: 'EMail',
      customerIdColumn: 'CustomerId',
      customerIdIsExternalId: true,
      fallbackIdentifiers: ['email', 'user_alias'],
      aliasLabel: 'ci_customer_id',
    });
    expect(destination.leaverValue).toBeNull();
  });

  it('names the bad field', () => {
    const bad = {
      destinations: [
        {
          name: 'BrazeExport',
          segments: [
            { table: 'A', brazeSegmentId: 'seg' },
            { table: 'B', brazeSegmentId: 'seg' },
          ],
          matching: {},
          fields: { FirstName: 'external_id' },
          colour: 'blue',
        },
      ],
    };
    expect(() => parseSyncConfig(JSON.stringify(bad), 'config.json')).toThrow(/Mapping config \(config\.json\) is invalid/);
    try {
      parseSyncConfig(JSON.stringify(bad), 'config.json');
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toMatch(/destinations\.0: Unrecognized key: "colour"/);
    }
    const withoutUnknownKey = { destinations: [{ ...bad.destinations[0], colour: undefined }] };
    try {
      parseSyncConfig(JSON.stringify(withoutUnknownKey), 'config.json');
      throw new Error('should have thrown');
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toMatch(/destinations\.0\.matching: needs emailColumn or customerIdColumn/);
      expect(message).toMatch(/destinations\.0\.segments\.1\.attribute: "seg" is already used by segment A/);
      expect(message).toMatch(/destinations\.0\.fields\.FirstName: "external_id" is an identifier/);
    }
  });

  it('says where JSON is broken', () => {
    expect(() => parseSyncConfig('{"destinations": [', 'cfg.json')).toThrow(/Mapping config \(cfg\.json\) is not valid JSON/);
  });
});
