import { isIPv4 } from 'node:net';
import { InvalidInputError } from '../errors';

/** Loopback by address, not by how the name starts: `127.evil.com` is a public host. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === 'localhost' || host === '[::1]' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

/**
 * Braze's REST endpoint as users copy it from the dashboard (`rest.iad-03.braze.com`) or as a URL,
 * as a URL without a trailing slash; or why it is not one. Plain http is allowed only for loopback,
 * so a typo can never send the API key in clear text. A problem never repeats credentials or a
 * query the value carries.
 */
export function checkBrazeEndpoint(raw: string): { url: string } | { problem: string } {
  const trimmed = raw.trim();
  if (!trimmed) return { problem: 'is empty' };
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `https://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    // Shown as written unless it may hold a password or a token (`user:pw@`, a query).
    return { problem: /[@?#]/.test(trimmed) ? 'is not a host name or URL' : `is not a host name or URL: "${trimmed}"` };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { problem: `must use https, got ${url.protocol}` };
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return { problem: `plain http is only allowed for loopback addresses, not ${url.hostname}` };
  }
  if (url.username || url.password) return { problem: 'must not carry credentials' };
  if (url.search || url.hash) return { problem: 'must not carry a query or fragment' };
  return { url: `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}` };
}

/** checkBrazeEndpoint for one setting: its URL, or an InvalidInputError naming the setting. */
export function parseBrazeEndpoint(raw: string, settingName = 'BRAZE_REST_ENDPOINT'): string {
  const checked = checkBrazeEndpoint(raw);
  if ('problem' in checked) throw new InvalidInputError(`${settingName}: ${checked.problem}`);
  return checked.url;
}
