export interface RateLimitObservation {
  limit?: number;
  remaining?: number;
  /** Epoch ms at which the request may go again: Retry-After, else the window's reset; never before now. */
  resetAtMs?: number;
  /**
   * Epoch ms at which the window this answer counted against resets, as `X-RateLimit-Reset` said,
   * even when already past: it tells which window `remaining` belongs to, so a late answer of an
   * ended window is not taken for the current one. Absent, `resetAtMs` stands for it.
   */
  windowResetAtMs?: number;
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
 * The furthest ahead a server's reset is believed: Braze's hourly limits reset within the hour.
 * Anything further (an epoch in the wrong unit, a garbled header) is clamped, so it can never turn
 * into a timer beyond 2^31 ms (which Node fires at once: a busy loop) or a wait of days.
 */
export const MAX_RESET_AHEAD_MS = 65 * 60_000;

/** `X-RateLimit-Reset`: epoch seconds (documented), epoch milliseconds (seen from proxies), or seconds remaining. */
function resetAt(value: number, nowMs: number): number {
  if (value >= 1e12) return value;
  if (value >= 1e9) return value * 1000;
  return nowMs + value * 1000;
}

/** `Retry-After`: seconds, or an HTTP date. */
function retryAfterAt(raw: string | undefined, nowMs: number): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return nowMs + seconds * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : date;
}

/**
 * Reads Braze's `X-RateLimit-*` headers. `X-Ratelimit-Retry-After` and `Retry-After` win over the
 * reset as the time to retry, clamped to between now and MAX_RESET_AHEAD_MS from now; the window's
 * own reset is kept apart and only clamped ahead, since a reset in the past is what marks a late
 * answer of an ended window.
 */
export function readRateLimit(headers: HeaderBag, nowMs: number): RateLimitObservation {
  const observation: RateLimitObservation = {
    limit: number(headers, 'x-ratelimit-limit'),
    remaining: number(headers, 'x-ratelimit-remaining'),
  };
  const reset = number(headers, 'x-ratelimit-reset');
  const windowResetAtMs = reset !== undefined && reset >= 0 ? Math.min(nowMs + MAX_RESET_AHEAD_MS, resetAt(reset, nowMs)) : undefined;
  if (windowResetAtMs !== undefined) observation.windowResetAtMs = windowResetAtMs;
  const at = retryAfterAt(header(headers, 'x-ratelimit-retry-after') ?? header(headers, 'retry-after'), nowMs) ?? windowResetAtMs;
  if (at !== undefined) observation.resetAtMs = Math.min(nowMs + MAX_RESET_AHEAD_MS, Math.max(nowMs, at));
  return observation;
}
