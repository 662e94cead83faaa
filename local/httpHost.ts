import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpRequest, type HttpHandler } from '@azure/functions';
import { syncHttp } from '../functions/syncHttp';
import { reconcileHttp } from '../functions/reconcileHttp';
import { runStatus } from '../functions/runStatus';
import { userLookup } from '../functions/userLookup';
import { runResume } from '../functions/runResume';
import { runList } from '../functions/runList';
import { runRejects } from '../functions/runRejects';
import { runPreview } from '../functions/runPreview';
import { runApprove } from '../functions/runApprove';
import { runCancel } from '../functions/runCancel';
import { statusPage } from '../functions/statusPage';
import { silentLogger, type Logger } from '../shared/log';
import { functionContext } from './stack';

interface Route {
  method: string;
  pattern: RegExp;
  name: string;
  handler: HttpHandler;
}

/** The HTTP functions as the host routes them (`/api/<route>`), all `authLevel: 'function'`. */
const routes: Route[] = [
  { method: 'POST', pattern: /^\/api\/sync$/, name: 'syncHttp', handler: syncHttp },
  { method: 'POST', pattern: /^\/api\/reconcile$/, name: 'reconcileHttp', handler: reconcileHttp },
  { method: 'GET', pattern: /^\/api\/runs$/, name: 'runList', handler: runList },
  { method: 'GET', pattern: /^\/api\/runs\/(?<id>[^/]+)$/, name: 'runStatus', handler: runStatus },
  { method: 'GET', pattern: /^\/api\/runs\/(?<id>[^/]+)\/rejects$/, name: 'runRejects', handler: runRejects },
  { method: 'GET', pattern: /^\/api\/runs\/(?<id>[^/]+)\/preview$/, name: 'runPreview', handler: runPreview },
  { method: 'POST', pattern: /^\/api\/runs\/(?<id>[^/]+)\/resume$/, name: 'runResume', handler: runResume },
  { method: 'POST', pattern: /^\/api\/runs\/(?<id>[^/]+)\/approve$/, name: 'runApprove', handler: runApprove },
  { method: 'POST', pattern: /^\/api\/runs\/(?<id>[^/]+)\/cancel$/, name: 'runCancel', handler: runCancel },
  { method: 'GET', pattern: /^\/api\/users\/(?<id>[^/]+)$/, name: 'userLookup', handler: userLookup },
  // The status page: its own route as on Azure, and the host's root, where a person looks first.
  { method: 'GET', pattern: /^\/(api\/ui)?$/, name: 'statusPage', handler: statusPage },
];

export interface LocalHttpHostOptions {
  /** 0 (the default) for a free port. */
  port?: number;
  /** Where the functions' `context.log` lines go; dropped when absent. */
  log?: Logger;
  /**
   * Routes of the local stack itself (after the key check), tried when no function's route
   * matches: answers whether it took the request.
   */
  localRoutes?: (method: string, url: URL, response: http.ServerResponse) => Promise<boolean>;
}

/**
 * What the Functions host does for the HTTP functions, without the host: routing and the function
 * key check (`x-functions-key` header or `?code=`), then the real handler.
 */
export class LocalHttpHost {
  private readonly server: http.Server;
  url = '';

  constructor(
    private readonly functionKey: string,
    private readonly options: LocalHttpHostOptions = {},
  ) {
    this.server = http.createServer((request, response) => void this.handle(request, response));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const route = routes.find((r) => r.method === request.method && r.pattern.test(url.pathname));
    const local = this.options.localRoutes;
    if (!route && !local) return send(response, 404, { error: 'no such function' });
    const key = request.headers['x-functions-key'] ?? url.searchParams.get('code');
    if (key !== this.functionKey) return send(response, 401, { error: 'a function key is required (x-functions-key header or ?code=)' });
    if (!route) {
      try {
        if (await local!(request.method ?? 'GET', url, response)) return;
      } catch (error) {
        return send(response, 500, { error: error instanceof Error ? error.message : String(error) });
      }
      return send(response, 404, { error: 'no such function' });
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string') headers[name] = value;
    try {
      const result = await route.handler(
        new HttpRequest({
          method: route.method,
          url: url.toString(),
          headers,
          // The host hands route parameters over decoded (an e-mail's @ arrives as %40).
          params: Object.fromEntries(Object.entries(route.pattern.exec(url.pathname)?.groups ?? {}).map(([name, value]) => [name, decodeURIComponent(value)])),
          body: { string: Buffer.concat(chunks).toString('utf8') },
        }),
        functionContext(route.name, this.options.log ?? silentLogger),
      );
      const init = result as { status?: number; jsonBody?: unknown; body?: unknown; headers?: Record<string, string> };
      if (init.body !== undefined && init.jsonBody === undefined) return await stream(response, init.status ?? 200, init.body, init.headers);
      send(response, init.status ?? 200, init.jsonBody ?? null, init.headers);
    } catch (error) {
      send(response, 500, { error: error instanceof Error ? error.message : String(error) });
    }
  }
}

/** A body the handler streams (text, bytes, or an async iterable of chunks), passed on as it comes. */
async function stream(response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): Promise<void> {
  response.writeHead(status, headers);
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    response.end(body);
    return;
  }
  for await (const chunk of body as AsyncIterable<Uint8Array>) {
    if (!response.write(chunk)) await new Promise((resolve) => response.once('drain', resolve));
  }
  response.end();
}

export function send(response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  response.end(text);
}
