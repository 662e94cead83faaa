import { isIPv4 } from 'node:net';
import { InvalidInputError } from '../errors';

/** Loopback by address, not by how the name starts: `127.evil.com` is a public host. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === 'localhost' || host === '[::1]' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

/**
 * Braze's REST endpoint as users copy it from the dashboard (`rest.iad-03.braze.com`) or as a URL.
 * Plain http is allowed only for loopback, so a typo can never send the API key in clear text.
 */
export function parseBrazeEndpoint(raw: string, settingName = 'BRAZE_REST_ENDPOINT'): string {
  const trimmed = raw.trim();
  if (!trimmed) throw new InvalidInputError(`${settingName}: is empty`);
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `https://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new InvalidInputError(`${settingName}: is not a host name or URL: "${trimmed}"`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InvalidInputError(`${settingName}: must use https, got ${url.protocol}`);
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new InvalidInputError(`${settingName}: plain http is only allowed for loopback addresses, not ${url.hostname}`);
  }
  if (url.username || url.password) throw new InvalidInputError(`${settingName}: must not carry credentials`);
  if (url.search || url.hash) throw new InvalidInputError(`${settingName}: must not carry a query or fragment`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}
