import type { z } from 'zod';
import { formatIssues } from '../shared/errors';
import type { HeldRunOutcome } from '../shared/sync/heldRuns';
import type { SyncRequestOutcome } from '../shared/sync/startSync';

/** What an HTTP function answers, in the shape the Functions runtime takes (this core knows nothing of it). */
export interface HttpAnswer {
  status: number;
  jsonBody: unknown;
  headers?: Record<string, string>;
}

/**
 * A request's query parameters without `code`: the host checks a function key given as `?code=`
 * and hands the query on whole, so a strict query schema would refuse every such call.
 */
export function queryParams(query: URLSearchParams): Record<string, string> {
  return Object.fromEntries([...query.entries()].filter(([name]) => name !== 'code'));
}

/** A JSON request body checked against its schema (an empty body is `{}`), or the 400 that says what is wrong. */
export function parseRequestBody<T>(text: string, schema: z.ZodType<T>): { ok: true; body: T } | { ok: false; answer: HttpAnswer } {
  let json: unknown = {};
  if (text.trim()) {
    try {
      json = JSON.parse(text);
    } catch {
      return { ok: false, answer: { status: 400, jsonBody: { error: 'body is not valid JSON' } } };
    }
  }
  // Request bodies carry names, flags and counts, no customer data: a bad value is shown as sent.
  const parsed = schema.safeParse(json, { reportInput: true });
  if (!parsed.success) return { ok: false, answer: { status: 400, jsonBody: { error: formatIssues('request body', parsed.error) } } };
  return { ok: true, body: parsed.data };
}

/**
 * Runs a request started: 202 with the first run's status URL; none started, 409 when waiting can
 * help (the export is still being written) or 422 when it cannot (a bad model.json).
 */
export function startedRunsAnswer(outcome: SyncRequestOutcome): HttpAnswer {
  if (outcome.runs.length === 0) return { status: outcome.problems.every((p) => p.retryable) ? 409 : 422, jsonBody: { runs: [], problems: outcome.problems } };
  return {
    status: 202,
    jsonBody: { runId: outcome.runs[0].runId, runs: outcome.runs, problems: outcome.problems },
    headers: { Location: `/api/runs/${outcome.runs[0].runId}` },
  };
}

/** A person's decision on a held run: 404 for an unknown run, 409 with the reason when it is not held, else `done` with its status. */
export function heldRunAnswer(runId: string, outcome: HeldRunOutcome, done: 200 | 202): HttpAnswer {
  if (outcome.kind === 'notFound') return { status: 404, jsonBody: { error: `run ${runId} not found` } };
  if (outcome.kind === 'refused') return { status: 409, jsonBody: { error: outcome.reason } };
  return { status: done, jsonBody: { runId, status: outcome.status } };
}
