/**
 * The closed set of failures the connector raises. The retry rule lives in the type, so callers
 * decide by `instanceof`, never by parsing messages.
 */

/** Input we were given is wrong (config, model.json, HTTP body). Retrying cannot help. */
export class InvalidInputError extends Error {
  override readonly name = 'InvalidInputError';
  readonly retryable = false;
}

/** The export is not (yet) in a state we can read: a partition listed but missing, a refresh still being written. */
export class ExportNotReadyError extends Error {
  override readonly name = 'ExportNotReadyError';
  readonly retryable = true;
}

/** Braze refused our credentials (401) or permissions (403). Stop sending; retrying burns the queue. */
export class BrazeAuthError extends Error {
  override readonly name = 'BrazeAuthError';
  readonly retryable = false;
  constructor(
    message: string,
    readonly status: 401 | 403,
  ) {
    super(message);
  }
}

/** Braze refused the request itself (4xx other than auth/429). The rows go to rejects. */
export class BrazeRequestRejectedError extends Error {
  override readonly name = 'BrazeRequestRejectedError';
  readonly retryable = false;
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

type RetryableStatus = 408 | 429 | 500 | 502 | 503 | 504 | 0;

/** A transient failure (429, 408, 5xx, timeout, socket error) that outlived the retries of one invocation. */
export class BrazeRetryableError extends Error {
  override readonly name = 'BrazeRetryableError';
  readonly retryable = true;
  constructor(
    message: string,
    /** 0 for a timeout or socket error that got no HTTP answer. */
    readonly status: RetryableStatus | number,
    /** When the server said it can take requests again, if it said. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export type ConnectorError = InvalidInputError | ExportNotReadyError | BrazeAuthError | BrazeRequestRejectedError | BrazeRetryableError;

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
