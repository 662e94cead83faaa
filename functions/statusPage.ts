import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';

/** The project root: this file runs as functions/statusPage.ts in the tests and as dist/functions/statusPage.js in the app. */
const PROJECT_ROOT = path.resolve(__dirname, '..', path.basename(path.resolve(__dirname, '..')) === 'dist' ? '..' : '');

/** The page, deployed with the sources (.funcignore keeps page/ in the package). */
export const STATUS_PAGE_FILE = path.join(PROJECT_ROOT, 'page', 'status.html');

/**
 * What the page may do: its own inline script and style, named by hash so that nothing injected
 * into it could run; calls to its own origin only (the API); nothing framed, no form posted
 * elsewhere, no base URL changed. The hashes are taken from the file as served, so the policy
 * cannot fall behind an edit of the page.
 */
export function statusPageCsp(html: string): string {
  const hashes = (tag: 'script' | 'style') =>
    [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => `'sha256-${createHash('sha256').update(m[1], 'utf8').digest('base64')}'`);
  return [
    "default-src 'none'",
    `script-src ${hashes('script').join(' ') || "'none'"}`,
    `style-src ${hashes('style').join(' ') || "'none'"}`,
    "connect-src 'self'",
    // The empty icon (a data: URL) keeps the browser from asking the API for /favicon.ico.
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

let page: { html: string; headers: Record<string, string> } | undefined;

function loadPage(): NonNullable<typeof page> {
  const html = readFileSync(STATUS_PAGE_FILE, 'utf8');
  return {
    html,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': statusPageCsp(html),
      // Every answer reflects the runs as they are now; and the URL carries the function key.
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
      'X-Content-Type-Options': 'nosniff',
    },
  };
}

/** The operators' status page: runs, held runs, sync and reconcile, user lookup, all through the API with the key it was opened with. */
export async function statusPage(_request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  try {
    page ??= loadPage();
  } catch (error) {
    context.error(`the status page cannot be read from ${STATUS_PAGE_FILE}: ${error instanceof Error ? error.message : String(error)}`);
    return { status: 500, jsonBody: { error: 'the status page is missing from the deployment (page/status.html)' } };
  }
  return { status: 200, headers: { ...page.headers }, body: page.html };
}

export const statusPageOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'ui',
  handler: statusPage,
};

app.http('statusPage', statusPageOptions);
