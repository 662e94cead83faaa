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

/** A transient failure (429, 408, 5xx, timeout, socket error) that outlived the retries of one invocation. */
export class BrazeRetryableError extends Error {
  override readonly name = 'BrazeRetryableError';
  readonly retryable = true;
  constructor(
    message: string,
    /** 0 for a timeout or socket error that got no HTTP answer. */
    readonly status: number,
    /** When the server said it can take requests again, if it said. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * The closed set. A request Braze refuses outright (400 and the like) is not an error of the run:
 * its rows become rejects with Braze's message (see deliverBatch).
 */
export type ConnectorError = InvalidInputError | ExportNotReadyError | BrazeAuthError | BrazeRetryableError;

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
