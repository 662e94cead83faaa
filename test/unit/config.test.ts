import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseBrazeEndpoint } from '../../shared/config/endpoint';
import { loadAppSettings } from '../../shared/config/settings';
import { loadSyncConfig, parseSyncConfig } from '../../shared/config/syncConfig';
import { formatIssues, InvalidInputError } from '../../shared/errors';

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
    expect(() => loadAppSettings(withoutKey)).toThrow(/BRAZE_API_KEY: is required with BRAZE_REST_ENDPOINT: the REST API key, or BRAZE_API_KEY_SECRET_URI/);
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
      expect(message).toMatch(/destinations\.0: Unrecognized key: "colour"$/m);
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

/** The message loadAppSettings throws for env (it must throw). */
function settingsError(env: Record<string, string | undefined>): string {
  try {
    loadAppSettings(env);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    return (error as Error).message;
  }
  throw new Error('loadAppSettings accepted the settings');
}

describe('the timer schedules', () => {
  const SIX_FIELDS = 'six fields {second} {minute} {hour} {day} {month} {day-of-week}';

  it.each([
    '0 */15 * * * *',
    '0 0 */2 * * *',
    '0 30 9 * * 1-5',
    '5-7 * * * * *',
    '0 30 9 * Jan Mon',
    '0 30 9 * january monday',
    '0 0 0 1,15 * *',
    '0 5/10 * * * *',
  ])('takes the NCRONTAB expression %s', (schedule) => {
    expect(loadAppSettings({ ...validEnv, SYNC_SCHEDULE: schedule, RECONCILE_SCHEDULE: schedule }).syncSchedule).toBe(schedule);
  });

  it('takes an empty RECONCILE_SCHEDULE as unset (the template writes it so when it is off), but not an empty SYNC_SCHEDULE', () => {
    expect(() => loadAppSettings({ ...validEnv, RECONCILE_SCHEDULE: '' })).not.toThrow();
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: ' ' })).toContain(`SYNC_SCHEDULE: " " is not an NCRONTAB expression: ${SIX_FIELDS}`);
  });

  it('refuses what is not NCRONTAB, naming the setting, the value and what is allowed, both at once', () => {
    const message = settingsError({ ...validEnv, SYNC_SCHEDULE: 'garbage', RECONCILE_SCHEDULE: 'every sunday' });
    expect(message).toContain(`  - SYNC_SCHEDULE: "garbage" is not an NCRONTAB expression: ${SIX_FIELDS}, e.g. "0 */15 * * * *"`);
    expect(message).toContain(`  - RECONCILE_SCHEDULE: "every sunday" is not an NCRONTAB expression: ${SIX_FIELDS}`);
  });

  it('refuses a five-field cron, showing it with the second added', () => {
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: '*/5 * * * *' })).toContain(
      `SYNC_SCHEDULE: "*/5 * * * *" is not an NCRONTAB expression: ${SIX_FIELDS}, not 5 (with the second first: "0 */5 * * * *")`,
    );
  });

  it.each([
    ['0 61 * * * *', '{minute} "61"'],
    ['0 0 25 * * *', '{hour} "25"'],
    ['0 0 0 * 13 *', '{month} "13"'],
    // What cron-parser takes beyond NCrontab: Azure would refuse the function at start-up.
    ['0 0 0 * * 7', '{day-of-week} "7"'],
    ['0 0 0 L * *', '{day} "L"'],
    ['0 0 0 * * 1#2', '{day-of-week} "1#2"'],
    ['H * * * * *', '{second} "H"'],
    ['0 0 0 ? * *', '{day} "?"'],
    ['0 0 0 * Foo *', '{month} "Foo"'],
  ])('refuses %s, naming the field', (schedule, field) => {
    const message = settingsError({ ...validEnv, SYNC_SCHEDULE: schedule });
    expect(message).toContain(`SYNC_SCHEDULE: "${schedule}" is not an NCRONTAB expression: ${field} is not`);
  });

  it('refuses a range that runs backwards, which NCrontab would turn around, showing the wrap-around meant', () => {
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: '0 0 22-2 * * *' })).toContain(
      'SYNC_SCHEDULE: "0 0 22-2 * * *" is not an NCRONTAB expression: {hour} "22-2" runs backwards; a range goes upwards, a wrap-around is two: "22-23,0-2"',
    );
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: '0 0 9 * * Sat-Sun' })).toContain(
      '{day-of-week} "Sat-Sun" runs backwards; a range goes upwards, a wrap-around is two: "6,0"',
    );
  });

  it('refuses a schedule that never fires', () => {
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: '0 0 0 31 2 *' })).toMatch(/SYNC_SCHEDULE: "0 0 0 31 2 \*" never fires/);
  });

  it('refuses a TimeSpan, which Azure takes only on an App Service plan', () => {
    expect(settingsError({ ...validEnv, SYNC_SCHEDULE: '01:00:00' })).toMatch(
      /SYNC_SCHEDULE: "01:00:00" is a TimeSpan, which Azure Functions takes only on an App Service plan, not on Flex Consumption where this app runs: use NCRONTAB/,
    );
  });
});

