import { z } from 'zod';

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
 * The Braze endpoint itself is wrong: its host does not resolve (ENOTFOUND) or nothing listens at
 * its port (ECONNREFUSED), and the retries of one invocation ended on it. Stop sending, like bad
 * credentials: handing the batch back would only repeat the same failure until it is failed.
 */
export class BrazeUnreachableError extends Error {
  override readonly name = 'BrazeUnreachableError';
  readonly retryable = false;
  constructor(
    message: string,
    readonly code: 'ENOTFOUND' | 'ECONNREFUSED',
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
export type ConnectorError = InvalidInputError | ExportNotReadyError | BrazeAuthError | BrazeRetryableError | BrazeUnreachableError | LeaseLostError;

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/**
 * A zod error as one readable message: what was checked (`plural` for "are invalid"), then each bad
 * path, why, the value it has and what is allowed. zod's own wording ("Invalid input", "received
 * NaN") says neither, so an issue in zod's words is told again from its data; a schema's own words
 * are kept. A value shows only when the schema was parsed with `reportInput: true`, and never one
 * that may be a credential (see shownValue).
 */
export function formatIssues(what: string, error: z.ZodError, options: { plural?: boolean } = {}): string {
  const lines = error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join('.') : '(root)';
    return `  - ${path}: ${describeIssue(issue)}`;
  });
  return `${what} ${options.plural ? 'are' : 'is'} invalid:\n${lines.join('\n')}`;
}

/** What zod says for an issue when the schema gives no message of its own. */
const zodDefaultMessage = z.locales.en().localeError;

function inZodWords(issue: z.core.$ZodIssue): boolean {
  const text = zodDefaultMessage(issue as unknown as z.core.$ZodRawIssue);
  return (typeof text === 'string' ? text : text?.message) === issue.message;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  // A refinement's message is whole: it names what it checked, and its input is the object around.
  if (issue.code === 'custom') return issue.message;
  // The value, when it is one a line can show: not a list or an object (a wrong type says which it is).
  const received = issue.input !== null && typeof issue.input === 'object' ? '' : shownValue(issue.path, issue.input);
  if (!inZodWords(issue)) return issue.message + received;
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined
        ? `is required (${typeName(issue.expected)})`
        : `must be ${typeName(issue.expected)}${shownValue(issue.path, issue.input)}`;
    case 'invalid_value':
      return `must be ${oneOf(issue.values.map(literal))}${received}`;
    case 'invalid_union': {
      if (issue.discriminator !== undefined && 'options' in issue && issue.options) {
        const input = issue.input as Record<string, unknown> | undefined;
        return `must be ${oneOf(issue.options.map(literal))}${shownValue(issue.path, input?.[issue.discriminator])}`;
      }
      // Each option refused the value as a whole (null | false): together they say what is allowed.
      const alternatives = issue.errors.map((issues) => (issues.length === 1 && issues[0].path.length === 0 ? allowedBy(issues[0]) : undefined));
      if (alternatives.length === 0 || alternatives.some((a) => a === undefined)) return issue.message + received;
      return `must be ${oneOf(alternatives as string[])}${received}`;
    }
    case 'too_small':
    case 'too_big':
      return sizeLimit(issue, received);
    case 'invalid_format':
      if (issue.format === 'regex' && issue.pattern) return `must match ${issue.pattern}${received}`;
      return `must be ${issue.format === 'url' ? 'a URL' : typeName(issue.format)}${received}`;
    case 'not_multiple_of':
      return `must be a multiple of ${issue.divisor}${received}`;
    case 'invalid_key':
      return `is not a valid key: ${issue.issues.map(describeIssue).join('; ')}`;
    default:
      return issue.message + received;
  }
}

/** What one option of a union takes, when it refused the value outright. */
function allowedBy(issue: z.core.$ZodIssue): string | undefined {
  if (issue.code === 'invalid_type') return typeName(issue.expected);
  if (issue.code === 'invalid_value') return oneOf(issue.values.map(literal));
  return undefined;
}

function sizeLimit(issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig, received: string): string {
  const small = issue.code === 'too_small';
  const limit = small ? issue.minimum : issue.maximum;
  const bound = issue.exact ? 'exactly' : issue.inclusive !== false ? (small ? 'at least' : 'at most') : small ? 'more than' : 'less than';
  switch (issue.origin) {
    case 'number':
    case 'int':
    case 'bigint':
      return `must be ${bound} ${limit}${received}`;
    case 'string':
      if (small && Number(limit) === 1 && !issue.exact) return 'must not be empty';
      return `must be ${bound} ${limit} characters long${received}`;
    case 'array':
    case 'set':
      return `${small ? 'needs' : 'takes'} ${bound} ${limit} ${Number(limit) === 1 ? 'item' : 'items'}`;
    default:
      return issue.message + received;
  }
}

function typeName(expected: string): string {
  const names: Record<string, string> = { boolean: 'true or false', null: 'null', int: 'a whole number', tuple: 'an array', record: 'an object' };
  return names[expected] ?? `${/^[aeiou]/i.test(expected) ? 'an' : 'a'} ${expected}`;
}

function literal(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function oneOf(allowed: string[]): string {
  if (allowed.length <= 2) return allowed.join(' or ');
  return `one of ${allowed.join(', ')}`;
}

/** A name that says its value is a credential: a key, a secret, a connection string, a token, a webhook. */
const SECRET_NAME = /key|secret|connection|password|token|credential|signature|webhook|^AzureWebJobsStorage$|^ExportStorage$/i;
/** A value that carries one whatever its name: a connection string's key, a shared access signature, a token in a query. */
const SECRET_VALUE = /(accountkey|sharedaccesssignature|sig|token|key|secret|password|code)=/i;

/**
 * The value an issue is about, as the message shows it: never one that may be a credential — under
 * a name that says so, holding a `key=`, or a URL with more than a scheme and host (webhook URLs
 * carry their token in the path, signed URLs in the query).
 */
function shownValue(path: PropertyKey[], value: unknown): string {
  if (value === undefined) return '';
  if (path.some((key) => typeof key === 'string' && SECRET_NAME.test(key))) return ' (value not shown)';
  if (typeof value === 'string') {
    if (SECRET_VALUE.test(value) || urlBeyondHost(value)) return ' (value not shown)';
    return ` (received ${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)})`;
  }
  if (Array.isArray(value)) return value.length ? ' (received an array)' : ' (received [])';
  if (typeof value === 'object' && value !== null) return ' (received an object)';
  return ` (received ${String(value)})`;
}

function urlBeyondHost(value: string): boolean {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value);
  if (!scheme) return false;
  return /[@?#]|\/./.test(value.slice(scheme[0].length));
}
