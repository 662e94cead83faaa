import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { AccessToken, TokenCredential } from '@azure/identity';

const tls = (name: string) => readFileSync(path.join(__dirname, 'tls', name));

/** The certificate the local Key Vault serves, for the client to trust (test/helpers/tls). */
export const LOCAL_TLS_CA = tls('localhost.crt');

/**
 * A local HTTPS server that speaks the part of the Key Vault secrets REST API the connector uses
 * (learn.microsoft.com/rest/api/keyvault/secrets/get-secret): `GET /secrets/{name}[/{version}]`,
 * newest version when none is named, 404 SecretNotFound, and the challenge every Key Vault client
 * starts with — a request without a token gets 401 with `WWW-Authenticate: Bearer authorization=…,
 * resource=…`, and the SDK asks its credential for a token of that resource and tries again.
 */
export class LocalKeyVault {
  private readonly server = https.createServer({ key: tls('localhost.key'), cert: tls('localhost.crt') }, (request, response) =>
    this.handle(request, response),
  );
  private readonly secrets = new Map<string, { version: string; value: string }[]>();
  /** GETs of a secret that reached it (with a token), by name. */
  readonly reads = new Map<string, number>();
  /** Answers the next reads of any secret with this status instead (a throttled or failing vault). */
  failNext: { status: number; count: number } | undefined;
  url = '';

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Sets a secret's value as a new version (a rotation); answers the version. */
  setSecret(name: string, value: string): string {
    const versions = this.secrets.get(name) ?? [];
    const version = `v${versions.length + 1}${'0'.repeat(30)}`.slice(0, 32);
    versions.push({ version, value });
    this.secrets.set(name, versions);
    return version;
  }

  private handle(request: import('node:http').IncomingMessage, response: import('node:http').ServerResponse): void {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      response.end(JSON.stringify(body));
    };
    if (!request.headers.authorization?.startsWith('Bearer ')) {
      send(
        401,
        { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } },
        {
          'www-authenticate':
            'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001", resource="https://vault.azure.net"',
        },
      );
      return;
    }
    const url = new URL(request.url ?? '/', this.url);
    const match = /^\/secrets\/([^/]+)\/?([^/]*)$/.exec(url.pathname);
    if (request.method !== 'GET' || !match || !url.searchParams.get('api-version')) {
      send(400, { error: { code: 'BadParameter', message: 'Only GET /secrets/{name}[/{version}]?api-version= is served here' } });
      return;
    }
    const [, name, version] = match;
    this.reads.set(name, (this.reads.get(name) ?? 0) + 1);
    if (this.failNext && this.failNext.count > 0) {
      this.failNext.count -= 1;
      send(this.failNext.status, { error: { code: 'InternalServerError', message: 'Something went wrong' } });
      return;
    }
    const versions = this.secrets.get(name) ?? [];
    const found = version ? versions.find((v) => v.version === version) : versions.at(-1);
    if (!found) {
      send(404, {
        error: { code: 'SecretNotFound', message: `A secret with (name/id) ${name}${version ? `/${version}` : ''} was not found in this key vault.` },
      });
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    send(200, {
      value: found.value,
      id: `${this.url}/secrets/${name}/${found.version}`,
      attributes: { enabled: true, created: now, updated: now, recoveryLevel: 'Recoverable+Purgeable' },
    });
  }
}

/** A credential that hands out a token without Entra ID: the local vault only checks one is sent. */
export const localVaultCredential: TokenCredential = {
  getToken: async (): Promise<AccessToken> => ({ token: 'local-vault-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
};
