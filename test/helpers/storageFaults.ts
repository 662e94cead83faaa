import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { FaultDeck } from '../../local/faultDeck';

export interface StorageFaults {
  /** Share of requests answered 503 ServerBusy without reaching storage. */
  serverBusy: number;
  /** Share answered 500 without reaching storage. */
  internalError: number;
  /** Share whose connection is dropped before the request reaches storage. */
  resetBefore: number;
  /** Share that storage carries out, whose answer is then lost with the connection. */
  resetAfter: number;
}

export interface FaultCounts {
  requests: number;
  serverBusy: number;
  internalError: number;
  resetBefore: number;
  resetAfter: number;
}

/**
 * A proxy in front of one Azurite service that misbehaves like Azure Storage under load: 503
 * ServerBusy, 500, and dropped connections before and after the work is done, dealt from a seeded
 * deck (every kind met in every few requests).
 */
export class FaultyStorageProxy {
  readonly counts: FaultCounts = { requests: 0, serverBusy: 0, internalError: 0, resetBefore: 0, resetAfter: 0 };
  faults: StorageFaults;
  /** Requests this matches are held without an answer: a worker stuck there can be killed at a known point. */
  hold?: (method: string, url: string) => boolean;
  /** How many requests have been held so far. */
  held = 0;
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly deck: FaultDeck<keyof StorageFaults>;
  port = 0;

  constructor(
    private readonly targetPort: number,
    private readonly service: 'blob' | 'queue' | 'table',
    faults: StorageFaults,
    seed: number,
  ) {
    this.faults = faults;
    this.deck = new FaultDeck(seed);
    this.server = http.createServer((request, response) => this.handle(request, response));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    this.counts.requests += 1;
    if (this.hold?.(request.method ?? 'GET', request.url ?? '')) {
      this.held += 1;
      request.resume();
      return;
    }
    const fault = this.deck.draw(this.faults);
    if (fault === 'resetBefore') {
      this.counts.resetBefore += 1;
      request.socket.destroy();
      return;
    }
    if (fault === 'serverBusy') {
      this.counts.serverBusy += 1;
      request.resume();
      request.on('end', () => this.fail(response, 503, 'ServerBusy', 'The server is busy.'));
      return;
    }
    if (fault === 'internalError') {
      this.counts.internalError += 1;
      request.resume();
      request.on('end', () => this.fail(response, 500, 'InternalError', 'The server encountered an internal error.'));
      return;
    }
    const dropAnswer = fault === 'resetAfter';
    const upstream = http.request(
      {
        host: '127.0.0.1',
        port: this.targetPort,
        method: request.method,
        path: request.url,
        headers: { ...request.headers, host: `127.0.0.1:${this.targetPort}` },
      },
      (answer) => {
        if (dropAnswer) {
          this.counts.resetAfter += 1;
          answer.resume();
          answer.on('end', () => request.socket.destroy());
          return;
        }
        response.writeHead(answer.statusCode ?? 500, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.on('error', () => request.socket.destroy());
    request.pipe(upstream);
  }

  private fail(response: http.ServerResponse, status: number, code: string, message: string): void {
    if (this.service === 'table') {
      const body = JSON.stringify({ 'odata.error': { code, message: { lang: 'en-US', value: message } } });
      response.writeHead(status, { 'Content-Type': 'application/json;odata=minimalmetadata', 'x-ms-error-code': code });
      response.end(body);
      return;
    }
    const body = `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`;
    response.writeHead(status, { 'Content-Type': 'application/xml', 'x-ms-error-code': code });
    response.end(body);
  }
}

/** Proxies for Azurite's three services, and the connection string that goes through them. */
export async function faultyStorage(connectionString: string, faults: StorageFaults, seed = 11) {
  const portOf = (name: string) => Number(new RegExp(`${name}Endpoint=http://127\\.0\\.0\\.1:(\\d+)/`).exec(connectionString)![1]);
  const proxies = {
    blob: new FaultyStorageProxy(portOf('Blob'), 'blob', faults, seed),
    queue: new FaultyStorageProxy(portOf('Queue'), 'queue', faults, seed + 1),
    table: new FaultyStorageProxy(portOf('Table'), 'table', faults, seed + 2),
  };
  let proxied = connectionString;
  for (const [name, proxy] of Object.entries(proxies)) {
    const service = name[0].toUpperCase() + name.slice(1);
    proxied = proxied.replace(new RegExp(`${service}Endpoint=http://127\\.0\\.0\\.1:\\d+/`), `${service}Endpoint=http://127.0.0.1:${await proxy.start()}/`);
  }
  return {
    connectionString: proxied,
    proxies,
    setFaults(next: StorageFaults) {
      for (const proxy of Object.values(proxies)) proxy.faults = next;
    },
    stop: () => Promise.all(Object.values(proxies).map((p) => p.stop())),
  };
}
