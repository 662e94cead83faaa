import type { z } from 'zod';

/**
 * The closed set of failures the connector raises. The retry rule lives in the type: callers
 * decide by `instanceof` and `retryable`, never by reading a message.
 */

/** Input we were given is wrong (config, model.json, CSV, a queue message, an HTTP body). Retrying cannot help. */
export class InvalidInputError extends Error {
  override readonly name: string = 'InvalidInputError';
  readonly retryable = false;
}

/**
 * A queue message that cannot be decoded. Whatever could still be read of it (which run, which
 * batch, how many profiles) comes along, so the run can count it as failed instead of waiting.
 */
export class UnreadableMessageError extends InvalidInputError {
  override readonly name = 'UnreadableMessageError';
  constructor(
    message: string,
    readonly salvage: { runId?: string; batchId?: string; profiles?: number; rows?: number } = {},
  ) {
    super(message);
  }
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
    /** When (epoch ms) the server said it can take requests again, if it said. */
    readonly retryAtMs?: number,
  ) {
    super(message);
  }
}

/**
 * A run's enqueuer or finalizer lost its lease (another worker took the run over, or the lease ran
 * out while storage was unreachable). It stops at once; the message is retried and whoever holds
 * the lease by then carries on.
 */
export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
  readonly retryable = true;
}

/**
 * The closed set. A request Braze refuses outright (400 and the like) is not an error of the run:
 * its rows become rejects with Braze's message (see sendBatch).
 */
export type ConnectorError = InvalidInputError | ExportNotReadyError | BrazeAuthError | BrazeRetryableError | LeaseLostError;

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/** A zod error as one readable message: what was checked, then each bad path and why. */
export function formatIssues(what: string, error: z.ZodError): string {
  const lines = error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.join('.') : '(root)';
    return `  - ${path}: ${issue.message}`;
  });
  return `${what} is invalid:\n${lines.join('\n')}`;
}
