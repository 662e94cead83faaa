import type { TokenCredential } from '@azure/identity';
import { SecretClient, type SecretClientOptions } from '@azure/keyvault-secrets';
import { InvalidInputError } from '../errors';

/**
 * Where the Braze REST API key comes from. The client asks for it before each request and, when
 * Braze answers 401, asks for a fresh read once: a key rotated in Key Vault heals without a
 * redeploy.
 */
export interface ApiKeySource {
  /** The key to send now (read on first use). */
  get(): Promise<string>;
  /** Reads the key again; true when it differs from the one sent before. */
  refresh(): Promise<boolean>;
  /** Every key this source has handed out, so any of them can be redacted from what Braze echoes. */
  readonly known: ReadonlySet<string>;
}

/** The key from an app setting: nothing to re-read. */
export class SettingApiKey implements ApiKeySource {
  readonly known: ReadonlySet<string>;
  constructor(private readonly key: string) {
    this.known = new Set([key]);
  }
  async get(): Promise<string> {
    return this.key;
  }
  async refresh(): Promise<boolean> {
    return false;
  }
}

/** `https://<vault>.vault.azure.net/secrets/<name>[/<version>]` → its parts; anything else is refused. */
export function parseSecretUri(uri: string, what = 'BRAZE_API_KEY_SECRET_URI'): { vaultUrl: string; name: string; version?: string } {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new InvalidInputError(`${what}: is not a URL`);
  }
  const parts = url.pathname.split('/').filter(Boolean);
  if (url.protocol !== 'https:' || parts[0] !== 'secrets' || parts.length < 2 || parts.length > 3) {
    throw new InvalidInputError(`${what}: must look like https://<vault>.vault.azure.net/secrets/<name>[/<version>]`);
  }
  return { vaultUrl: `${url.protocol}//${url.host}`, name: parts[1], version: parts[2] };
}

/**
 * The key as a Key Vault secret, read with the app's identity (Key Vault Secrets User). Without a
 * version in the URI the newest version is read, so a rotation is picked up by the next refresh.
 */
export class KeyVaultApiKey implements ApiKeySource {
  private readonly client: SecretClient;
  private readonly name: string;
  private readonly version?: string;
  private current?: Promise<string>;
  private readonly seen = new Set<string>();

  constructor(secretUri: string, credential: TokenCredential, what?: string, clientOptions?: SecretClientOptions) {
    const { vaultUrl, name, version } = parseSecretUri(secretUri, what);
    this.client = new SecretClient(vaultUrl, credential, clientOptions);
    this.name = name;
    this.version = version;
  }

  get known(): ReadonlySet<string> {
    return this.seen;
  }

  get(): Promise<string> {
    this.current ??= this.read();
    // A failed read is not kept: the next request tries again.
    this.current.catch(() => (this.current = undefined));
    return this.current;
  }

  async refresh(): Promise<boolean> {
    const before = this.current ? await this.current.catch(() => undefined) : undefined;
    this.current = this.read();
    return (await this.current) !== before;
  }

  private async read(): Promise<string> {
    const secret = await this.client.getSecret(this.name, this.version ? { version: this.version } : {});
    if (!secret.value) throw new InvalidInputError(`Key Vault secret ${this.name} has no value`);
    this.seen.add(secret.value);
    return secret.value;
  }
}
