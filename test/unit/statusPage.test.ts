import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { HttpRequest, InvocationContext } from '@azure/functions';
import ignore from 'ignore';
import { STATUS_PAGE_FILE, statusPage, statusPageCsp, statusPageOptions } from '../../functions/statusPage';

const root = path.resolve(__dirname, '..', '..');
const html = readFileSync(path.join(root, 'page', 'status.html'), 'utf8');
const scripts = [...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)];
const script = scripts.map((m) => m[1]).join('\n');

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

function answerPage() {
  return statusPage(
    new HttpRequest({ method: 'GET', url: 'http://localhost/api/ui?code=key' }),
    new InvocationContext({ functionName: 'statusPage', invocationId: 'test', logHandler: () => undefined }),
  );
}

describe('the status page function', () => {
  it('answers the page, not cached, under a policy that lets only its own inline script and style run', async () => {
    const answer = await answerPage();
    expect(answer.status).toBe(200);
    expect(answer.body).toBe(html);
    const headers = answer.headers as Record<string, string>;
    expect(headers['Content-Type']).toBe('text/html; charset=utf-8');
    expect(headers['Cache-Control']).toBe('no-store');
    expect(headers['Referrer-Policy']).toBe('no-referrer');
    const csp = Object.fromEntries(
      headers['Content-Security-Policy'].split(';').map((directive) => {
        const [name, ...values] = directive.trim().split(/\s+/);
        return [name, values];
      }),
    );
    expect(csp['default-src']).toEqual(["'none'"]);
    expect(csp['connect-src']).toEqual(["'self'"]);
    expect(csp['frame-ancestors']).toEqual(["'none'"]);
    expect(csp['script-src']).toEqual([sha256(scripts[0][1])]);
    expect(csp['style-src']).toEqual([sha256(/<style>([\s\S]*?)<\/style>/.exec(html)![1])]);
    expect(headers['Content-Security-Policy']).not.toMatch(/unsafe-|\*/);
    expect(STATUS_PAGE_FILE).toBe(path.join(root, 'page', 'status.html'));
  });

  it('hashes every inline script and style of a page', () => {
    const csp = statusPageCsp('<style>a{}</style><script>1</script><p></p><script>2</script>');
    expect(csp).toContain(`script-src ${sha256('1')} ${sha256('2')};`);
    expect(csp).toContain(`style-src ${sha256('a{}')};`);
    expect(statusPageCsp('<p>nothing</p>')).toContain("script-src 'none'");
  });

  it('is a GET function behind the function key, at /api/ui', () => {
    expect(statusPageOptions).toMatchObject({ methods: ['GET'], authLevel: 'function', route: 'ui' });
  });

  it('is deployed: .funcignore keeps page/ in the package', () => {
    const rules = ignore().add(readFileSync(path.join(root, '.funcignore'), 'utf8'));
    expect(rules.ignores('page/status.html')).toBe(false);
    expect(rules.ignores('page/')).toBe(false);
  });
});

describe('the status page', () => {
  it('is one file: a single inline script and style, nothing loaded from elsewhere, nothing the policy would block', () => {
    expect(scripts).toHaveLength(1);
    expect(html.match(/<style\b[^>]*>/g)).toEqual(['<style>']);
    // Attributes the policy refuses: event handlers and inline styles; and no resource from another origin.
    expect(html).not.toMatch(/\son[a-z]+\s*=/i);
    expect(html).not.toMatch(/\sstyle\s*=/i);
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/<(script|link|img|iframe)\b[^>]*\bsrc=/i);
  });

  it('never renders API text as markup', () => {
    expect(script).not.toMatch(/\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(/);
  });

  it('sends the key from its own URL with every API call, to its own origin', () => {
    expect(script).toMatch(/new URLSearchParams\(location\.search\)\.get\('code'\)/);
    expect(script).toMatch(/'x-functions-key': KEY/);
    expect(script).toMatch(/new URL\(path, location\.origin\)/);
    // One place sends requests, so no call can go without the key.
    expect(script.match(/\bfetch\(/g)).toHaveLength(1);
  });

  it('calls only routes the functions register, with their methods', () => {
    // The routes as the functions declare them (route and methods of each app.http options object).
    const registered: { methods: string[]; route: string; file: string }[] = [];
    for (const file of readdirSync(path.join(root, 'functions')).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(path.join(root, 'functions', file), 'utf8');
      for (const m of text.matchAll(/methods:\s*\[([^\]]*)\][^}]*?route:\s*'([^']*)'/g))
        registered.push({ methods: [...m[1].matchAll(/'([A-Z]+)'/g)].map((x) => x[1]), route: m[2], file });
    }
    expect(registered.map((r) => r.route)).toEqual(expect.arrayContaining(['runs', 'runs/{id}', 'sync', 'ui']));
    // The host's route prefix is the default, api.
    const hostJson = JSON.parse(readFileSync(path.join(root, 'host.json'), 'utf8')) as { extensions?: { http?: { routePrefix?: string } } };
    expect(hostJson.extensions?.http?.routePrefix ?? 'api').toBe('api');

    const calls = [...script.matchAll(/\bapi\(\s*'([A-Z]+)'\s*,\s*(['`])(\/api\/[^'`]*)\2/g)].map((m) => ({ method: m[1], path: m[3] }));
    // Every API path written in the page is one of those calls: none escapes the check.
    expect(calls).toHaveLength(script.match(/['`]\/api\//g)!.length);
    expect(calls.length).toBeGreaterThanOrEqual(10);

    const segments = (route: string) => route.split('/').map((s) => (/^\{[^}]+\}$/.test(s) || s.includes('${') ? '{}' : s));
    const unmatched = calls.filter(({ method, path: apiPath }) => {
      const wanted = segments(apiPath.replace(/^\/api\//, '').split('?')[0]);
      return !registered.some(
        (r) =>
          r.methods.includes(method) &&
          segments(r.route).length === wanted.length &&
          // A route parameter takes any segment, as the host routes.
          segments(r.route).every((s, i) => s === '{}' || s === wanted[i]),
      );
    });
    expect(unmatched).toEqual([]);
    // And what the operator needs is there: the history, a run, its reports, the decisions, the triggers, the lookup.
    expect(new Set(calls.map((c) => `${c.method} ${segments(c.path.split('?')[0]).join('/')}`))).toEqual(
      new Set([
        'GET /api/runs',
        'GET /api/runs/{}',
        'GET /api/runs/{}/rejects',
        'GET /api/runs/{}/preview',
        'POST /api/runs/{}/approve',
        'POST /api/runs/{}/cancel',
        'POST /api/runs/{}/resume',
        'POST /api/sync',
        'POST /api/reconcile',
        'GET /api/users/{}',
      ]),
    );
  });
});
