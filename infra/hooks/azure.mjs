// What the azd hooks share: Azure Resource Manager calls signed in as azd is (azd auth token,
// through @azure/identity's AzureDeveloperCliCredential), and azd itself. Node, not sh or pwsh,
// so the hooks are the same on Windows, Linux and macOS; no Azure CLI needed.
import { spawnSync } from 'node:child_process';
import { AzureDeveloperCliCredential } from '@azure/identity';

const ARM = 'https://management.azure.com';
const credential = new AzureDeveloperCliCredential({ tenantId: process.env.AZURE_TENANT_ID || undefined });

/** One ARM request; answers { status, body } (body parsed when JSON). */
export async function arm(method, pathAndQuery, body) {
  const { token } = await credential.getToken(`${ARM}/.default`);
  const response = await fetch(`${ARM}${pathAndQuery}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/** Runs azd with these arguments (and extra environment for that process only); throws if it fails. */
export function azd(args, extraEnv = {}) {
  // No shell: arguments reach azd as given (azd is azd.exe on Windows, found on PATH).
  const result = spawnSync('azd', args, { stdio: 'inherit', env: { ...process.env, ...extraEnv } });
  if (result.status !== 0) throw new Error(`azd ${args.join(' ')} failed (exit ${result.status ?? result.signal})`);
}

/** A value of the azd environment (hooks get them as environment variables). */
export function envValue(name) {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : value;
}

/** Ends the hook with a message that says what to do; azd stops the command. */
export function stop(message) {
  console.error(message);
  process.exit(1);
}
