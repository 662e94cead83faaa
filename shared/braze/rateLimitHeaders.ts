export interface RateLimitObservation {
  limit?: number;
  remaining?: number;
  /** Epoch ms at which the window resets. */
  resetAtMs?: number;
}

type HeaderBag = Record<string, unknown>;

/** Header names are case-insensitive (and lowercase over HTTP/2). */
function header(headers: HeaderBag, name: string): string | undefined {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  if (Array.isArray(value)) return value[0] !== undefined ? String(value[0]) : undefined;
  return value === undefined || value === null ? undefined : String(value);
}

function number(headers: HeaderBag, name: string): number | undefined {
  const raw = header(headers, name);
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Reads Braze's `X-RateLimit-*` headers. Reset is documented as epoch seconds, and for newer
 * contracts as seconds remaining; a value below 10^9 cannot be an epoch in this century, so it is
 * read as a delay. `X-Ratelimit-Retry-After` (seconds) and `Retry-After` win when present.
 */
export function readRateLimit(headers: HeaderBag, nowMs: number): RateLimitObservation {
  const observation: RateLimitObservation = {
    limit: number(headers, 'x-ratelimit-limit'),
    remaining: number(headers, 'x-ratelimit-remaining'),
  };
  const reset = number(headers, 'x-ratelimit-reset');
  if (reset !== undefined) observation.resetAtMs = reset >= 1e9 ? reset * 1000 : nowMs + reset * 1000;
  const retryAfter = number(headers, 'x-ratelimit-retry-after') ?? number(headers, 'retry-after');
  if (retryAfter !== undefined) observation.resetAtMs = nowMs + retryAfter * 1000;
  return observation;
}
