import { BrazeServer } from './brazeServer';

/**
 * The Braze-compatible server as its own process (for the benchmark: its CPU and memory are then
 * measured apart from the connector's). Prints its URL on the first line.
 */
async function main(): Promise<void> {
  const server = new BrazeServer({
    apiKey: process.env.BRAZE_API_KEY ?? 'local-key',
    rateLimit: Number(process.env.BRAZE_RATE_LIMIT ?? '3000'),
    rateWindowMs: Number(process.env.BRAZE_RATE_WINDOW_MS ?? '3000'),
    burstLimit: process.env.BRAZE_BURST_LIMIT ? Number(process.env.BRAZE_BURST_LIMIT) : undefined,
    latencyMs: Number(process.env.BRAZE_LATENCY_MS ?? '0'),
  });
  const url = await server.start(Number(process.env.PORT ?? '0'));
  console.log(url);
  process.on('SIGTERM', () => void server.stop().then(() => process.exit(0)));
}

void main();
