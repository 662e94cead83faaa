import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { z } from 'zod';
import { formatIssues } from '../shared/config/settings';
import { InvalidInputError } from '../shared/errors';
import { requestSync } from '../shared/sync/startSync';
import { connector } from './connector';

export const syncRequestBodySchema = z.strictObject({
  destination: z.string().min(1).optional(),
  segments: z.array(z.string().min(1)).min(1).optional(),
  force: z.boolean().optional(),
  /** Preview: read, map and diff, send nothing; the report is at GET /api/runs/{id}/preview. */
  dryRun: z.boolean().optional(),
});

export async function syncHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const text = await request.text();
  let body: unknown = {};
  if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch {
      return { status: 400, jsonBody: { error: 'body is not valid JSON' } };
    }
  }
  const parsed = syncRequestBodySchema.safeParse(body);
  if (!parsed.success) return { status: 400, jsonBody: { error: formatIssues('request body', parsed.error) } };
  try {
    const outcome = await requestSync(connector(), { trigger: 'http', ...parsed.data });
    context.log(`sync requested over HTTP: ${outcome.runs.length} runs, ${outcome.problems.length} problems`);
    if (outcome.runs.length === 0)
      return { status: outcome.problems.every((p) => p.retryable) ? 409 : 422, jsonBody: { runs: [], problems: outcome.problems } };
    return {
      status: 202,
      jsonBody: { runId: outcome.runs[0].runId, runs: outcome.runs, problems: outcome.problems },
      headers: { Location: `/api/runs/${outcome.runs[0].runId}` },
    };
  } catch (error) {
    if (error instanceof InvalidInputError) return { status: 400, jsonBody: { error: error.message } };
    throw error;
  }
}

/** Function-key auth: the host refuses calls without `x-functions-key` or `?code=`. */
export const syncHttpOptions: HttpFunctionOptions = {
  methods: ['POST'],
  authLevel: 'function',
  route: 'sync',
  handler: syncHttp,
};

app.http('syncHttp', syncHttpOptions);