describe('every bad setting at once', () => {
  it('takes an empty setting as unset: its default holds, or it is required', () => {
    expect(loadAppSettings({ ...validEnv, PROFILES_PER_SHARD: '', BRAZE_API_KEY_SECRET_URI: ' ' })).toMatchObject({ profilesPerShard: 100_000 });
    expect(settingsError({ ...validEnv, EXPORT_CONTAINER: '', AzureWebJobsStorage: '' }).split('\n')).toEqual([
      'App settings are invalid:',
      '  - AzureWebJobsStorage: is required: a connection string, or AzureWebJobsStorage__blobServiceUri, __queueServiceUri and __tableServiceUri for identity-based access',
      '  - EXPORT_CONTAINER: is required: the container CI exports to',
    ]);
  });

  it('says the settings are invalid and lists each', () => {
    const message = settingsError({ ...validEnv, BRAZE_MAX_RETRIES: 'abc', EXPORT_CONTAINER: 'Bad_Name' });
    expect(message.split('\n')).toEqual([
      'App settings are invalid:',
      '  - EXPORT_CONTAINER: must be a valid blob container name (received "Bad_Name")',
      '  - BRAZE_MAX_RETRIES: must be a whole number, at least 0 (received "abc")',
    ]);
  });

  it('names the value and the range of a number', () => {
    const message = settingsError({
      ...validEnv,
      BRAZE_OBJECTS_PER_REQUEST: '76',
      BRAZE_RATE_LIMIT_RESERVE_SHARE: 'half',
      BRAZE_REQUEST_TIMEOUT_MS: '1.5',
      PROFILES_PER_SHARD: '99',
    });
    expect(message).toContain('BRAZE_OBJECTS_PER_REQUEST: must be a whole number from 1 to 75 (received 76)');
    expect(message).toContain('BRAZE_RATE_LIMIT_RESERVE_SHARE: must be a number from 0 to 0.9 (received "half")');
    expect(message).toContain('BRAZE_REQUEST_TIMEOUT_MS: must be a whole number, at least 1 (received "1.5")');
    expect(message).toContain('PROFILES_PER_SHARD: must be a whole number from 100 to 1000000 (received 99)');
  });

  it('never shows the value of a secret or of a URL that may carry one', () => {
    const message = settingsError({
      ...validEnv,
      ExportStorage__blobServiceUri: 'ciexports.blob.core.windows.net/?sv=2024&sig=s3cr3t',
      BRAZE_API_KEY: undefined,
      BRAZE_API_KEY_SECRET_URI: 'kv/secrets/s3cr3t',
    });
    expect(message).toMatch(/ExportStorage__blobServiceUri: must be a URL \(value not shown\)/);
    expect(message).toMatch(/BRAZE_API_KEY_SECRET_URI: must be a URL \(value not shown\)/);
    expect(message).not.toContain('s3cr3t');
  });
});

describe('the Braze endpoint and key', () => {
  const { BRAZE_API_KEY: _key, BRAZE_REST_ENDPOINT: _endpoint, ...withNeither } = validEnv;

  it('go together: a key without an endpoint is refused, naming both', () => {
    expect(settingsError({ ...withNeither, BRAZE_API_KEY: 'k' })).toContain(
      'BRAZE_REST_ENDPOINT: is required with BRAZE_API_KEY: the REST endpoint of its workspace (e.g. rest.iad-03.braze.com)',
    );
    expect(settingsError({ ...withNeither, BRAZE_API_KEY_SECRET_URI: 'https://kv.vault.azure.net/secrets/k' })).toContain(
      'BRAZE_REST_ENDPOINT: is required with BRAZE_API_KEY_SECRET_URI',
    );
  });

  it('go together: an endpoint without a key is refused, naming both', () => {
    expect(settingsError({ ...withNeither, BRAZE_REST_ENDPOINT: 'rest.iad-03.braze.com' })).toContain(
      'BRAZE_API_KEY: is required with BRAZE_REST_ENDPOINT: the REST API key, or BRAZE_API_KEY_SECRET_URI naming the Key Vault secret that holds it',
    );
  });

  it('are both required', () => {
    const message = settingsError(withNeither);
    expect(message).toContain('BRAZE_REST_ENDPOINT: is required (e.g. rest.iad-03.braze.com)');
    expect(message).toContain('BRAZE_API_KEY: is required: the REST API key, or BRAZE_API_KEY_SECRET_URI');
  });
});

