/** Azure SDK errors carry the HTTP status; decisions look at it, never at the message text. */
export function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

export function isNotFound(error: unknown): boolean {
  return statusOf(error) === 404;
}

/** Lost an optimistic-concurrency race: the entity or blob exists already (409) or changed since it was read (412). */
export function isConflict(error: unknown): boolean {
  const status = statusOf(error);
  return status === 409 || status === 412;
}