describe('a mapping config with a bad value', () => {
  const destination = validConfig.destinations[0];
  const errorFor = (change: Record<string, unknown>): string => {
    try {
      parseSyncConfig(JSON.stringify({ destinations: [{ ...destination, ...change }] }), 'config.json');
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error('parseSyncConfig accepted the config');
  };

  it.each([
    [{ leaverValue: 'false' }, 'destinations.0.leaverValue: must be null or false (received "false")'],
    [
      { matching: { ...destination.matching, fallbackIdentifiers: ['phone'] } },
      'destinations.0.matching.fallbackIdentifiers.0: must be "email" or "user_alias" (received "phone")',
    ],
    [
      { matching: { ...destination.matching, customerIdIsExternalId: 'true' } },
      'destinations.0.matching.customerIdIsExternalId: must be true or false (received "true")',
    ],
    [{ membership: { mode: 'lists' } }, 'destinations.0.membership.mode: must be "flags" or "list" (received "lists")'],
    [{ membership: { mode: 'list', maxLength: 600 } }, 'destinations.0.membership.maxLength: must be a whole number from 1 to 500 (received 600)'],
    [{ membership: { mode: 'list', whenEmpty: false } }, 'destinations.0.membership.whenEmpty: must be null or [] (received false)'],
    [{ guard: { maxClearedShare: 2 } }, 'destinations.0.guard.maxClearedShare: must be a number from 0 to 1, or null (received 2)'],
    [{ notify: [{ urlSetting: 'HOOK', format: 'xml' }] }, 'destinations.0.notify.0.format: must be one of "json", "slack", "teams" (received "xml")'],
    [{ dryRun: undefined, segments: undefined }, 'destinations.0.segments: is required (an array)'],
  ])('%j says the value and what is allowed', (change, line) => {
    expect(errorFor(change)).toContain(`  - ${line}`);
  });
});

describe('the mapping config file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'config-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names a file that is not there, without a stack', () => {
    const file = path.join(dir, 'missing.json');
    expect(() => loadSyncConfig({ file })).toThrow(new InvalidInputError(`SYNC_CONFIG_FILE: cannot read "${file}": no such file`));
  });

  it('names a file that is not JSON, and where', () => {
    const file = path.join(dir, 'broken.json');
    writeFileSync(file, '{\n  "destinations": [\n    {"name": "x",}\n');
    expect(() => loadSyncConfig({ file })).toThrow(new RegExp(`^Mapping config \\(SYNC_CONFIG_FILE "${file}"\\) is not valid JSON: .*line 3, column`));
  });

  it('names an empty file', () => {
    const file = path.join(dir, 'empty.json');
    writeFileSync(file, '\n');
    expect(() => loadSyncConfig({ file })).toThrow(`Mapping config (SYNC_CONFIG_FILE "${file}") is not valid JSON: it is empty`);
  });

  it('names a folder given as the file', () => {
    expect(() => loadSyncConfig({ file: dir })).toThrow(`SYNC_CONFIG_FILE: cannot read "${dir}": it is a folder`);
  });
});

describe('a zod error as a message', () => {
  const schema = z.object({ apiKey: z.string().min(8), name: z.string().min(3), hook: z.string().regex(/^https:/), mode: z.enum(['a', 'b']) });

  it('shows the value received and what is allowed, but never a secret', () => {
    const parsed = schema.safeParse({ apiKey: 'short', name: 'x', hook: 'http://hooks.slack.com/services/T0/B0/s3cr3t', mode: 'c' }, { reportInput: true });
    const message = formatIssues('Thing', parsed.error!);
    expect(message.split('\n')).toEqual([
      'Thing is invalid:',
      '  - apiKey: must be at least 8 characters long (value not shown)',
      '  - name: must be at least 3 characters long (received "x")',
      '  - hook: must match /^https:/ (value not shown)',
      '  - mode: must be "a" or "b" (received "c")',
    ]);
  });
});
